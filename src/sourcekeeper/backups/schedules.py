"""Backup schedules: CRUD, and the tick step that fires the due ones (cron math in `cron.py`).

Firing is exactly-once per due time however many workers tick: each due row is claimed with a
compare-and-set on `next_run` (`UPDATE … WHERE id = :id AND next_run = :due`, rowcount 1 wins), and
the backup is started in the same transaction, so a claim and its backup commit or vanish together.
That needs nothing but row-level atomicity, so it holds on SQLite and PostgreSQL alike.

`last_status` is stored when a run fires (`scheduled`, `skipped` or `failed`) and kept in step
with the linked backup by the tick; replies overlay the backup's live status, so the API is never
behind even between ticks.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, Result, or_, select, update
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups import service as backups_service
from sourcekeeper.backups.cron import (
    MAX_MISSED_COUNT,
    canonical_timezone,
    count_due_between,
    expand_cron,
    next_run_after,
)
from sourcekeeper.backups.models import Backup, BackupSchedule
from sourcekeeper.backups.schedule_schemas import (
    BackupScheduleCreate,
    BackupScheduleRead,
    BackupScheduleUpdate,
)
from sourcekeeper.backups.schemas import BackupCreate
from sourcekeeper.core.db import utcnow
from sourcekeeper.core.errors import AppError, BackupInProgress, InvalidInput, NotFound
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.notifications import service as notifications_service

log = structlog.get_logger("sourcekeeper.schedules")

SYSTEM = audit.SYSTEM
SKIPPED = "skipped"
FAILED = "failed"
# One tick fires at most this many due schedules; the rest wait a minute.
BATCH = 25


# ---- CRUD ----------------------------------------------------------------------------------------


def list_schedules(db: Session, *, data_source: DataSource) -> list[BackupSchedule]:
    """The source's schedules, oldest first (the order they were set up in)."""
    stmt = (
        select(BackupSchedule)
        .where(BackupSchedule.data_source_id == data_source.id)
        .order_by(BackupSchedule.id)
    )
    return list(db.scalars(stmt))


def get_or_404(db: Session, *, data_source: DataSource, schedule_id: int) -> BackupSchedule:
    """One schedule of this source; a schedule of another source is as missing as none."""
    schedule = db.get(BackupSchedule, schedule_id)
    if schedule is None or schedule.data_source_id != data_source.id:
        raise NotFound(
            f"Backup schedule {schedule_id} does not exist for data source {data_source.id}"
        )
    return schedule


def _check_backup_type(data_source: DataSource, backup_type: str) -> str:
    supported = backups_service.SUPPORTED_TYPES.get(data_source.source_type, ("full",))
    if backup_type not in supported:
        raise InvalidInput(
            f"backup_type {backup_type!r} is not supported for {data_source.source_type} sources; "
            f"supported: {', '.join(supported)}",
            field="backup_type",
        )
    return backup_type


def _reschedule(schedule: BackupSchedule, now: datetime) -> None:
    """A disabled schedule has no next run; an enabled one is due at the next match after now."""
    schedule.next_run = (
        next_run_after(schedule.cron_expression, schedule.timezone, now)
        if schedule.enabled
        else None
    )


def create(
    db: Session,
    *,
    data_source: DataSource,
    data: BackupScheduleCreate,
    actor: str,
    now: datetime | None = None,
) -> BackupSchedule:
    """Add a schedule to a source and compute its first run."""
    given = data.given()
    cron_expression = " ".join(data.cron_expression.split())
    expand_cron(cron_expression)
    timezone = canonical_timezone(given.get("timezone", "UTC"))
    schedule = BackupSchedule(
        data_source_id=data_source.id,
        name=given.get("name") or f"Backup at '{cron_expression}' ({timezone})",
        backup_type=_check_backup_type(data_source, given.get("backup_type", "full")),
        cron_expression=cron_expression,
        timezone=timezone,
        enabled=given.get("enabled", True),
        retention_days=given.get("retention_days", 30),
        description=given.get("description"),
        created_by=actor,
    )
    _reschedule(schedule, now or utcnow())
    db.add(schedule)
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="backup_schedule.created",
        target=f"backup_schedule:{schedule.id}",
        data_source_id=data_source.id,
        details={
            "cron_expression": schedule.cron_expression,
            "timezone": schedule.timezone,
            "enabled": schedule.enabled,
        },
    )
    return schedule


