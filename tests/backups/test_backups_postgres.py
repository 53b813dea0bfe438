"""PostgreSQL backups and restores against the real PostgreSQL 15 server, through the API and the
real queue: round trips to every target, a table subset, a wrong password, cancel mid-dump, and a
worker killed mid-dump."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backup_support import (
    TcpGate,
    Worker,
    artifact_path,
    backup_ok,
    base,
    export_identity,
    get_backup,
    leftovers,
    pg_fingerprint,
    processes_with,
    register_source,
    restore_ok,
    start_backup,
    start_restore,
    wait_backup,
    wait_for,
)
from fastapi.testclient import TestClient
from servers_plugin import DbServer
from support import DATA_DIR, Caller, planted_secret

SCHEMA = """
CREATE TABLE customers (
    id serial PRIMARY KEY, name text NOT NULL, balance numeric(14, 2), joined timestamptz,
    avatar bytea, prefs jsonb, tags text[], scores int[]);
CREATE TABLE orders (
    id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers (id),
    total numeric(12, 3), placed_at timestamptz NOT NULL, items json);
CREATE INDEX ix_orders_customer ON orders (customer_id);
CREATE SEQUENCE invoice_numbers START 1000 INCREMENT 5;
CREATE VIEW big_spenders AS
    SELECT c.name, sum(o.total) AS spent FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.name;
CREATE SCHEMA audit;
CREATE TABLE audit.events (id int PRIMARY KEY, what text, at timestamptz);
INSERT INTO customers (name, balance, joined, avatar, prefs, tags, scores) VALUES
    ('Zoë Ångström ✓', 1234.56, '2026-11-25 09:30:00+01', '\\x00ff10', '{"theme": "dark"}',
     ARRAY['vip', 'früh'], ARRAY[1, 2, 3]),
    ('李小龍', -0.01, '1999-12-31 23:59:59.999999+00', decode(repeat('ab', 500), 'hex'),
     '{"nested": {"list": [1, 2, {"x": null}]}}', '{}', NULL),
    ('O''Brien; DROP TABLE x', NULL, NULL, NULL, NULL, NULL, ARRAY[]::int[]);
INSERT INTO orders (customer_id, total, placed_at, items)
    SELECT 1 + g % 3, g * 1.125, timestamptz '2026-01-01 00:00:00+00' + g * interval '37 minutes',
           json_build_object('sku', 'SKU-' || g, 'qty', g % 7)
    FROM generate_series(1, 500) g;
