"""One backup run, in three steps that never hold a database session while the dump streams:
`begin_run` reads what the job needs into a plain `BackupPlan` and marks the row running,
`execute` streams dump → zstd → age → sha256 → store (heartbeats go through the `tick` callable,
which opens its own short transaction), and `finish_run` records the outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from sourcekeeper.backups import events, keys, pipeline
from sourcekeeper.backups.models import Backup
from sourcekeeper.backups.service import artifact_key, user_message
from sourcekeeper.core.db import utcnow
from sourcekeeper.core.errors import AppError
from sourcekeeper.datasources import service as datasources_service
from sourcekeeper.datasources.connectors.base import Connector
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.jobs import state as job_state
from sourcekeeper.jobs.state import JobStatus
from sourcekeeper.storage.service import get_store

log = structlog.get_logger("sourcekeeper.backups.run")


@dataclass(frozen=True)
class BackupPlan:
    """What a run needs, read in one short transaction."""

    backup_id: int
    data_source_id: int
    engine: str
    connector: Connector
    key: str
    recipients: list[str]
    estimated_size: int | None


@dataclass
class BackupOutcome:
    status: JobStatus
    written: pipeline.Written | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _estimate(db: Session, ds: DataSource) -> int | None:
    """The dump's likely size, for a progress percentage: the last successful dump's size."""
    if ds.source_type == "sqlite":
        try:
            return Path(ds.database_name).stat().st_size
        except OSError:
            return None
    return db.scalar(
        select(Backup.original_size_bytes)
        .where(Backup.data_source_id == ds.id, Backup.status == JobStatus.COMPLETED)
        .order_by(Backup.completed_at.desc())
        .limit(1)
    )


def begin_run(db: Session, *, backup_id: int) -> BackupPlan | None:
    """Mark the backup running and gather what the run needs; None when there is nothing to do
    (cancelled before it started, already handled, or failed here for want of a key)."""
    backup = db.get(Backup, backup_id)
    if backup is None or backup.status != JobStatus.SCHEDULED:
        return None
    ds = db.get(DataSource, backup.data_source_id)
    if ds is None:
        return None
    now = utcnow()
    backup.status = JobStatus.IN_PROGRESS
    backup.started_at = now
    backup.heartbeat_at = now
    try:
        recipients = keys.recipients(db)
        connector = datasources_service.connector_for(ds)
    except AppError as exc:
        fail(db, backup=backup, ds=ds, message=user_message(exc))
        return None
    estimate = _estimate(db, ds)
    backup.progress = 0.0 if estimate else None
    backup.recipient = recipients[0]
    return BackupPlan(
        backup_id=backup.id,
        data_source_id=ds.id,
        engine=ds.source_type,
        connector=connector,
        key=artifact_key(ds.id, backup.id, ds.source_type),
        recipients=recipients,
        estimated_size=estimate,
    )


def record_heartbeat(db: Session, *, plan: BackupPlan, counters: pipeline.Counters) -> bool:
    """Store progress and the heartbeat; True when the run must stop (cancelled or reaped)."""
    progress = None
    if plan.estimated_size:
        progress = min(99.0, round(counters.plain_bytes * 100 / plan.estimated_size, 1))
    return job_state.beat(
        db, Backup, plan.backup_id, bytes_processed=counters.plain_bytes, progress=progress
    )


Tick = Callable[[pipeline.Counters], bool]


def execute(plan: BackupPlan, *, tick: Tick) -> BackupOutcome:
    """Dump → zstd → age → sha256 → store, with no database session held.

    `tick(counters)` runs every second beside the stream: it records the heartbeat and answers
    whether to stop. Stopping kills the dump process; the writer is aborted, so nothing appears
    under the artifact's key unless the whole dump made it.
    """
    counters = pipeline.Counters()
    monitor = pipeline.Monitor(lambda: tick(counters))
    try:
        with monitor:
            counts_before: dict[str, int] | None = None
            if plan.engine in ("mysql", "mariadb"):
                # mariadb-dump takes its own snapshot, which cannot be shared: counted just before.
                counts_before = plan.connector.table_row_counts()
            if monitor.stop.is_set():
                raise pipeline.Cancelled()
            store = get_store()
            with plan.connector.dump() as dump:
                monitor.on_stop(dump.kill)
                with store.open_writer(plan.key) as writer:
                    written = pipeline.encrypt_stream(
                        dump.stdout,
                        writer,
                        plan.recipients,
                        counters=counters,
                        stop=monitor.stop,
                        abort_source=dump.kill,
                    )
                    dump.wait()
                    info = dict(dump.info)
                    if "server_version" not in info:  # SQLite: the library's version
                        info["server_version"] = plan.connector.server_version()
                    if monitor.stop.is_set():
                        raise pipeline.Cancelled()
                # Nothing below may fail: the artifact is now published under its key.
                counts = dump.row_counts if dump.row_counts is not None else counts_before
    except Exception as exc:
        if monitor.stop.is_set() or isinstance(exc, pipeline.Cancelled):
            return BackupOutcome(JobStatus.CANCELLED, error="Cancelled")
        if not isinstance(exc, AppError | pipeline.PipelineError):
            log.exception("backup_failed_unexpectedly", backup_id=plan.backup_id)
        return BackupOutcome(JobStatus.FAILED, error=user_message(exc))
    meta = {
        "engine": plan.engine,
        "server_version": info.get("server_version"),
        "tool": info.get("tool"),
        "tool_version": info.get("tool_version"),
        "format": info.get("format"),
        "tables": len(counts) if counts is not None else None,
        "row_counts": counts,
        "row_counts_taken": "dump_snapshot" if counts_before is None else "before_dump",
    }
    return BackupOutcome(JobStatus.COMPLETED, written=written, meta=meta)


def fail(db: Session, *, backup: Backup, ds: DataSource, message: str) -> None:
    now = utcnow()
    backup.status = JobStatus.FAILED
    backup.completed_at = now
    backup.started_at = backup.started_at or now
    backup.error_message = message
    events.backup_finished(db, backup=backup, ds=ds)


def _discard(key: str) -> None:
    try:
        get_store().delete(key)
    except Exception:  # the row already says what happened; a leftover is logged, not fatal
        log.exception("artifact_delete_failed", key=key)


def finish_run(db: Session, *, plan: BackupPlan, outcome: BackupOutcome) -> Backup | None:
    """Record the outcome, unless the row was cancelled or reaped meanwhile: then its word
    stands and any artifact this run stored is removed."""
    backup = db.scalar(select(Backup).where(Backup.id == plan.backup_id).with_for_update())
    if backup is None or backup.status != JobStatus.IN_PROGRESS:
        if outcome.written is not None:
            _discard(plan.key)
        return backup
    ds = db.get(DataSource, backup.data_source_id)
    if ds is None:
        return backup
    now = utcnow()
    backup.completed_at = now
    backup.heartbeat_at = now
    if outcome.status == JobStatus.COMPLETED and outcome.written is not None:
        written = outcome.written
        backup.status = JobStatus.COMPLETED
        backup.location = plan.key
        backup.size_bytes = written.size
        backup.original_size_bytes = written.original_size
        backup.bytes_processed = written.original_size
        backup.checksum_sha256 = written.checksum_sha256
        backup.progress = 100.0
        backup.meta = outcome.meta
        ds.last_backup = now
        events.backup_finished(db, backup=backup, ds=ds)
    elif outcome.status == JobStatus.CANCELLED:
        backup.status = JobStatus.CANCELLED
        backup.error_message = outcome.error or "Cancelled"
        events.backup_finished(db, backup=backup, ds=ds)
    else:
        fail(db, backup=backup, ds=ds, message=outcome.error or "unknown error")
    return backup


def on_reaped(db: Session, row: Any) -> None:
    """The reaper found a run whose worker died: drop what it may have left, then tell users."""
    backup: Backup = row
    key = artifact_key(backup.data_source_id, backup.id, _engine_of(db, backup))
    try:
        store = get_store()
        store.discard_partial(key)
        store.delete(key)  # stored just before the worker died, never recorded: not trustworthy
    except Exception:
        log.exception("reaped_backup_cleanup_failed", backup_id=backup.id)
    ds = db.get(DataSource, backup.data_source_id)
    if ds is not None:
        events.backup_finished(db, backup=backup, ds=ds)


def _engine_of(db: Session, backup: Backup) -> str:
    ds = db.get(DataSource, backup.data_source_id)
    return ds.source_type if ds is not None else "postgresql"