def update_schedule(
    db: Session,
    *,
    schedule: BackupSchedule,
    data_source: DataSource,
    data: BackupScheduleUpdate,
    actor: str,
    now: datetime | None = None,
) -> BackupSchedule:
    """Change the given fields and recompute `next_run` from now."""
    given = data.given()
    if "cron_expression" in given:
        given["cron_expression"] = " ".join(given["cron_expression"].split())
        expand_cron(given["cron_expression"])
    if "timezone" in given:
        given["timezone"] = canonical_timezone(given["timezone"])
    if "backup_type" in given:
        _check_backup_type(data_source, given["backup_type"])
    for key, value in given.items():
        setattr(schedule, key, value)
    _reschedule(schedule, now or utcnow())
    db.flush()  # the reply shows the new updated_at
    audit.record(
        db,
        actor=actor,
        action="backup_schedule.updated",
        target=f"backup_schedule:{schedule.id}",
        data_source_id=schedule.data_source_id,
        details={"fields": sorted(given)},
    )
    return schedule


def delete(db: Session, *, schedule: BackupSchedule, actor: str) -> None:
    """Remove a schedule; its past backups stay (their schedule_id becomes null)."""
    audit.record(
        db,
        actor=actor,
        action="backup_schedule.deleted",
        target=f"backup_schedule:{schedule.id}",
        data_source_id=schedule.data_source_id,
        details={"name": schedule.name, "cron_expression": schedule.cron_expression},
    )
    db.delete(schedule)
    db.flush()


def present(db: Session, schedules: Iterable[BackupSchedule]) -> list[BackupScheduleRead]:
    """Reply models, with `last_status` taken live from the linked backup when it still exists."""
    rows = list(schedules)
    linked = {s.last_backup_id for s in rows if s.last_backup_id is not None}
    statuses: dict[int, str] = {}
    if linked:
        found = db.execute(select(Backup.id, Backup.status).where(Backup.id.in_(linked)))
        statuses = {int(row.id): str(row.status) for row in found}
    out = []
    for schedule in rows:
        read = BackupScheduleRead.model_validate(schedule)
        if schedule.last_backup_id in statuses:
            read.last_status = statuses[schedule.last_backup_id]
        out.append(read)
    return out


# ---- the tick: firing --------------------------------------------------------------------------


def fire_due(db: Session, *, now: datetime) -> list[int]:
    """Start a backup for every enabled schedule that is due; return the ids of those claimed.

    A claim advances `next_run` past `now`, so however late the tick is, each schedule fires at
    most once per tick; when whole intervals were missed (the service was down), the one run is
    noted as a catch-up.
    """
    due = db.execute(
        select(BackupSchedule.id, BackupSchedule.next_run)
        .where(BackupSchedule.enabled.is_(True), BackupSchedule.next_run <= now)
        .order_by(BackupSchedule.next_run, BackupSchedule.id)
        .limit(BATCH)
    ).all()
    claimed = []
    for schedule_id, due_at in due:
        if due_at is not None and _fire_one(db, schedule_id=schedule_id, due_at=due_at, now=now):
            claimed.append(schedule_id)
    sync_last_status(db)
    return claimed