INSERT INTO audit.events SELECT g, 'event ' || g, now() FROM generate_series(1, 50) g;
SELECT nextval('invoice_numbers'), nextval('invoice_numbers'), nextval('invoice_numbers');
"""

MUTATE = """
DELETE FROM orders WHERE id % 2 = 0;
UPDATE customers SET name = 'changed', balance = 0 WHERE id = 1;
INSERT INTO customers (name) VALUES ('late arrival');
DROP VIEW big_spenders;
DELETE FROM audit.events WHERE id > 10;
SELECT nextval('invoice_numbers') FROM generate_series(1, 10);
"""


class PgWorld:
    def __init__(self, server: DbServer, role: str, password: str) -> None:
        self.server, self.role, self.password = server, role, password

    def new_database(self, prefix: str, schema: str | None = SCHEMA) -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        self.server.execute(f"CREATE DATABASE {name} OWNER {self.role}")
        if schema:
            self.run(name, schema)
        return name

    def run(self, database: str, sql: str) -> None:
        """As the login role, so what it creates is owned by it (as in production)."""
        conn = self.server.connect(database, user=self.role, password=self.password)
        try:
            conn.execute(sql)
        finally:
            conn.close()

    def register(
        self,
        client: TestClient,
        admin: Caller,
        database: str,
        *,
        port: int | None = None,
        password: str | None = None,
    ) -> dict[str, Any]:
        return register_source(
            client,
            admin,
            name=f"pg-{database}-{secrets.token_hex(2)}",
            source_type="postgresql",
            host=self.server.host,
            port=port or self.server.port,
            database_name=database,
            username=self.role,
            password=password or self.password,
        )


@pytest.fixture(scope="module")
def pg(pg_server: DbServer) -> PgWorld:
    role = f"skapp_{secrets.token_hex(3)}"
    password = planted_secret("pglogin")
    pg_server.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    return PgWorld(pg_server, role, password)


def test_round_trip_to_every_target(
    client: TestClient, admin: Caller, worker: Worker, pg: PgWorld
) -> None:
    database = pg.new_database("sales")
    source = pg.register(client, admin, database)
    original = pg_fingerprint(pg.server, database)
    backup = backup_ok(client, admin, source["id"], {"name": "before the changes"})
    meta = backup["metadata"]
    assert meta["engine"] == "postgresql" and meta["tool"] == "pg_dump"
    assert meta["format"] == "custom" and meta["tables"] == 3
    assert meta["tool_version"].startswith("15.") and meta["server_version"].startswith("15.")
    assert backup["location"].endswith(f"/{backup['id']}.dump.zst.age")

    pg.run(database, MUTATE)
    pg.run(database, "DROP TABLE audit.events")
    assert pg_fingerprint(pg.server, database) != original

    done = restore_ok(client, admin, source["id"], backup["id"])
    assert pg_fingerprint(pg.server, database) == original
    assert done["verified"] is True
    assert done["verification"]["tables_checked"] == 3
    assert done["verification"]["row_counts_match"] is True
    safety = get_backup(client, admin, source["id"], done["safety_backup_id"])
    assert safety["trigger"] == "pre_restore" and safety["status"] == "completed"

    new_name = f"restored_{secrets.token_hex(3)}"
    done = restore_ok(
        client, admin, source["id"], backup["id"], {"target": "new", "target_database": new_name}
    )
    assert done["target_database"] == new_name and done["verified"] is True
    assert pg_fingerprint(pg.server, new_name) == original
    owner = pg.server.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", params=[new_name]
    )
    assert owner == [(pg.role,)]
    taken = client.post(
        f"{base(source['id'])}/backups/{backup['id']}/restore",
        headers=admin.headers,
        json={"target": "new", "target_database": new_name},
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "target_exists"
    bad = client.post(
        f"{base(source['id'])}/backups/{backup['id']}/restore",
        headers=admin.headers,
        json={"target": "new", "target_database": "1; drop"},
    )
    assert bad.status_code == 422

    other_db = pg.new_database("other", schema=None)
    other = pg.register(client, admin, other_db)
    done = restore_ok(
        client, admin, source["id"], backup["id"], {"target_data_source_id": other["id"]}
    )
    assert done["target"] == "source" and done["verified"] is True
    assert pg_fingerprint(pg.server, other_db) == original


@pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is not installed")
def test_restore_with_age_zstd_and_pg_restore_alone(
    client: TestClient, admin: Caller, worker: Worker, pg: PgWorld, tmp_path: Path
) -> None:
    """The commands the README gives operators who must restore without sourcekeeper."""
    database = pg.new_database("plain")
    source = pg.register(client, admin, database)
    backup = backup_ok(client, admin, source["id"])
    download = client.get(
        f"{base(source['id'])}/backups/{backup['id']}/download", headers=admin.headers
    )
    artifact = tmp_path / "backup.dump.zst.age"
    artifact.write_bytes(download.content)
    key = export_identity(tmp_path)
    target = pg.new_database("by_hand", schema=None)
    env = dict(os.environ, PGPASSWORD=pg.password)
    subprocess.run(
        f"age -d -i {key} {artifact} | zstd -dc | pg_restore --exit-on-error"
        f" -h {pg.server.host} -p {pg.server.port} -U {pg.role} -d {target}",
        shell=True,
        check=True,
        env=env,
        capture_output=True,
    )
    assert pg_fingerprint(pg.server, target) == pg_fingerprint(pg.server, database)


def test_parallel_restore_from_a_spooled_dump(
    client: TestClient,
    admin: Caller,
    worker: Worker,
    pg: PgWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Big dumps are spooled to a private file and restored with pg_restore -j."""
    from sourcekeeper.backups import restore_run

    monkeypatch.setattr(restore_run, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(restore_run, "PARALLEL_JOBS", 2)
    database = pg.new_database("parallel")
    source = pg.register(client, admin, database)
    backup = backup_ok(client, admin, source["id"])
    new_name = f"parallel_{secrets.token_hex(3)}"
    done = restore_ok(
        client, admin, source["id"], backup["id"], {"target": "new", "target_database": new_name}
    )
    assert done["verified"] is True
    assert pg_fingerprint(pg.server, new_name) == pg_fingerprint(pg.server, database)
    assert not list((DATA_DIR / "spool").glob(f"restore-{done['id']}*"))


def test_cancel_a_restore_blocked_on_a_lock(
    client: TestClient, admin: Caller, worker: Worker, pg: PgWorld
) -> None:
    """pg_restore waits for a lock another session holds; cancel kills it and the single
    transaction leaves the target as it was."""
    database = pg.new_database("locked")
    source = pg.register(client, admin, database)
    backup = backup_ok(client, admin, source["id"])
    pg.run(database, MUTATE)
    before = pg_fingerprint(pg.server, database)
    reader = pg.server.connect(database)
    reader.autocommit = False
    try:
        reader.execute("SELECT 1 FROM orders LIMIT 1")  # holds ACCESS SHARE until rollback
        restore = start_restore(client, admin, source["id"], backup["id"])
        needle = f"dbname={database}".encode()
        wait_for(
            lambda: {
                "tools": [p for p in processes_with(needle) if p in processes_with(b"pg_restore")]
            },
            lambda r: bool(r["tools"]),
            timeout=60,
            what="pg_restore waiting on the lock",
        )
        tools = [p for p in processes_with(needle) if p in processes_with(b"pg_restore")]
        url = f"{base(source['id'])}/restores/{restore['id']}"
        cancelled = client.post(f"{url}/cancel", headers=admin.headers)
        assert cancelled.status_code == 200
        assert cancelled.json()["data"]["restore"]["status"] == "cancelled"
        started = time.monotonic()
        while any(pid in processes_with(b"pg_restore") for pid in tools):
            assert time.monotonic() - started < 5, "pg_restore still runs 5 s after the cancel"
            time.sleep(0.05)
        again = client.post(f"{url}/cancel", headers=admin.headers)
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_finished"
    finally:
        reader.rollback()
        reader.close()
    assert pg_fingerprint(pg.server, database) == before
    row = client.get(url, headers=admin.headers).json()["data"]["restore"]
    assert row["status"] == "cancelled" and row["safety_backup_id"] is not None


def test_table_subset(client: TestClient, admin: Caller, worker: Worker, pg: PgWorld) -> None:
    database = pg.new_database("subset")
    source = pg.register(client, admin, database)
    backup = backup_ok(client, admin, source["id"])
    pg.run(database, MUTATE)
    done = restore_ok(client, admin, source["id"], backup["id"], {"tables": ["events"]})
    assert done["tables"] == ["audit.events"]
    assert done["verification"] == {"tables_checked": 1, "row_counts_match": True, "mismatches": []}
    assert pg.server.execute("SELECT count(*) FROM audit.events", database) == [(50,)]
    assert pg.server.execute("SELECT count(*) FROM orders", database) == [(250,)]  # untouched


def test_wrong_password_fails_clearly_without_the_secret(
    client: TestClient, admin: Caller, worker: Worker, pg: PgWorld
) -> None:
    database = pg.new_database("locked", schema=None)
    wrong = planted_secret("wrongpw")
    source = pg.register(client, admin, database, password=wrong)
    backup = start_backup(client, admin, source["id"])
    failed = wait_backup(client, admin, source["id"], backup["id"])
    assert failed["status"] == "failed"
    assert "password authentication failed" in failed["error_message"]
    assert pg.role in failed["error_message"]
    assert wrong not in failed["error_message"] and failed["location"] is None
    notes = client.get(
        f"/api/notifications?data_source_id={source['id']}", headers=admin.headers
    ).json()["notifications"]
    mine = [n for n in notes if n["category"] == "backup"]
    assert len(mine) == 1 and mine[0]["type"] == "error"
    assert mine[0]["title"].startswith(f"Backup of '{source['name']}' failed: ")
    assert "password authentication failed" in mine[0]["title"]
    assert wrong not in str(mine[0])
    status = client.get(f"{base(source['id'])}/backup-status", headers=admin.headers).json()
    assert any("most recent backup failed" in issue for issue in status["data"]["issues"])


def test_server_newer_than_pg_dump_is_a_clear_failure(
    client: TestClient,
    admin: Caller,
    worker: Worker,
    pg: PgWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sourcekeeper.datasources.connectors import postgres

    monkeypatch.setattr(postgres, "tool_version", lambda path: "14.11")
    source = pg.register(client, admin, pg.new_database("future", schema=None))
    backup = start_backup(client, admin, source["id"])
    failed = wait_backup(client, admin, source["id"], backup["id"])
    assert failed["status"] == "failed"
    assert "is newer than pg_dump 14.11" in failed["error_message"]
    assert "postgresql-client-15" in failed["error_message"]


@pytest.fixture(scope="module")
def big_database(pg: PgWorld) -> str:
    """About 45 MB of dump: far more than the gate lets through before it holds."""
    database = pg.new_database("big", schema=None)
    pg.run(
        database,
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 3)::text)"
        " || md5((g * 7)::text) || md5((g * 11)::text) AS payload"
        " FROM generate_series(1, 300000) g",
    )
    return database


