"""Several worker processes ticking at the same instant fire a due schedule exactly once,
with the metadata database on SQLite (embedded mode) and on PostgreSQL (scaled out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from servers_plugin import DbServer
from sqlalchemy import text, update

from sourcekeeper.backups.models import Backup, BackupSchedule
from sourcekeeper.core.db import make_engine, utcnow

RACER = Path(__file__).with_name("tick_racer.py")
PROCESSES = 3
ROUNDS = 3


def _env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCEKEEPER_")}
    env["SOURCEKEEPER_DATA_DIR"] = str(data_dir)
    env["SOURCEKEEPER_ADMIN_PASSWORD"] = "race-admin-password"
    env["SOURCEKEEPER_LOG_LEVEL"] = "WARNING"
    if database_url:
        env["SOURCEKEEPER_DATABASE_URL"] = database_url
    return env


def _wait_files(paths: list[Path], procs: list[subprocess.Popen[str]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        dead = [p for p in procs if p.poll() not in (None, 0)]
        if dead:
            raise AssertionError(f"a racer died: {dead[0].communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {paths}"
        time.sleep(0.01)


def run_race(tmp_path: Path, database_url: str | None) -> None:
    env = _env(tmp_path / "data", database_url)
    setup = subprocess.run(
        [sys.executable, str(RACER), "setup", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr[-3000:]
    ids = json.loads((tmp_path / "setup.json").read_text())
    url = database_url or f"sqlite:///{tmp_path / 'data' / 'sourcekeeper.db'}"
    engine = make_engine(url)
    procs = [
        subprocess.Popen(
            [sys.executable, str(RACER), "race", str(tmp_path), str(i), str(ROUNDS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        for r in range(ROUNDS):
            with engine.begin() as conn:
                # the previous run finished, and the schedule is due again (typed statements:
                # the timestamp must be stored exactly as the service stores it)
                conn.execute(
                    update(Backup)
                    .where(Backup.schedule_id == ids["schedule_id"])
                    .values(status="completed")
                )
                conn.execute(
                    update(BackupSchedule)
                    .where(BackupSchedule.id == ids["schedule_id"])
                    .values(next_run=utcnow() - timedelta(seconds=5))
                )
            _wait_files([tmp_path / f"ready-{r}-{i}" for i in range(PROCESSES)], procs, 120)
            (tmp_path / f"go-{r}").touch()
            results = [tmp_path / f"result-{r}-{i}.json" for i in range(PROCESSES)]
            _wait_files(results, procs, 120)
            claims = sorted(json.loads(p.read_text()) for p in results)
            assert claims == [[]] * (PROCESSES - 1) + [[ids["schedule_id"]]], (r, claims)
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err[-3000:]
        with engine.connect() as conn:
            backups = conn.execute(
                text(
                    "SELECT count(*) FROM backups WHERE schedule_id = :sid AND trigger = 'schedule'"
                ),
                {"sid": ids["schedule_id"]},
            ).scalar_one()
            fired = conn.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'backup_schedule.fired'")
            ).scalar_one()
            skipped = conn.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'backup_schedule.skipped'")
            ).scalar_one()
        assert (backups, fired, skipped) == (ROUNDS, ROUNDS, 0)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        engine.dispose()


def test_worker_processes_fire_once_on_sqlite(tmp_path: Path) -> None:
    run_race(tmp_path, None)


@pytest.mark.integration
def test_worker_processes_fire_once_on_postgresql(tmp_path: Path, pg_server: DbServer) -> None:
    name = f"sk_race_{tmp_path.name[-8:].lower()}".replace("-", "_")
    pg_server.create_database(name)
    try:
        run_race(tmp_path, pg_server.url(name))
    finally:
        pg_server.drop_database(name)
