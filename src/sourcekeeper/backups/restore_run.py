"""One restore run: `begin_run` marks it running and creates its safety backup row when it
overwrites a database, `execute` fetches, checks, decrypts, decompresses and loads the dump with no
session held, `finish_run` records the outcome and tells users."""

from __future__ import annotations

import os
import shutil
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import structlog
from pyrage import x25519
from sqlalchemy import select
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups import events, keys, pipeline
from sourcekeeper.backups import service as backups_service
from sourcekeeper.backups.models import Backup, Restore
from sourcekeeper.backups.run import Tick
from sourcekeeper.backups.schemas import RestoreTarget
from sourcekeeper.backups.verify import remove_spools, spool_dir
from sourcekeeper.core.db import utcnow
from sourcekeeper.core.errors import AppError, NotCompleted, NotFound, TargetExists
from sourcekeeper.datasources import service as datasources_service
from sourcekeeper.datasources.connectors.base import Connector
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.jobs import state as job_state
from sourcekeeper.jobs.state import JobStatus
from sourcekeeper.storage.service import get_store

log = structlog.get_logger("sourcekeeper.restores")

# pg_restore -j needs a seekable file, i.e. the plain dump written to disk first. Measured here
# (2 cores, one 412 MB table) that spooling cost more than -j 2 won back, so it is used only for
# big dumps of several tables with cores to spare; otherwise the dump streams straight in.
PARALLEL_MIN_BYTES = 1024 * 1024 * 1024
PARALLEL_JOBS = max(1, min(4, (os.cpu_count() or 1) // 2))


@dataclass(frozen=True)
class RestorePlan:
    restore_id: int
    engine: str
    connector: Connector  # the target source's
    key: str
    checksum_sha256: str
    original_size: int | None
    identities: list[x25519.Identity]
    target: RestoreTarget
    target_database: str | None
    target_label: str
    tables: list[str] | None
    clean: bool
    verify: bool
    recorded_counts: dict[str, int] | None
    safety_backup_id: int | None


@dataclass
class RestoreOutcome:
    status: JobStatus
    error: str | None = None
    verification: dict[str, Any] | None = None
    artifact_damaged: bool = False
    notes: list[str] = field(default_factory=list)


def _label(target: str, ds: DataSource, target_ds: DataSource, database: str | None) -> str:
    if target == RestoreTarget.NEW:
        return f"new database '{database}' of '{target_ds.name}'"
    if target == RestoreTarget.SOURCE:
        return f"data source '{target_ds.name}'"
    return f"the original database of '{ds.name}'"


def begin_run(db: Session, *, restore_id: int) -> RestorePlan | None:
    """Mark the restore running, create its safety backup row when it overwrites a database,
    and gather what the run needs; None when there is nothing to run."""
    restore = db.get(Restore, restore_id)
    if restore is None or restore.status != JobStatus.SCHEDULED:
        return None
    ds = db.get(DataSource, restore.data_source_id)
    if ds is None:
        return None
    now = utcnow()
    restore.status = JobStatus.IN_PROGRESS
    restore.started_at = now
    restore.heartbeat_at = now
    restore.progress = 0.0
    backup = db.get(Backup, restore.backup_id) if restore.backup_id else None
    target_ds = (
        db.get(DataSource, restore.target_data_source_id) if restore.target_data_source_id else ds
    )
    try:
        if backup is None or backup.status != JobStatus.COMPLETED or not backup.location:
            raise NotCompleted("the backup was deleted or is no longer complete")
        if target_ds is None:
            raise NotFound("the target data source was deleted")
        identities = keys.identities(db)
        connector = datasources_service.connector_for(target_ds)
    except AppError as exc:
        failed = RestoreOutcome(JobStatus.FAILED, backups_service.user_message(exc))
        _finish(db, restore, ds, failed, label=f"'{ds.name}'")
        return None
    if restore.target in (RestoreTarget.ORIGINAL, RestoreTarget.SOURCE):
        safety = backups_service.new_backup(
            db,
            data_source=target_ds,
            actor=restore.created_by,
            trigger="pre_restore",
            name=f"Before restore {restore.id} ({utcnow():%Y-%m-%d %H:%M})",
            description=f"Taken automatically before restoring backup {backup.id}",
        )
        restore.safety_backup_id = safety.id
        audit.record(
            db,
            actor=restore.created_by,
            action="backup.started",
            target=f"backup:{safety.id}",
            data_source_id=target_ds.id,
            details={"backup_id": safety.id, "trigger": "pre_restore", "restore_id": restore.id},
        )
    return RestorePlan(
        restore_id=restore.id,
        engine=ds.source_type,
        connector=connector,
        key=backup.location,
        checksum_sha256=backup.checksum_sha256 or "",
        original_size=backup.original_size_bytes,
        identities=identities,
        target=RestoreTarget(restore.target),
        target_database=restore.target_database,
        target_label=_label(restore.target, ds, target_ds, restore.target_database),
        tables=restore.tables,
        clean=restore.clean,
        verify=restore.verify,
        recorded_counts=(backup.meta or {}).get("row_counts"),
        safety_backup_id=restore.safety_backup_id,
    )


def record_heartbeat(db: Session, *, plan: RestorePlan, counters: pipeline.Counters) -> bool:
    """Store progress and the heartbeat; True when the run must stop (cancelled or reaped)."""
    progress = 0.0
    if plan.original_size:
        progress = min(99.0, round(counters.plain_bytes * 100 / plan.original_size, 1))
    return job_state.beat(
        db, Restore, plan.restore_id, bytes_processed=counters.plain_bytes, progress=progress
    )


def compare_counts(
    recorded: dict[str, int], actual: dict[str, int], tables: list[str] | None
) -> dict[str, Any]:
    """Row counts after the restore against those recorded at backup time."""
    names = tables or sorted(recorded)
    mismatches = [
        {"table": t, "expected": recorded.get(t), "actual": actual.get(t)}
        for t in names
        if recorded.get(t) != actual.get(t)
    ]
    return {
        "tables_checked": len(names),
        "row_counts_match": not mismatches,
        "mismatches": mismatches,
    }


def execute(plan: RestorePlan, *, tick: Tick) -> RestoreOutcome:
    """Fetch → checksum → decrypt → decompress → restore → count, with no session held."""
    counters = pipeline.Counters()
    monitor = pipeline.Monitor(lambda: tick(counters))
    spool = spool_dir(f"restore-{plan.restore_id}")
    connector, database = plan.connector, plan.target_database
    created = touched = False
    try:
        with monitor:
            artifact = spool / "artifact.age"
            pipeline.fetch_verified(
                get_store().open(plan.key),
                artifact,
                plan.checksum_sha256,
                counters=counters,
                stop=monitor.stop,
            )
            with pipeline.open_plain(
                artifact,
                plan.identities,
                expected_size=plan.original_size,
                counters=counters,
                stop=monitor.stop,
            ) as plain:
                plain.peek(1)  # decrypts the header: a wrong key fails before the target is touched
                if plan.target == RestoreTarget.NEW and database is not None:
                    if connector.database_exists(database):
                        raise TargetExists(f"database '{database}' appeared meanwhile")
                    if plan.engine != "sqlite":  # SQLite's restore moves the new file into place
                        connector.create_database(database)
                    created = True
                touched = True
                parallel = (
                    plan.engine == "postgresql"
                    and PARALLEL_JOBS > 1
                    and (plan.original_size or 0) >= PARALLEL_MIN_BYTES
                    and len(plan.tables or plan.recorded_counts or ()) > 1
                )
                if parallel:
                    dump_file = spool / "dump"
                    pipeline.spool_plain(plain, dump_file)
                    connector.restore_file(
                        dump_file,
                        database=database,
                        tables=plan.tables,
                        clean=plan.clean,
                        jobs=PARALLEL_JOBS,
                        cancel=monitor.stop,
                    )
                else:
                    connector.restore(
                        plain,
                        database=database,
                        tables=plan.tables,
                        clean=plan.clean,
                        cancel=monitor.stop,
                    )
                    pipeline.drain(plain)  # a tool may stop reading early; the end checks must run
            if monitor.stop.is_set():
                raise pipeline.Cancelled()
            verification = None
            if plan.verify and plan.recorded_counts is not None:
                target = connector.for_database(database) if database else connector
                verification = compare_counts(
                    plan.recorded_counts, target.table_row_counts(), plan.tables
                )
    except Exception as exc:
        if created:
            with suppress(Exception):
                connector.drop_database(database or "")
        if monitor.stop.is_set() or isinstance(exc, pipeline.Cancelled):
            return RestoreOutcome(JobStatus.CANCELLED, "Cancelled")
        if not isinstance(exc, AppError | pipeline.PipelineError):
            log.exception("restore_failed_unexpectedly", restore_id=plan.restore_id)
        message = backups_service.user_message(exc)
        if not touched:
            message += "; the target was not touched"
        elif created:
            message += f"; the new database '{database}' was removed again"
        elif plan.safety_backup_id is not None:
            message += (
                f"; safety backup {plan.safety_backup_id} holds the target as it was "
                "before the restore"
            )
        damaged = isinstance(exc, pipeline.ChecksumMismatch | pipeline.ArtifactUnreadable)
        return RestoreOutcome(JobStatus.FAILED, message, artifact_damaged=damaged)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    return RestoreOutcome(JobStatus.COMPLETED, verification=verification)


def _finish(
    db: Session, restore: Restore, ds: DataSource, outcome: RestoreOutcome, label: str
) -> None:
    now = utcnow()
    restore.completed_at = now
    restore.heartbeat_at = now
    restore.started_at = restore.started_at or now
    restore.status = outcome.status
    if outcome.status == JobStatus.COMPLETED:
        restore.progress = 100.0
        restore.verification = outcome.verification
        restore.verified = (
            bool(outcome.verification["row_counts_match"])
            if outcome.verification is not None
            else None
        )
    else:
        restore.error_message = outcome.error
    events.restore_finished(db, restore=restore, ds=ds, target_name=label)


def finish_run(db: Session, *, plan: RestorePlan, outcome: RestoreOutcome) -> None:
    """Record the outcome unless the restore was cancelled or reaped meanwhile."""
    restore = db.scalar(select(Restore).where(Restore.id == plan.restore_id).with_for_update())
    if restore is None or restore.status != JobStatus.IN_PROGRESS:
        return
    ds = db.get(DataSource, restore.data_source_id)
    if ds is None:
        return
    if outcome.artifact_damaged and restore.backup_id is not None:
        backup = db.get(Backup, restore.backup_id)
        if backup is not None:
            backup.verification_status = "failed"
            backup.verified_at = utcnow()
            backup.verification_error = outcome.error
    _finish(db, restore, ds, outcome, plan.target_label)


def fail_before_restore(db: Session, *, plan: RestorePlan, message: str) -> None:
    """The safety backup did not succeed: the restore fails and the target stays as it is."""
    finish_run(
        db,
        plan=plan,
        outcome=RestoreOutcome(
            JobStatus.FAILED, f"the safety backup failed ({message}); the target was not touched"
        ),
    )


def on_reaped(db: Session, row: Any) -> None:
    """The reaper found a restore whose worker died: drop its spool, tell users."""
    restore: Restore = row
    remove_spools(f"restore-{restore.id}")
    ds = db.get(DataSource, restore.data_source_id)
    if ds is not None:
        events.restore_finished(db, restore=restore, ds=ds, target_name=f"'{ds.name}'")