@pytest.fixture
def gate(pg: PgWorld) -> Iterator[TcpGate]:
    held = TcpGate(pg.server.port, hold_after=4 * 1024 * 1024)
    try:
        yield held
    finally:
        held.close()


def _held_mid_dump(
    client: TestClient, admin: Caller, ds_id: int, backup_id: int, gate: TcpGate
) -> dict[str, Any]:
    assert gate.held.wait(60), "the dump never reached the gate's limit"
    return wait_for(
        lambda: get_backup(client, admin, ds_id, backup_id),
        lambda b: b["status"] == "in_progress" and b["bytes_processed"] > 0,
        what="a running backup with progress",
    )


def test_cancel_mid_dump_stops_pg_dump_within_seconds(
    client: TestClient,
    admin: Caller,
    worker: Worker,
    pg: PgWorld,
    big_database: str,
    gate: TcpGate,
) -> None:
    source = pg.register(client, admin, big_database, port=gate.port)
    backup = start_backup(client, admin, source["id"])
    _held_mid_dump(client, admin, source["id"], backup["id"], gate)
    dumps = processes_with(f"dbname={big_database}".encode())
    assert dumps, "pg_dump is not running"

    cancelled = client.post(
        f"{base(source['id'])}/backups/{backup['id']}/cancel", headers=admin.headers
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["backup"]["status"] == "cancelled"
    started = time.monotonic()
    while any(pid in processes_with(b"pg_dump") for pid in dumps):
        assert time.monotonic() - started < 5, "pg_dump still runs 5 s after the cancel"
        time.sleep(0.05)

    wait_for(
        lambda: {"left": leftovers(backup["id"])},
        lambda r: not r["left"],
        what="the partial artifact's removal",
    )
    key = f"backups/{source['id']}/{backup['id']}.dump.zst.age"
    assert not artifact_path(key).exists()
    assert get_backup(client, admin, source["id"], backup["id"])["status"] == "cancelled"

    gate.release()
    assert backup_ok(client, admin, source["id"])["metadata"]["tables"] == 1


def test_killed_worker_leaves_no_completed_backup_and_is_reaped(
    client: TestClient,
    admin: Caller,
    worker: Worker,
    pg: PgWorld,
    big_database: str,
    gate: TcpGate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sourcekeeper.core.config import get_settings
    from sourcekeeper.jobs.tasks import run_tick_once

    source = pg.register(client, admin, big_database, port=gate.port)
    log = DATA_DIR / f"worker-{secrets.token_hex(3)}.log"
    command = [str(Path(sys.executable).with_name("sourcekeeper")), "worker", "--threads", "1"]
    with worker.paused():
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            backup = start_backup(client, admin, source["id"])
            _held_mid_dump(client, admin, source["id"], backup["id"], gate)
            dumps = processes_with(f"dbname={big_database}".encode())
            assert dumps
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        row = get_backup(client, admin, source["id"], backup["id"])
        assert row["status"] == "in_progress" and row["location"] is None
        key = f"backups/{source['id']}/{backup['id']}.dump.zst.age"
        assert not artifact_path(key).exists()
        assert leftovers(backup["id"]), "the dead worker's partial write should still be there"

        monkeypatch.setattr(get_settings(), "heartbeat_stale_seconds", 1)
        time.sleep(1.5)
        run_tick_once()
        reaped = get_backup(client, admin, source["id"], backup["id"])
        assert reaped["status"] == "failed"
        assert "stopped responding" in reaped["error_message"]
        assert not leftovers(backup["id"]) and not artifact_path(key).exists()
        notes = client.get(
            f"/api/notifications?data_source_id={source['id']}", headers=admin.headers
        ).json()["notifications"]
        assert any(n["title"].startswith(f"Backup of '{source['name']}' failed") for n in notes)

        # The orphaned pg_dump ends once its output pipe is found closed.
        gate.release()
        wait_for(
            lambda: {"alive": [p for p in dumps if p in processes_with(b"pg_dump")]},
            lambda r: not r["alive"],
            timeout=20,
            what="the orphaned pg_dump's exit",
        )
    monkeypatch.undo()
    assert backup_ok(client, admin, source["id"])["status"] == "completed"
