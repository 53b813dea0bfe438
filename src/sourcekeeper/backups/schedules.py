"""Backup schedules (cron rows evaluated with croniter) and retention, both driven by the tick.

Firing is exactly-once per due time however many workers tick: each due row is claimed with a
compare-and-set on `next_run` (`UPDATE … WHERE id = :id AND next_run = :due`, rowcount 1 wins), and
the backup is started in the same transaction, so a claim and its backup commit or vanish together.
That needs nothing but row-level atomicity, so it holds on SQLite and PostgreSQL alike.

`last_status` is stored when a run fires (`scheduled`, `skipped` or `failed`) and kept in step
with the linked backup by the tick; replies overlay the backup's live status, so the API is never
behind even between ticks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo, available_timezones

import structlog
from croniter import CroniterBadDateError, croniter
from sqlalchemy import ColumnElement, CursorResult, Result, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups import service as backups_service
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
from sourcekeeper.jobs.state import FINISHED, JobStatus
from sourcekeeper.notifications import service as notifications_service

log = structlog.get_logger("sourcekeeper.schedules")

SYSTEM = audit.SYSTEM
SKIPPED = "skipped"
FAILED = "failed"
# One tick handles at most this many due schedules / expired backups; the rest wait a minute.
# Kept small because the step is one transaction: artifacts are deleted before their rows, so a
# late failure would leave rows whose artifacts are already gone.
BATCH = 25
# Counting missed due times stops here (a per-minute schedule down for a month is "≥ 1000").
MAX_MISSED_COUNT = 1000

# croniter's extensions: `R` (random) and `H` / `H(0-29)` (hashed), alone in a list item.
_RANDOM_OR_HASHED = re.compile(r"^[RH](\(.*)?$", re.IGNORECASE)
# Vixie cron's nicknames (croniter knows most; expanding them ourselves keeps one code path).
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


# ---- cron and time zones -------------------------------------------------------------------------


def expand_cron(expression: str) -> str:
    """The five-field form of a cron expression; 422 on `cron_expression` if it is not one.

    Only minute precision makes sense for a once-a-minute tick, so croniter's optional seconds and
    year fields, and its random/hashed (`R`, `H`) extensions, are refused.
    """
    text = " ".join(expression.split())
    if text.lower() in _NICKNAMES:
        return _NICKNAMES[text.lower()]
    fields = text.split(" ")
    problem = None
    if len(fields) != 5:
        problem = (f"has {len(fields)} fields; expected 5 "
                   "(minute hour day-of-month month day-of-week)")
    elif any(_RANDOM_OR_HASHED.match(part) for part in re.split(r"[,/-]", text.replace(" ", ","))):
        problem = "uses random or hashed values (R, H), which are not supported"
    elif not croniter.is_valid(text):
        problem = "is not a valid cron expression"
    if problem:
        raise InvalidInput(f"cron_expression {expression!r} {problem}", field="cron_expression")
    return text


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


def canonical_timezone(name: str) -> str:
    """The IANA name as spelled by tzdata (`europe/paris` → `Europe/Paris`); 422 on `timezone`."""
    found = _zone_names().get(name.strip().lower())
    if found is None:
        raise InvalidInput(
            f"timezone {name!r} is not an IANA time zone name (e.g. 'UTC', 'Europe/Paris')",
            field="timezone",
        )
    return found


def _fixed_hour(expanded: str) -> bool:
    return not expanded.split(" ")[1].startswith("*")


def next_run_after(
    cron_expression: str, timezone: str, after: datetime, *, previous: datetime | None = None
) -> datetime:
    """The first due time strictly after `after`, evaluated in `timezone`, returned in UTC.

    When clocks fall back, a fixed-hour job (`30 2 * * *`) would match the repeated wall-clock
    time twice; like Vixie cron it runs once, so a candidate with the same local time as
    `previous` (the run just fired) is passed over. Wildcard-hour jobs run in both hours.
    """
    expanded = expand_cron(cron_expression)
    zone = ZoneInfo(canonical_timezone(timezone))
    it = croniter(expanded, after.astimezone(zone))
    skip_wall = (
        previous.astimezone(zone).replace(tzinfo=None)
        if previous is not None and _fixed_hour(expanded)
        else None
    )
    try:
        for _ in range(3):
            candidate: datetime = it.get_next(datetime)
            if candidate.replace(tzinfo=None) != skip_wall:
                return candidate.astimezone(UTC)
    except CroniterBadDateError:
        pass
    raise InvalidInput(
        f"cron_expression {cron_expression!r} never matches a date", field="cron_expression"
    )


def count_due_between(
    cron_expression: str, timezone: str, start: datetime, end: datetime
) -> int:
    """How many due times fall in (start, end], capped at MAX_MISSED_COUNT."""
    count, current = 0, start
    while count < MAX_MISSED_COUNT:
        current = next_run_after(cron_expression, timezone, current, previous=current)
        if current > end:
            break
        count += 1
    return count


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
        db, actor=actor, action="backup_schedule.created", target=f"backup_schedule:{schedule.id}",
        data_source_id=data_source.id,
        details={"cron_expression": schedule.cron_expression, "timezone": schedule.timezone,
                 "enabled": schedule.enabled},
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
        db, actor=actor, action="backup_schedule.updated", target=f"backup_schedule:{schedule.id}",
        data_source_id=schedule.data_source_id, details={"fields": sorted(given)},
    )
    return schedule


def delete(db: Session, *, schedule: BackupSchedule, actor: str) -> None:
    """Remove a schedule; its past backups stay (their schedule_id becomes null)."""
    audit.record(
        db, actor=actor, action="backup_schedule.deleted", target=f"backup_schedule:{schedule.id}",
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
    return _matched(db.execute(
        update(BackupSchedule)
        .where(BackupSchedule.id == schedule_id, BackupSchedule.next_run == due_at)
        .values(next_run=next_run)
        .execution_options(synchronize_session=False)
    )) == 1


def _matched(result: Result[Any]) -> int:
    """Rows an UPDATE matched (SQLite and PostgreSQL both count matched, not changed, rows)."""
    return cast(CursorResult[Any], result).rowcount


def _fire_one(db: Session, *, schedule_id: int, due_at: datetime, now: datetime) -> bool:
    schedule = db.get(BackupSchedule, schedule_id)
    if schedule is None:
        return False
    try:
        following = next_run_after(schedule.cron_expression, schedule.timezone, due_at,
                                   previous=due_at)
        next_run: datetime | None = (
            following if following > now
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
        audit.record(db, actor=SYSTEM, action="backup_schedule.disabled",
                     target=f"backup_schedule:{schedule.id}", outcome="failure",
                     data_source_id=schedule.data_source_id,
                     details={"reason": "cron_expression or timezone no longer valid"})
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
        _note_missed(db, schedule=schedule, data_source=data_source, due_at=due_at, missed=missed,
                     caught_up=started)
    return True


def _start_backup(
    db: Session, *, schedule: BackupSchedule, data_source: DataSource, due_at: datetime
) -> Backup | None:
    """Start the run's backup and note the outcome on the schedule; None when it did not start."""
    target = f"backup_schedule:{schedule.id}"
    request = BackupCreate.model_validate({
        "type": schedule.backup_type,
        "retention_days": schedule.retention_days,
        "description": f"Started by schedule '{schedule.name}' (due {_iso(due_at)})",
    })
    try:
        # A savepoint: a refused start must not undo the claim, or the next tick would retry
        # the same due time and a broken schedule would fire every minute.
        with db.begin_nested():
            backup = backups_service.start(
                db, data_source=data_source, data=request, actor=SYSTEM,
                trigger="schedule", schedule_id=schedule.id,
            )
    except BackupInProgress as exc:
        schedule.last_status, schedule.last_backup_id = SKIPPED, None
        audit.record(db, actor=SYSTEM, action="backup_schedule.skipped", target=target,
                     data_source_id=data_source.id, outcome="failure",
                     details={"due_at": _iso(due_at), "reason": exc.message})
        _notify(db, data_source=data_source, event="backup.schedule_skipped",
                title=f"Scheduled backup skipped: {data_source.name}",
                message=(f"Schedule '{schedule.name}' was due at {_iso(due_at)} but a backup of "
                         f"'{data_source.name}' was already queued or running, so this run was "
                         "skipped."),
                schedule=schedule, level="warning")
        return None
    except AppError as exc:
        schedule.last_status, schedule.last_backup_id = FAILED, None
        audit.record(db, actor=SYSTEM, action="backup_schedule.failed", target=target,
                     data_source_id=data_source.id, outcome="failure",
                     details={"due_at": _iso(due_at), "reason": exc.message})
        _notify(db, data_source=data_source, event="backup.schedule_failed",
                title=f"Scheduled backup could not start: {data_source.name}",
                message=f"Schedule '{schedule.name}' (due {_iso(due_at)}): {exc.message}",
                schedule=schedule, level="error")
        return None
    schedule.last_status, schedule.last_backup_id = backup.status, backup.id
    audit.record(db, actor=SYSTEM, action="backup_schedule.fired", target=target,
                 data_source_id=data_source.id,
                 details={"due_at": _iso(due_at), "backup_id": backup.id})
    return backup