def _claim(db: Session, *, schedule_id: int, due_at: datetime, next_run: datetime | None) -> bool:
    """Compare-and-set on next_run: only the worker whose UPDATE matched the old value fires."""
    return (
        _matched(
            db.execute(
                update(BackupSchedule)
                .where(BackupSchedule.id == schedule_id, BackupSchedule.next_run == due_at)
                .values(next_run=next_run)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )


def _matched(result: Result[Any]) -> int:
    """Rows an UPDATE matched (SQLite and PostgreSQL both count matched, not changed, rows)."""
    return cast(CursorResult[Any], result).rowcount


def _fire_one(db: Session, *, schedule_id: int, due_at: datetime, now: datetime) -> bool:
    schedule = db.get(BackupSchedule, schedule_id)
    if schedule is None:
        return False
    try:
        following = next_run_after(
            schedule.cron_expression, schedule.timezone, due_at, previous=due_at
        )
        next_run: datetime | None = (
            following
            if following > now
            else next_run_after(schedule.cron_expression, schedule.timezone, now, previous=due_at)
        )
    except InvalidInput as exc:
        # Written before validation existed, or tzdata dropped the zone: stop it, say why.
        next_run, following = None, due_at
        log.warning("schedule_unusable", schedule_id=schedule_id, reason=exc.message)
    if not _claim(db, schedule_id=schedule_id, due_at=due_at, next_run=next_run):
        return False  # another worker fired this due time
    schedule = db.get(BackupSchedule, schedule_id, populate_existing=True)
    assert schedule is not None  # we hold its row: it was just updated in this transaction
    if next_run is None:
        schedule.enabled = False
        audit.record(
            db,
            actor=SYSTEM,
            action="backup_schedule.disabled",
            target=f"backup_schedule:{schedule.id}",
            outcome="failure",
            data_source_id=schedule.data_source_id,
            details={"reason": "cron_expression or timezone no longer valid"},
        )
        return True
    data_source = db.get(DataSource, schedule.data_source_id)
    if data_source is None or not data_source.backup_enabled:
        # Claimed all the same, so re-enabling backups later is not mistaken for missed runs.
        return True
    # Whole intervals passed unseen: every due time from due_at to now went without its run.
    missed = (
        1 + count_due_between(schedule.cron_expression, schedule.timezone, due_at, now)
        if following <= now
        else 0
    )
    schedule.last_run = now
    started = _start_backup(db, schedule=schedule, data_source=data_source, due_at=due_at)
    if missed:
        _note_missed(
            db,
            schedule=schedule,
            data_source=data_source,
            due_at=due_at,
            missed=missed,
            caught_up=started,
        )
    return True


def _start_backup(
    db: Session, *, schedule: BackupSchedule, data_source: DataSource, due_at: datetime
) -> Backup | None:
    """Start the run's backup and note the outcome on the schedule; None when it did not start."""
    target = f"backup_schedule:{schedule.id}"
    request = BackupCreate.model_validate(
        {
            "type": schedule.backup_type,
            "retention_days": schedule.retention_days,
            "description": f"Started by schedule '{schedule.name}' (due {_iso(due_at)})",
        }
    )
    try:
        # A savepoint: a refused start must not undo the claim, or the next tick would retry
        # the same due time and a broken schedule would fire every minute.
        with db.begin_nested():
            backup = backups_service.start(
                db,
                data_source=data_source,
                data=request,
                actor=SYSTEM,
                trigger="schedule",
                schedule_id=schedule.id,
            )
    except BackupInProgress as exc:
        _note_refused(
            db,
            schedule=schedule,
            data_source=data_source,
            due_at=due_at,
            status=SKIPPED,
            reason=exc.message,
            level="warning",
            title=f"Scheduled backup skipped: {data_source.name}",
            message=(
                f"Schedule '{schedule.name}' was due at {_iso(due_at)} but a backup of "
                f"'{data_source.name}' was already queued or running, so this run was "
                "skipped."
            ),
        )
        return None
    except AppError as exc:
        _note_refused(
            db,
            schedule=schedule,
            data_source=data_source,
            due_at=due_at,
            status=FAILED,
            reason=exc.message,
            level="error",
            title=f"Scheduled backup could not start: {data_source.name}",
            message=f"Schedule '{schedule.name}' (due {_iso(due_at)}): {exc.message}",
        )
        return None
    schedule.last_status, schedule.last_backup_id = backup.status, backup.id
    audit.record(
        db,
        actor=SYSTEM,
        action="backup_schedule.fired",
        target=target,
        data_source_id=data_source.id,
        details={"due_at": _iso(due_at), "backup_id": backup.id},
    )
    return backup


def _note_refused(
    db: Session,
    *,
    schedule: BackupSchedule,
    data_source: DataSource,
    due_at: datetime,
    status: str,
    reason: str,
    level: str,
    title: str,
    message: str,
) -> None:
    """A due run whose backup did not start: note it on the schedule, audit it and notify."""
    schedule.last_status, schedule.last_backup_id = status, None
    audit.record(
        db,
        actor=SYSTEM,
        action=f"backup_schedule.{status}",
        target=f"backup_schedule:{schedule.id}",
        data_source_id=data_source.id,
        outcome="failure",
        details={"due_at": _iso(due_at), "reason": reason},
    )
    _notify(
        db,
        data_source=data_source,
        event=f"backup.schedule_{status}",
        title=title,
        message=message,
        schedule=schedule,
        level=level,
    )


def _note_missed(
    db: Session,
    *,
    schedule: BackupSchedule,
    data_source: DataSource,
    due_at: datetime,
    missed: int,
    caught_up: Backup | None,
) -> None:
    count = f"{missed - 1}+" if missed > MAX_MISSED_COUNT else str(missed)
    audit.record(
        db,
        actor=SYSTEM,
        action="backup_schedule.missed",
        target=f"backup_schedule:{schedule.id}",
        data_source_id=data_source.id,
        outcome="failure",
        details={
            "first_missed": _iso(due_at),
            "missed_runs": missed,
            "caught_up_at": _iso(schedule.last_run or due_at),
            "catch_up_backup_id": caught_up.id if caught_up else None,
        },
    )
    then = (
        "one catch-up backup was started now."
        if caught_up
        else f"the catch-up run did not start ({schedule.last_status})."
    )
    _notify(
        db,
        data_source=data_source,
        event="backup.schedule_missed",
        title=f"Scheduled backups missed: {data_source.name}",
        message=(
            f"Schedule '{schedule.name}' missed {count} run(s) since {_iso(due_at)} "
            f"while sourcekeeper was not running; {then}"
        ),
        schedule=schedule,
        level="warning",
    )


def _notify(
    db: Session,
    *,
    data_source: DataSource,
    event: str,
    title: str,
    message: str,
    schedule: BackupSchedule,
    level: str,
) -> None:
    notifications_service.emit(
        db,
        event_type=event,
        data_source_id=data_source.id,
        title=title,
        message=message,
        type=level,
        priority="high" if level == "error" else "medium",
        category="backup",
        action_url=f"/data-sources/{data_source.id}/backup-schedules",
        tags=["backup", "schedule"],
        metadata={"schedule_id": schedule.id, "schedule_name": schedule.name},
    )


def sync_last_status(db: Session) -> int:
    """Copy finished (or started) backup statuses onto the schedules that launched them."""
    rows = db.execute(
        select(BackupSchedule.id, Backup.status)
        .join(Backup, Backup.id == BackupSchedule.last_backup_id)
        .where(
            or_(BackupSchedule.last_status.is_(None), BackupSchedule.last_status != Backup.status)
        )
    ).all()
    for schedule_id, status in rows:
        db.execute(
            update(BackupSchedule)
            .where(BackupSchedule.id == schedule_id)
            .values(last_status=status)
            .execution_options(synchronize_session=False)
        )
    return len(rows)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
