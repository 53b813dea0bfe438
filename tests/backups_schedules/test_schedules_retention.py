"""Retention: the tick deletes backups past expires_at (artifact and row), never the newest
completed backup of a source, and audits each deletion."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from support import Caller

from sourcekeeper.auditlog.models import AuditEvent
from sourcekeeper.backups import retention as retention_service
from sourcekeeper.backups.models import Backup
from sourcekeeper.backups.tasks import perform_backup
from sourcekeeper.core.db import session_scope, utcnow
from sourcekeeper.storage.service import get_store


def run_backup(client: TestClient, admin: Caller, source: dict[str, Any]) -> dict[str, Any]:
    """A real backup through the API, run to its end by the task code the worker runs."""
    resp = client.post(f"/api/data-sources/{source['id']}/backups", headers=admin.headers, json={})
    assert resp.status_code == 202, resp.text
    backup_id = resp.json()["data"]["backup"]["id"]
    perform_backup(backup_id)
    done = client.get(
        f"/api/data-sources/{source['id']}/backups/{backup_id}", headers=admin.headers
    ).json()["data"]["backup"]
    assert done["status"] == "completed", done
    return dict(done)


def set_row(backup_id: int, **values: Any) -> None:
    with session_scope() as db:
        db.execute(update(Backup).where(Backup.id == backup_id).values(**values))


def existing(ids: list[int]) -> set[int]:
    with session_scope() as db:
        return set(db.scalars(select(Backup.id).where(Backup.id.in_(ids))))


def retention(*sources: dict[str, Any], now: datetime | None = None) -> list[int]:
    """Run the retention step; return what it deleted of these sources' backups (other tests'
    leftovers in the shared database may go too, which is not this test's business)."""
    with session_scope() as db:
        ours = set(
            db.scalars(
                select(Backup.id).where(Backup.data_source_id.in_([s["id"] for s in sources]))
            )
        )
        deleted = retention_service.apply_retention(db, now=now or utcnow())
    return sorted(i for i in deleted if i in ours)


def test_expired_backups_go_but_the_newest_completed_one_stays(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    old, middle, newest = (run_backup(client, admin, sqlite_source) for _ in range(3))
    store = get_store()
    assert all(store.exists(b["location"]) for b in (old, middle, newest))
    past = utcnow() - timedelta(minutes=1)
    for b in (old, middle, newest):
        set_row(b["id"], expires_at=past)
    # a failed backup, expired too, and newer than every completed one
    failed = client.post(
        f"/api/data-sources/{sqlite_source['id']}/backups", headers=admin.headers, json={}
    ).json()["data"]["backup"]
    set_row(failed["id"], status="failed", error_message="boom", expires_at=past)

    deleted = retention(sqlite_source)
    assert deleted == sorted([old["id"], middle["id"], failed["id"]])
    assert existing([old["id"], middle["id"], newest["id"], failed["id"]]) == {newest["id"]}
    assert not store.exists(old["location"]) and not store.exists(middle["location"])
    assert store.exists(newest["location"])
    # idempotent: the newest stays however often retention runs
    assert retention(sqlite_source) == []
    with session_scope() as db:
        audited = {
            e.target: e
            for e in db.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "backup.expired",
                    AuditEvent.data_source_id == sqlite_source["id"],
                )
            )
        }
        deletions = {
            e.target
            for e in db.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "backup.deleted",
                    AuditEvent.actor == "System",
                    AuditEvent.data_source_id == sqlite_source["id"],
                )
            )
        }
    assert set(audited) == {f"backup:{i}" for i in deleted} == deletions
    assert all(e.actor == "System" and e.details["reason"] == "retention" for e in audited.values())


def test_unexpired_and_running_backups_are_kept(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    kept = run_backup(client, admin, sqlite_source)
    newest = run_backup(client, admin, sqlite_source)
    set_row(kept["id"], expires_at=utcnow() + timedelta(minutes=5))
    running = client.post(
        f"/api/data-sources/{sqlite_source['id']}/backups", headers=admin.headers, json={}
    ).json()["data"]["backup"]
    set_row(running["id"], status="in_progress", expires_at=utcnow() - timedelta(days=1))
    assert retention(sqlite_source) == []
    assert existing([kept["id"], newest["id"], running["id"]]) == {
        kept["id"],
        newest["id"],
        running["id"],
    }
    set_row(running["id"], status="cancelled")
    later = utcnow() + timedelta(minutes=10)
    assert retention(sqlite_source, now=later) == sorted([kept["id"], running["id"]])


def test_each_source_keeps_its_own_newest(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any], sqlite_dir: Path
) -> None:
    path = sqlite_dir / f"other-{secrets.token_hex(4)}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    other = client.post(
        "/api/data-sources",
        headers=admin.headers,
        json={"name": path.stem, "source_type": "sqlite", "database_name": str(path)},
    ).json()["data"]["data_source"]
    a1, a2 = run_backup(client, admin, sqlite_source), run_backup(client, admin, sqlite_source)
    b1 = run_backup(client, admin, other)
    for b in (a1, a2, b1):
        set_row(b["id"], expires_at=utcnow() - timedelta(seconds=1))
    assert retention(sqlite_source, other) == [a1["id"]]
    assert existing([a1["id"], a2["id"], b1["id"]]) == {a2["id"], b1["id"]}