def _note_missed(
    db: Session, *, schedule: BackupSchedule, data_source: DataSource, due_at: datetime,
    missed: int, caught_up: Backup | None,
) -> None:
    count = f"{missed - 1}+" if missed > MAX_MISSED_COUNT else str(missed)
    audit.record(db, actor=SYSTEM, action="backup_schedule.missed",
                 target=f"backup_schedule:{schedule.id}", data_source_id=data_source.id,
                 outcome="failure",
                 details={"first_missed": _iso(due_at), "missed_runs": missed,
                          "caught_up_at": _iso(schedule.last_run or due_at),
                          "catch_up_backup_id": caught_up.id if caught_up else None})
    then = ("one catch-up backup was started now." if caught_up
            else f"the catch-up run did not start ({schedule.last_status}).")
    _notify(db, data_source=data_source, event="backup.schedule_missed",
            title=f"Scheduled backups missed: {data_source.name}",
            message=(f"Schedule '{schedule.name}' missed {count} run(s) since {_iso(due_at)} "
                     f"while sourcekeeper was not running; {then}"),
            schedule=schedule, level="warning")


def _notify(
    db: Session, *, data_source: DataSource, event: str, title: str, message: str,
    schedule: BackupSchedule, level: str,
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
        .where(or_(BackupSchedule.last_status.is_(None),
                   BackupSchedule.last_status != Backup.status))
    ).all()
    for schedule_id, status in rows:
        db.execute(
            update(BackupSchedule).where(BackupSchedule.id == schedule_id)
            .values(last_status=status).execution_options(synchronize_session=False)
        )
    return len(rows)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---- the tick: retention -----------------------------------------------------------------------


