"""Backups of data sources: start, cancel, delete, download, list.

Running a backup lives in `backups.run`, status and statistics in `backups.stats`, verification in
`backups.verify`, restores in `backups.restores`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO

import structlog
from sqlalchemy import Select, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups import keys, pipeline
from sourcekeeper.backups.models import Backup, Restore
from sourcekeeper.backups.schemas import BackupCreate, BackupTrigger
from sourcekeeper.core.db import utcnow
from sourcekeeper.core.errors import (
    AlreadyFinished,
    AppError,
    BackupInProgress,
    HasBackups,
    InvalidInput,
    NotCompleted,
    NotFound,
    RestoreInProgress,
)
from sourcekeeper.core.logging import redact_text
from sourcekeeper.core.pagination import PageParams, paginate
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.jobs.queue import enqueue_after_commit
from sourcekeeper.jobs.state import ACTIVE, JobStatus
from sourcekeeper.storage.service import get_store

log = structlog.get_logger("sourcekeeper.backups")

DEFAULT_RETENTION_DAYS = 30
# Every engine takes a full logical dump; incremental or differential backups would need WAL or
# binlog archiving, which this service does not set up.
SUPPORTED_TYPES: dict[str, tuple[str, ...]] = {
    "postgresql": ("full",),
    "mysql": ("full",),
    "mariadb": ("full",),
    "sqlite": ("full",),
}
_EXTENSIONS = {"postgresql": "dump", "mysql": "sql", "mariadb": "sql", "sqlite": "db"}


def artifact_key(data_source_id: int, backup_id: int, engine: str) -> str:
    """`backups/7/42.dump.zst.age`: the source, the backup, the dump format, then zstd and age."""
    return f"backups/{data_source_id}/{backup_id}.{_EXTENSIONS.get(engine, 'dump')}.zst.age"


def user_message(exc: BaseException) -> str:
    """A failure as a user reads it: the cause, no secret, no stack."""
    if isinstance(exc, AppError | pipeline.PipelineError):
        text = exc.message
        if isinstance(exc, pipeline.ArtifactUnreadable) and "does not decrypt" in text:
            text += keys.missing_identity_hint()
    else:
        text = f"unexpected error ({type(exc).__name__})"
    return redact_text(text)


# ---- reads -------------------------------------------------------------------------------------


def get(db: Session, backup_id: int) -> Backup | None:
    return db.get(Backup, backup_id)


def get_or_404(db: Session, *, ds: DataSource, backup_id: int) -> Backup:
    backup = db.get(Backup, backup_id)
    if backup is None or backup.data_source_id != ds.id:
        raise NotFound(f"Backup {backup_id} does not exist for data source {ds.id}")
    return backup


def list_backups(
    db: Session, *, ds: DataSource, page: PageParams, status: str | None = None
) -> tuple[list[Backup], int]:
    """A source's backups, newest first."""
    stmt: Select[Any] = (
        select(Backup)
        .where(Backup.data_source_id == ds.id)
        .order_by(Backup.created_at.desc(), Backup.id.desc())
    )
    if status:
        stmt = stmt.where(Backup.status == status)
    return paginate(db, stmt, page)


def active_backup_id(db: Session, data_source_id: int) -> int | None:
    """A queued or running backup of the source (safety backups of restores aside)."""
    return db.scalar(
        select(Backup.id).where(
            Backup.data_source_id == data_source_id,
            Backup.status.in_(ACTIVE),
            Backup.trigger != BackupTrigger.PRE_RESTORE,
        )
    )


# ---- start, cancel, delete ---------------------------------------------------------------------


def new_backup(
    db: Session,
    *,
    data_source: DataSource,
    actor: str,
    trigger: str,
    name: str | None = None,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    description: str | None = None,
    schedule_id: int | None = None,
) -> Backup:
    """Insert a `scheduled` backup row (no job is queued; `start` does that)."""
    now = utcnow()
    backup = Backup(
        data_source_id=data_source.id,
        name=name or f"Backup {now:%Y-%m-%d %H:%M}",
        type="full",
        trigger=BackupTrigger(trigger).value,
        schedule_id=schedule_id,
        status=JobStatus.SCHEDULED,
        created_at=now,
        bytes_processed=0,
        encryption=keys.ENCRYPTION,
        compression="zstd",
        verification_status="unverified",
        retention_days=retention_days,
        expires_at=now + timedelta(days=retention_days),
        created_by=actor or audit.SYSTEM,
        description=description,
        meta={},
    )
    db.add(backup)
    db.flush()
    return backup


def start(
    db: Session,
    *,
    data_source: DataSource,
    data: BackupCreate | None,
    actor: str,
    trigger: str = "manual",
    schedule_id: int | None = None,
) -> Backup:
    """Queue a backup of the source; 409 `backup_in_progress` when one is queued or running.

    A unique partial index backs the check against two simultaneous starts; the loser of that
    race gets BackupInProgress with its session needing a rollback (the request or tick fails).
    """
    given = (data or BackupCreate()).given()
    kind = given.get("type", "full")
    supported = SUPPORTED_TYPES.get(data_source.source_type, ("full",))
    if kind not in supported:
        raise InvalidInput(
            f"Backup type '{kind}' is not supported for {data_source.source_type} sources; "
            f"supported: {', '.join(supported)}",
            field="type",
        )
    keys.recipients(db)  # fail closed now, with a 503, rather than queue a doomed job
    if (running := active_backup_id(db, data_source.id)) is not None:
        raise BackupInProgress(
            f"Backup {running} of data source {data_source.id} is already queued or running"
        )
    try:
        backup = new_backup(
            db,
            data_source=data_source,
            actor=actor,
            trigger=trigger,
            name=given.get("name"),
            retention_days=given.get("retention_days", DEFAULT_RETENTION_DAYS),
            description=given.get("description"),
            schedule_id=schedule_id,
        )
    except IntegrityError:
        raise BackupInProgress(
            f"A backup of data source {data_source.id} is already queued or running"
        ) from None
    audit.record(
        db,
        actor=actor,
        action="backup.started",
        target=f"backup:{backup.id}",
        data_source_id=data_source.id,
        details={
            "backup_id": backup.id,
            "name": backup.name,
            "trigger": trigger,
            "schedule_id": schedule_id,
        },
    )
    enqueue_after_commit(db, "backups.run", backup_id=backup.id)
    return backup


