"""The tick fires due schedules: once per due time, only when enabled, noting missed runs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from support import Caller

from sourcekeeper.auditlog.models import AuditEvent
from sourcekeeper.backups import schedules as schedules_service
from sourcekeeper.backups.models import Backup, BackupSchedule
from sourcekeeper.core.db import session_scope
from sourcekeeper.jobs import tick
from sourcekeeper.notifications.models import Notification


@pytest.fixture(autouse=True)
def only_this_tests_schedules(client: TestClient) -> None:
    """The database is shared by the session: earlier tests' schedules must not fire here when
    a test moves the clock forward."""
    with session_scope() as db:
        db.execute(update(BackupSchedule).values(enabled=False))


def make_schedule(
    client: TestClient, admin: Caller, source: dict[str, Any], cron: str = "0 2 * * *", **body: Any
) -> int:
    resp = client.post(
        f"/api/data-sources/{source['id']}/backup-schedules",
        headers=admin.headers,
        json={"cron_expression": cron, **body},
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["data"]["schedule"]["id"])


def set_due(schedule_id: int, due: datetime) -> None:
    with session_scope() as db:
        db.execute(
            update(BackupSchedule).where(BackupSchedule.id == schedule_id).values(next_run=due)
        )


def fire(now: datetime) -> list[int]:
    with session_scope() as db:
        return schedules_service.fire_due(db, now=now)


def schedule_row(schedule_id: int) -> BackupSchedule:
    with session_scope() as db:
        row = db.get(BackupSchedule, schedule_id)
        assert row is not None
        db.expunge(row)
        return row


def backups_of(schedule_id: int) -> list[Backup]:
    with session_scope() as db:
        rows = list(db.scalars(select(Backup).where(Backup.schedule_id == schedule_id)))
        db.expunge_all()
        return rows


def events(action: str, data_source_id: int) -> list[AuditEvent]:
    with session_scope() as db:
        rows = list(
            db.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == action, AuditEvent.data_source_id == data_source_id
                )
            )
        )
        db.expunge_all()
        return rows


def notifications(event_type: str, data_source_id: int) -> int:
    with session_scope() as db:
        return (
            db.scalar(
                select(func.count())
                .select_from(Notification)
                .where(
                    Notification.event_type == event_type,
                    Notification.data_source_id == data_source_id,
                )
            )
            or 0
        )


def test_the_tick_registers_the_backups_steps() -> None:
    from sourcekeeper import tasks  # noqa: F401  - the registry the consumers import

    names = [name for name, _ in tick.STEPS]
    assert names.count("backups.schedules") == 1
    assert names.count("backups.retention") == 1


def test_a_due_schedule_starts_one_scheduled_backup(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    sid = make_schedule(client, admin, sqlite_source, retention_days=5)
    now = datetime.now(UTC).replace(microsecond=0)
    due = now - timedelta(seconds=40)
    set_due(sid, due)
    assert fire(now) == [sid]
    [backup] = backups_of(sid)
    assert backup.trigger == "schedule"
    assert backup.data_source_id == sqlite_source["id"]
    assert backup.retention_days == 5
    assert backup.created_by == "System"
    row = schedule_row(sid)
    assert row.last_run == now
    assert row.last_backup_id == backup.id
    assert row.last_status == backup.status
    assert row.next_run is not None and row.next_run > now
    assert (row.next_run.hour, row.next_run.minute) == (2, 0)
    # the same tick again, or a second worker with the same clock, finds nothing due
    assert fire(now) == []
    assert len(backups_of(sid)) == 1
    assert [
        e.details["backup_id"] for e in events("backup_schedule.fired", sqlite_source["id"])
    ] == [backup.id]
    # the reply shows the linked backup's live status
    listed = client.get(
        f"/api/data-sources/{sqlite_source['id']}/backup-schedules", headers=admin.headers
    ).json()["data"]["schedules"]
    assert listed[0]["last_backup_id"] == backup.id
    assert listed[0]["last_status"] == backup.status
    assert listed[0]["last_run"] == now.isoformat().replace("+00:00", "Z")


def test_not_yet_due_and_disabled_schedules_do_not_fire(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    future = make_schedule(client, admin, sqlite_source)
    disabled = make_schedule(client, admin, sqlite_source, enabled=False)
    now = datetime.now(UTC)
    set_due(future, now + timedelta(seconds=5))
    set_due(disabled, now - timedelta(minutes=1))  # a stale next_run must not matter
    assert fire(now) == []
    assert backups_of(future) == backups_of(disabled) == []


def test_backup_enabled_false_suppresses_firing_without_piling_up(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    sid = make_schedule(client, admin, sqlite_source)
    resp = client.put(
        f"/api/data-sources/{sqlite_source['id']}",
        headers=admin.headers,
        json={"backup_enabled": False},
    )
    assert resp.status_code == 200
    now = datetime.now(UTC)
    set_due(sid, now - timedelta(seconds=30))
    fire(now)
    assert backups_of(sid) == []
    row = schedule_row(sid)
    assert row.next_run is not None and row.next_run > now  # moved on: no catch-up later
    assert row.last_run is None and row.last_status is None
    # backups back on: the next due time fires normally, with no "missed" note
    client.put(
        f"/api/data-sources/{sqlite_source['id']}",
        headers=admin.headers,
        json={"backup_enabled": True},
    )
    later = row.next_run + timedelta(seconds=5)
    assert fire(later) == [sid]
    assert len(backups_of(sid)) == 1
    assert events("backup_schedule.missed", sqlite_source["id"]) == []


def test_a_backup_in_progress_makes_the_run_skipped_and_notified(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    sid = make_schedule(client, admin, sqlite_source)
    resp = client.post(
        f"/api/data-sources/{sqlite_source['id']}/backups", headers=admin.headers, json={}
    )
    assert resp.status_code == 202, resp.text
    manual = resp.json()["data"]["backup"]
    assert manual["status"] in ("scheduled", "in_progress")
    now = datetime.now(UTC)
    set_due(sid, now - timedelta(seconds=10))
    assert fire(now) == [sid]
    assert backups_of(sid) == []
    row = schedule_row(sid)
    assert row.last_status == "skipped"
    assert row.last_backup_id is None
    assert row.last_run is not None
    assert row.next_run is not None and row.next_run > now
    assert len(events("backup_schedule.skipped", sqlite_source["id"])) == 1
    assert notifications("backup.schedule_skipped", sqlite_source["id"]) >= 1
    listed = client.get(
        f"/api/data-sources/{sqlite_source['id']}/backup-schedules", headers=admin.headers
    ).json()["data"]["schedules"]
    assert listed[0]["last_status"] == "skipped"


def test_missed_runs_run_once_and_are_noted(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    sid = make_schedule(client, admin, sqlite_source, cron="0 2 * * *")
    now = datetime(2030, 5, 10, 9, 30, tzinfo=UTC)
    first_missed = datetime(2030, 5, 7, 2, tzinfo=UTC)  # 7th, 8th, 9th and 10th at 02:00 passed
    set_due(sid, first_missed)
    assert fire(now) == [sid]
    [catch_up] = backups_of(sid)  # one catch-up run, not four
    row = schedule_row(sid)
    assert row.next_run == datetime(2030, 5, 11, 2, tzinfo=UTC)  # the next future due time
    [missed] = events("backup_schedule.missed", sqlite_source["id"])
    assert missed.details["missed_runs"] == 4
    assert missed.details["first_missed"] == "2030-05-07T02:00:00Z"
    assert missed.details["catch_up_backup_id"] == catch_up.id
    assert missed.outcome == "failure"
    assert notifications("backup.schedule_missed", sqlite_source["id"]) >= 1
    # the following ticks do not fire it again
    assert fire(now + timedelta(minutes=1)) == []
    assert len(backups_of(sid)) == 1


def test_a_late_tick_within_one_interval_is_not_a_missed_run(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    sid = make_schedule(client, admin, sqlite_source, cron="*/10 * * * *")
    due = datetime(2030, 5, 10, 9, 30, tzinfo=UTC)
    set_due(sid, due)
    assert fire(due + timedelta(minutes=7)) == [sid]
    assert events("backup_schedule.missed", sqlite_source["id"]) == []
    assert schedule_row(sid).next_run == datetime(2030, 5, 10, 9, 40, tzinfo=UTC)


def test_two_threads_ticking_together_fire_once(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    sid = make_schedule(client, admin, sqlite_source, cron="* * * * *")
    now = datetime.now(UTC)
    set_due(sid, now - timedelta(seconds=1))
    barrier = threading.Barrier(4)
    claimed: list[list[int]] = []
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            barrier.wait()
            claimed.append(fire(now))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(len(c) for c in claimed) == [0, 0, 0, 1]
    assert len(backups_of(sid)) == 1


def test_the_tick_keeps_last_status_in_step_with_the_backup(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    sid = make_schedule(client, admin, sqlite_source)
    now = datetime.now(UTC)
    set_due(sid, now - timedelta(seconds=10))
    fire(now)
    [backup] = backups_of(sid)
    with session_scope() as db:  # what the worker does when the job ends
        db.execute(
            update(Backup)
            .where(Backup.id == backup.id)
            .values(status="failed", error_message="disk full", completed_at=now)
        )
    listed = client.get(
        f"/api/data-sources/{sqlite_source['id']}/backup-schedules", headers=admin.headers
    ).json()["data"]["schedules"]
    assert listed[0]["last_status"] == "failed"  # live, before any tick
    assert schedule_row(sid).last_status == backup.status
    fire(now + timedelta(seconds=1))
    assert schedule_row(sid).last_status == "failed"
