"""Retention: backups past `expires_at` are deleted (artifact and row) by the tick, except that
the newest completed backup of a source is never deleted, whatever its expiry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import structlog
from sqlalchemy import ColumnElement, CursorResult, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups import service as backups_service
from sourcekeeper.backups.models import Backup
from sourcekeeper.core.errors import AppError
from sourcekeeper.jobs.state import FINISHED, JobStatus

log = structlog.get_logger("sourcekeeper.retention")

# At most this many deletions per tick, the rest wait a minute. Kept small because the step is one
# transaction and artifacts are deleted before their rows: a late failure would leave rows whose
# artifacts are already gone.
BATCH = 25


def _expired(now: datetime) -> ColumnElement[bool]:
    """Finished, past `expires_at`, and not its source's newest completed backup."""
    newer = aliased(Backup)
    newest_completed = and_(
        Backup.status == JobStatus.COMPLETED,
        ~exists().where(
            newer.data_source_id == Backup.data_source_id,
            newer.status == JobStatus.COMPLETED,
            or_(
                newer.created_at > Backup.created_at,
                and_(newer.created_at == Backup.created_at, newer.id > Backup.id),
            ),
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
        if cast(CursorResult[Any], locked).rowcount != 1:
            continue
        backup = db.get(Backup, backup_id, populate_existing=True)
        if backup is None:
            continue
        expired_at, data_source_id = backup.expires_at, backup.data_source_id
        try:
            backups_service.delete(db, backup=backup, actor=audit.SYSTEM)
        except AppError as exc:
            # A restore is reading it, or storage is down: refused before anything changed.
            log.warning("retention_delete_refused", backup_id=backup_id, reason=exc.message)
            continue
        audit.record(
            db,
            actor=audit.SYSTEM,
            action="backup.expired",
            target=f"backup:{backup_id}",
            data_source_id=data_source_id,
            details={"expires_at": _iso(expired_at) if expired_at else None, "reason": "retention"},
        )
        deleted.append(backup_id)
    if deleted:
        log.info("retention_deleted", count=len(deleted), backup_ids=deleted)
    return deleted


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