def _expired(now: datetime) -> ColumnElement[bool]:
    """Finished, past `expires_at`, and not its source's newest completed backup."""
    newer = aliased(Backup)
    newest_completed = and_(
        Backup.status == JobStatus.COMPLETED,
        ~exists().where(
            newer.data_source_id == Backup.data_source_id,
            newer.status == JobStatus.COMPLETED,
            or_(newer.created_at > Backup.created_at,
                and_(newer.created_at == Backup.created_at, newer.id > Backup.id)),
        ),
    )
    return and_(
        Backup.expires_at.is_not(None),
        Backup.expires_at <= now,
        Backup.status.in_([s.value for s in FINISHED]),
        ~newest_completed,
    )


def expired_backup_ids(db: Session, *, now: datetime, limit: int = BATCH) -> list[int]:
    """Backups retention would delete now, oldest expiry first."""
    stmt = select(Backup.id).where(_expired(now)).order_by(Backup.expires_at, Backup.id)
    return list(db.scalars(stmt.limit(limit)))


def apply_retention(db: Session, *, now: datetime) -> list[int]:
    """Delete expired backups (artifact and row) through the backups service; return their ids."""
    deleted = []
    for backup_id in expired_backup_ids(db, now=now):
        # Lock the row and re-check the rule in one statement (a no-op UPDATE): with several
        # workers only the first still finds it, and "newest completed" is judged on fresh data.
        locked = db.execute(
            update(Backup)
            .where(Backup.id == backup_id, _expired(now))
            .values(expires_at=Backup.expires_at)
            .execution_options(synchronize_session=False)
        )
        if _matched(locked) != 1:
            continue
        backup = db.get(Backup, backup_id, populate_existing=True)
        if backup is None:
            continue
        expired_at, data_source_id = backup.expires_at, backup.data_source_id
        try:
            backups_service.delete(db, backup=backup, actor=SYSTEM)
        except AppError as exc:
            # A restore is reading it, or storage is down: refused before anything changed.
            log.warning("retention_delete_refused", backup_id=backup_id, reason=exc.message)
            continue
        audit.record(db, actor=SYSTEM, action="backup.expired", target=f"backup:{backup_id}",
                     data_source_id=data_source_id,
                     details={"expires_at": _iso(expired_at) if expired_at else None,
                              "reason": "retention"})
        deleted.append(backup_id)
    if deleted:
        log.info("retention_deleted", count=len(deleted), backup_ids=deleted)
    return deleted