def cancel(db: Session, *, backup: Backup, actor: str) -> Backup:
    """Mark a queued or running backup cancelled at once; its worker stops within seconds."""
    if backup.status not in ACTIVE:
        raise AlreadyFinished(f"Backup {backup.id} already finished ({backup.status})")
    now = utcnow()
    backup.status = JobStatus.CANCELLED
    backup.cancel_requested = True
    backup.completed_at = now
    backup.error_message = f"Cancelled by {actor}"
    audit.record(
        db,
        actor=actor,
        action="backup.cancelled",
        target=f"backup:{backup.id}",
        data_source_id=backup.data_source_id,
        details={"backup_id": backup.id},
    )
    return backup


def _active_restore_of(db: Session, backup_id: int) -> int | None:
    return db.scalar(
        select(Restore.id).where(Restore.backup_id == backup_id, Restore.status.in_(ACTIVE))
    )


def delete(db: Session, *, backup: Backup, actor: str) -> None:
    """Remove the stored artifact, then the row; 409 while the backup or a restore of it runs."""
    if backup.status in ACTIVE:
        raise BackupInProgress(
            f"Backup {backup.id} is {backup.status}; cancel it before deleting it"
        )
    if (restore_id := _active_restore_of(db, backup.id)) is not None:
        raise RestoreInProgress(f"Restore {restore_id} is reading backup {backup.id}")
    if backup.location:
        # Before the row: if storage is down the caller gets 503 and nothing changes.
        get_store().delete(backup.location)
    audit.record(
        db,
        actor=actor,
        action="backup.deleted",
        target=f"backup:{backup.id}",
        data_source_id=backup.data_source_id,
        details={
            "backup_id": backup.id,
            "name": backup.name,
            "location": backup.location,
            "size_bytes": backup.size_bytes,
        },
    )
    db.delete(backup)
    db.flush()


def prepare_source_deletion(
    db: Session, *, ds: DataSource, delete_backups: bool, actor: str
) -> None:
    """Before a source goes: 409 while a job runs on it, 409 `has_backups` unless asked to
    delete them, else remove its artifacts and backup rows."""
    running = db.scalar(
        select(Backup.id).where(Backup.data_source_id == ds.id, Backup.status.in_(ACTIVE))
    )
    if running is not None:
        raise BackupInProgress(
            f"Backup {running} of data source {ds.id} is queued or running; cancel it first"
        )
    restoring = db.scalar(
        select(Restore.id).where(
            or_(Restore.data_source_id == ds.id, Restore.target_data_source_id == ds.id),
            Restore.status.in_(ACTIVE),
        )
    )
    if restoring is not None:
        raise BackupInProgress(
            f"Restore {restoring} involving data source {ds.id} is queued or running"
        )
    stored = list(
        db.scalars(
            select(Backup).where(Backup.data_source_id == ds.id, Backup.location.is_not(None))
        )
    )
    if stored and not delete_backups:
        raise HasBackups(
            f"Data source {ds.id} still has {len(stored)} stored backup(s); delete them first "
            "or pass delete_backups=true"
        )
    store = get_store()
    for backup in stored:
        store.delete(backup.location or "")
    if stored:
        audit.record(
            db,
            actor=actor,
            action="backup.deleted",
            target=f"data_source:{ds.id}",
            data_source_id=ds.id,
            details={"backup_ids": [b.id for b in stored], "with_data_source": True},
        )
    db.execute(sql_delete(Restore).where(Restore.data_source_id == ds.id))
    db.execute(sql_delete(Backup).where(Backup.data_source_id == ds.id))


@dataclass(frozen=True)
class Download:
    filename: str
    size: int
    stream: BinaryIO

    def chunks(self) -> Iterator[bytes]:
        with self.stream:
            while chunk := self.stream.read(pipeline.CHUNK):
                yield chunk


def open_download(db: Session, *, backup: Backup, actor: str) -> Download:
    """Open the stored artifact for download (as stored: encrypted) and audit it."""
    if backup.status != JobStatus.COMPLETED or not backup.location:
        raise NotCompleted(
            f"Backup {backup.id} is {backup.status}; only completed backups can be downloaded"
        )
    store = get_store()
    size = store.size(backup.location)
    stream = store.open(backup.location)
    audit.record(
        db,
        actor=actor,
        action="backup.downloaded",
        target=f"backup:{backup.id}",
        data_source_id=backup.data_source_id,
        details={"backup_id": backup.id, "size_bytes": size},
    )
    name = backup.location.rsplit("/", 1)[-1]
    return Download(filename=f"backup-{backup.data_source_id}-{name}", size=size, stream=stream)
