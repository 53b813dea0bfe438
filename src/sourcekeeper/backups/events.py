"""What the outside world hears about a finished backup, restore or verification: one notification
per outcome (category `backup`), an audit event, and the Prometheus counters."""

from __future__ import annotations

from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups.models import Backup, Restore
from sourcekeeper.core.db import after_commit
from sourcekeeper.core.metrics import (
    BACKUP_DURATION,
    BACKUP_SIZE,
    BACKUP_THROUGHPUT,
    BACKUPS,
    RESTORES,
)
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.jobs.state import JobStatus
from sourcekeeper.notifications import service as notifications

CATEGORY = "backup"


def human_size(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _seconds(backup: Backup | Restore) -> float | None:
    if backup.started_at and backup.completed_at:
        return (backup.completed_at - backup.started_at).total_seconds()
    return None


def _backup_url(backup: Backup) -> str:
    return f"/data-sources/{backup.data_source_id}/backups/{backup.id}"


def _restore_url(restore: Restore) -> str:
    return f"/data-sources/{restore.data_source_id}/restores/{restore.id}"


def _priority(ds: DataSource) -> str:
    return "critical" if ds.criticality == "critical" else "high"


def backup_finished(db: Session, *, backup: Backup, ds: DataSource) -> None:
    """Notify, audit and count a backup that reached completed, failed or cancelled."""
    seconds = _seconds(backup)
    engine = ds.source_type
    label = "Safety backup" if backup.trigger == "pre_restore" else "Backup"
    details = {"backup_id": backup.id, "name": backup.name, "trigger": backup.trigger}
    if backup.status == JobStatus.COMPLETED:
        took = f" in {seconds:.0f} s" if seconds is not None else ""
        notifications.emit(
            db,
            event_type="backup.completed",
            category=CATEGORY,
            type="success",
            priority="low",
            title=f"{label} of '{ds.name}' completed",
            message=(
                f"{label} '{backup.name}' finished{took}: {human_size(backup.size_bytes)} "
                f"stored encrypted ({human_size(backup.original_size_bytes)} before "
                "compression)."
            ),
            data_source_id=ds.id,
            action_url=_backup_url(backup),
            tags=["backup", engine],
            metadata={**details, "size_bytes": backup.size_bytes},
        )
        size, original = backup.size_bytes or 0, backup.original_size_bytes or 0

        def count_success() -> None:
            BACKUPS.labels(engine=engine, outcome="completed").inc()
            BACKUP_SIZE.labels(engine=engine).observe(size)
            if seconds is not None:
                BACKUP_DURATION.labels(engine=engine).observe(seconds)
                if seconds > 0:
                    BACKUP_THROUGHPUT.labels(engine=engine).observe(original / seconds)

        after_commit(db, count_success)
        audit.record(
            db,
            actor=backup.created_by,
            action="backup.completed",
            target=f"backup:{backup.id}",
            data_source_id=ds.id,
            details={
                **details,
                "size_bytes": backup.size_bytes,
                "checksum_sha256": backup.checksum_sha256,
            },
        )
        return
    outcome = str(backup.status)
    after_commit(db, lambda: BACKUPS.labels(engine=engine, outcome=outcome).inc())
    audit.record(
        db,
        actor=backup.created_by,
        action=f"backup.{outcome}",
        target=f"backup:{backup.id}",
        data_source_id=ds.id,
        outcome="failure" if outcome == JobStatus.FAILED else "success",
        details={**details, "error": backup.error_message},
    )
    if backup.status == JobStatus.FAILED:
        reason = backup.error_message or "unknown error"
        notifications.emit(
            db,
            event_type="backup.failed",
            category=CATEGORY,
            type="error",
            priority=_priority(ds),
            title=f"{label} of '{ds.name}' failed: {reason}",
            message=f"{label} '{backup.name}' failed: {reason}",
            data_source_id=ds.id,
            action_url=_backup_url(backup),
            tags=["backup", engine],
            metadata=details,
        )


def verification_finished(db: Session, *, backup: Backup, ds: DataSource, actor: str) -> None:
    ok = backup.verification_status == "verified"
    audit.record(
        db,
        actor=actor,
        action="backup.verified",
        target=f"backup:{backup.id}",
        data_source_id=ds.id,
        outcome="success" if ok else "failure",
        details={"backup_id": backup.id, "error": backup.verification_error},
    )
    if not ok:
        notifications.emit(
            db,
            event_type="backup.verification_failed",
            category=CATEGORY,
            type="warning",
            priority=_priority(ds),
            title=f"Backup '{backup.name}' of '{ds.name}' failed verification: "
            f"{backup.verification_error}",
            message=f"Backup '{backup.name}' failed verification: {backup.verification_error}. "
            "Do not rely on it for a restore.",
            data_source_id=ds.id,
            action_url=_backup_url(backup),
            tags=["backup", "verify"],
            metadata={"backup_id": backup.id},
        )


def restore_finished(db: Session, *, restore: Restore, ds: DataSource, target_name: str) -> None:
    """Notify, audit and count a restore that reached completed, failed or cancelled."""
    engine = ds.source_type
    outcome = str(restore.status)
    after_commit(db, lambda: RESTORES.labels(engine=engine, outcome=outcome).inc())
    details = {
        "restore_id": restore.id,
        "backup_id": restore.backup_id,
        "target": restore.target,
        "target_database": restore.target_database,
        "target_data_source_id": restore.target_data_source_id,
        "safety_backup_id": restore.safety_backup_id,
    }
    audit.record(
        db,
        actor=restore.created_by,
        action=f"restore.{outcome}",
        target=f"restore:{restore.id}",
        data_source_id=ds.id,
        outcome="failure" if outcome == JobStatus.FAILED else "success",
        details={**details, "error": restore.error_message, "verified": restore.verified},
    )
    if restore.status == JobStatus.COMPLETED:
        mismatch = restore.verified is False
        title = f"Restore of '{ds.name}' into {target_name} completed"
        message = f"Backup {restore.backup_id} was restored into {target_name}."
        if mismatch:
            title += ", but row counts differ from the backup"
            message += " Row counts differ from those recorded at backup time: check the target."
        elif restore.verified:
            message += " Row counts match those recorded at backup time."
        notifications.emit(
            db,
            event_type="restore.completed",
            category=CATEGORY,
            type="warning" if mismatch else "success",
            priority="high" if mismatch else "medium",
            title=title,
            message=message,
            data_source_id=ds.id,
            action_url=_restore_url(restore),
            tags=["restore", engine],
            metadata=details,
        )
    elif restore.status == JobStatus.FAILED:
        reason = restore.error_message or "unknown error"
        notifications.emit(
            db,
            event_type="restore.failed",
            category=CATEGORY,
            type="error",
            priority=_priority(ds),
            title=f"Restore of '{ds.name}' failed: {reason}",
            message=f"Restoring backup {restore.backup_id} into {target_name} failed: {reason}",
            data_source_id=ds.id,
            action_url=_restore_url(restore),
            tags=["restore", engine],
            metadata=details,
        )
