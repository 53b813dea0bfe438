"""A worker process for the exactly-once test (run as a script, not collected by pytest).

    python tick_racer.py setup <workdir>
    python tick_racer.py race <workdir> <index> <rounds>

`setup` migrates the metadata database named by the SOURCEKEEPER_* environment and creates one
SQLite source with a per-minute schedule; `race` runs the tick's schedules step once per round,
all racers released at the same instant through a file barrier, and records what it claimed.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.002)


def setup(work: Path) -> None:
    from sourcekeeper import bootstrap
    from sourcekeeper.auth import service as auth_service
    from sourcekeeper.backups import keys
    from sourcekeeper.backups import schedules as schedules_service
    from sourcekeeper.backups.schedule_schemas import BackupScheduleCreate
    from sourcekeeper.core.config import get_settings
    from sourcekeeper.core.db import session_scope
    from sourcekeeper.datasources import service as datasources_service
    from sourcekeeper.datasources.schemas import DataSourceCreate

    bootstrap.prepare(run_migrations=True)
    path = get_settings().allowed_sqlite_dirs[0] / "race.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    with session_scope() as db:
        keys.ensure_identity(db)
        admin = auth_service.find_user(db, "admin")
        assert admin is not None
        ds = datasources_service.create(
            db,
            data=DataSourceCreate(name="race", source_type="sqlite", database_name=str(path)),
            actor=admin,
        )
        schedule = schedules_service.create(
            db, data_source=ds, data=BackupScheduleCreate(cron_expression="* * * * *"), actor="test"
        )
        result = {"schedule_id": schedule.id, "data_source_id": ds.id}
    (work / "setup.json").write_text(json.dumps(result))


def race(work: Path, index: int, rounds: int) -> None:
    from sourcekeeper import tasks  # noqa: F401  - what a worker process imports
    from sourcekeeper.backups import schedules as schedules_service
    from sourcekeeper.core.db import get_engine, session_scope, utcnow

    with get_engine().connect():  # open the pool before the barrier, as a running worker has
        pass
    for r in range(rounds):
        (work / f"ready-{r}-{index}").touch()
        wait_for(work / f"go-{r}")
        with session_scope() as db:
            claimed = schedules_service.fire_due(db, now=utcnow())
        partial = work / f"result-{r}-{index}.part"
        partial.write_text(json.dumps(claimed))
        partial.rename(work / f"result-{r}-{index}.json")  # appears complete or not at all


if __name__ == "__main__":
    mode, workdir = sys.argv[1], Path(sys.argv[2])
    if mode == "setup":
        setup(workdir)
    else:
        race(workdir, int(sys.argv[3]), int(sys.argv[4]))
