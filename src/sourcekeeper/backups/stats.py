"""Backup statistics and the backup-status view with its health verdict (API.md §3)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sourcekeeper.backups.models import Backup, BackupSchedule
from sourcekeeper.backups.schemas import (
    BackupRead,
    BackupStats,
    BackupStatusRead,
    HealthLevel,
    StorageUsage,
)
from sourcekeeper.core.db import utcnow
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.jobs.state import JobStatus

STATUS_BACKUPS = 50
UNSCHEDULED_MAX_AGE = timedelta(hours=48)
_GAPS_SAMPLED = 8  # enough occurrences to see the long gap of e.g. a weekdays-only schedule


def stats(db: Session, *, ds: DataSource) -> BackupStats:
    """Counts, sizes, success rate and mean duration of a source's backups."""
    by_status = dict(
        db.execute(
            select(Backup.status, func.count())
            .where(Backup.data_source_id == ds.id)
            .group_by(Backup.status)
        )
        .tuples()
        .all()
    )
    total = sum(by_status.values())
    ok = by_status.get(JobStatus.COMPLETED, 0)
    failed = by_status.get(JobStatus.FAILED, 0)
    size = (
        db.scalar(
            select(func.coalesce(func.sum(Backup.size_bytes), 0)).where(
                Backup.data_source_id == ds.id, Backup.status == JobStatus.COMPLETED
            )
        )
        or 0
    )
    spans = (
        db.execute(
            select(Backup.started_at, Backup.completed_at).where(
                Backup.data_source_id == ds.id,
                Backup.status == JobStatus.COMPLETED,
                Backup.started_at.is_not(None),
                Backup.completed_at.is_not(None),
            )
        )
        .tuples()
        .all()
    )
    durations = [(end - begin).total_seconds() for begin, end in spans if begin and end]
    finished = ok + failed  # a cancelled backup is the user's choice, not a failure
    return BackupStats(
        total_backups=total,
        successful_backups=ok,
        failed_backups=failed,
        total_size_bytes=int(size),
        total_size_gb=round(int(size) / 1024**3, 3),
        success_rate=round(ok * 100 / finished, 1) if finished else 0.0,
        average_duration_seconds=round(sum(durations) / len(durations), 3) if durations else None,
    )


def schedule_gap(cron_expression: str, timezone: str, now: datetime) -> timedelta | None:
    """The longest time between two runs of a cron schedule (in its own time zone)."""
    try:
        zone = ZoneInfo(timezone or "UTC")
        runs = croniter(cron_expression, now.astimezone(zone))
        times: list[datetime] = [runs.get_next(datetime) for _ in range(_GAPS_SAMPLED + 1)]
    except Exception:  # an invalid stored schedule must not break the status page
        return None
    return max(later - earlier for earlier, later in zip(times, times[1:], strict=False))


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def status(db: Session, *, ds: DataSource) -> BackupStatusRead:
    """The backup-status view: recent backups, stats, next run, health and its reasons."""
    now = utcnow()
    recent = list(
        db.scalars(
            select(Backup)
            .where(Backup.data_source_id == ds.id)
            .order_by(Backup.created_at.desc(), Backup.id.desc())
            .limit(STATUS_BACKUPS)
        )
    )
    last_success = db.scalar(
        select(Backup)
        .where(Backup.data_source_id == ds.id, Backup.status == JobStatus.COMPLETED)
        .order_by(Backup.completed_at.desc(), Backup.id.desc())
        .limit(1)
    )
    last_finished = db.scalar(
        select(Backup)
        .where(
            Backup.data_source_id == ds.id,
            Backup.status.in_((JobStatus.COMPLETED, JobStatus.FAILED)),
        )
        .order_by(Backup.completed_at.desc(), Backup.id.desc())
        .limit(1)
    )
    schedules = list(
        db.scalars(
            select(BackupSchedule).where(
                BackupSchedule.data_source_id == ds.id, BackupSchedule.enabled.is_(True)
            )
        )
    )
    active_schedules = schedules if ds.backup_enabled else []
    next_runs = [s.next_run for s in active_schedules if s.next_run is not None]
    used = (
        db.execute(
            select(func.coalesce(func.sum(Backup.size_bytes), 0), func.count()).where(
                Backup.data_source_id == ds.id, Backup.location.is_not(None)
            )
        )
        .tuples()
        .one()
    )

    issues: list[str] = []
    level = HealthLevel.HEALTHY

    def flag(severity: HealthLevel, text: str) -> None:
        nonlocal level
        issues.append(text)
        if severity == HealthLevel.CRITICAL or level == HealthLevel.HEALTHY:
            level = severity

    gaps = [
        g
        for s in active_schedules
        if (g := schedule_gap(s.cron_expression, s.timezone, now)) is not None
    ]
    if gaps:
        allowed = 2 * min(gaps)
        why = f"twice the schedule interval of {_human(min(gaps))}"
    else:
        allowed = UNSCHEDULED_MAX_AGE
        why = "48 hours, as the source has no active schedule"
    if last_success is None or last_success.completed_at is None:
        age = now - ds.created_at
        severity = HealthLevel.CRITICAL if age > allowed else HealthLevel.WARNING
        flag(
            severity,
            "No successful backup exists yet"
            + (f"; the source was registered {_human(age)} ago" if age > allowed else ""),
        )
    elif (age := now - last_success.completed_at) > allowed:
        flag(
            HealthLevel.CRITICAL,
            f"The last successful backup finished {_human(age)} ago; one is expected at least "
            f"every {_human(allowed)} ({why})",
        )
    if last_finished is not None and last_finished.status == JobStatus.FAILED:
        flag(
            HealthLevel.WARNING,
            f"The most recent backup failed: {last_finished.error_message or 'unknown error'}",
        )
    if last_success is not None and last_success.verification_status == "failed":
        flag(
            HealthLevel.WARNING,
            "The newest successful backup failed verification: "
            f"{last_success.verification_error or 'unknown error'}",
        )
    if schedules and not ds.backup_enabled:
        flag(
            HealthLevel.WARNING,
            "Scheduled backups are turned off for this source (backup_enabled is false)",
        )
    elif not schedules:
        flag(HealthLevel.WARNING, "No backup schedule is enabled: only manual backups are taken")

    return BackupStatusRead(
        backups=[BackupRead.of(b) for b in recent],
        stats=stats(db, ds=ds),
        last_backup=BackupRead.of(recent[0]) if recent else None,
        last_successful_backup=BackupRead.of(last_success) if last_success else None,
        next_backup_at=min(next_runs) if next_runs else None,
        backup_enabled=ds.backup_enabled,
        health=level,
        issues=issues,
        storage=StorageUsage(used_bytes=int(used[0] or 0), backup_count=int(used[1])),
    )
