"""Verification of a stored backup, end to end: checksum, decryption, decompression and the dump's
table of contents, read back exactly as a restore would. `status` stays `completed`; the verdict
goes to `verification_status`, `verified_at` and `verification_error`."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog
from pyrage import x25519
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups import events, keys, pipeline
from sourcekeeper.backups.models import Backup
from sourcekeeper.backups.service import user_message
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.db import utcnow
from sourcekeeper.core.errors import AppError, NotCompleted
from sourcekeeper.datasources import service as datasources_service
from sourcekeeper.datasources.connectors.base import Connector
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.jobs.queue import enqueue_after_commit
from sourcekeeper.jobs.state import JobStatus
from sourcekeeper.storage.service import get_store

log = structlog.get_logger("sourcekeeper.backups.verify")


def spool_dir(name: str) -> Path:
    """A fresh private (0700) directory under DATA_DIR/spool for one job's temporary files."""
    root = get_settings().resolved_data_dir / "spool"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = root / name
    shutil.rmtree(path, ignore_errors=True)  # what a crashed attempt of the same job left
    path.mkdir(mode=0o700)
    return path


def request(db: Session, *, backup: Backup, actor: str) -> Backup:
    """Queue a verification of a completed backup."""
    if backup.status != JobStatus.COMPLETED or not backup.location:
        raise NotCompleted(
            f"Backup {backup.id} is {backup.status}; only completed backups can be verified"
        )
    audit.record(
        db,
        actor=actor,
        action="backup.verify_requested",
        target=f"backup:{backup.id}",
        data_source_id=backup.data_source_id,
        details={"backup_id": backup.id},
    )
    enqueue_after_commit(db, "backups.verify", backup_id=backup.id, actor=actor)
    return backup


@dataclass(frozen=True)
class VerifyPlan:
    backup_id: int
    actor: str
    connector: type[Connector]
    key: str
    checksum_sha256: str
    original_size: int | None
    identities: list[x25519.Identity]
    recorded_tables: list[str] | None


@dataclass(frozen=True)
class VerifyOutcome:
    ok: bool
    error: str | None = None
    tables: int = 0


def begin(db: Session, *, backup_id: int, actor: str) -> VerifyPlan | None:
    """Read what verification needs; None (with the verdict recorded) when it cannot start."""
    backup = db.get(Backup, backup_id)
    if backup is None or backup.status != JobStatus.COMPLETED or not backup.location:
        return None
    ds = db.get(DataSource, backup.data_source_id)
    if ds is None:
        return None
    try:
        identities = keys.identities(db)
        connector = type(datasources_service.connector_for(ds))
    except AppError as exc:
        _record(
            db, backup=backup, ds=ds, actor=actor, outcome=VerifyOutcome(False, user_message(exc))
        )
        return None
    counts = (backup.meta or {}).get("row_counts")
    return VerifyPlan(
        backup_id=backup.id,
        actor=actor,
        connector=connector,
        key=backup.location,
        checksum_sha256=backup.checksum_sha256 or "",
        original_size=backup.original_size_bytes,
        identities=identities,
        recorded_tables=sorted(counts) if counts is not None else None,
    )


def execute(plan: VerifyPlan) -> VerifyOutcome:
    """Fetch and hash, decrypt, decompress to the end, and list the dump's tables."""
    spool = spool_dir(f"verify-{plan.backup_id}-{secrets.token_hex(4)}")
    stop = threading.Event()
    counters = pipeline.Counters()
    try:
        artifact = spool / "artifact.age"
        pipeline.fetch_verified(
            get_store().open(plan.key), artifact, plan.checksum_sha256, counters=counters, stop=stop
        )
        with pipeline.open_plain(
            artifact,
            plan.identities,
            expected_size=plan.original_size,
            counters=counters,
            stop=stop,
        ) as plain:
            tables = plan.connector.toc(plain)
            pipeline.drain(plain)  # the TOC may come first: read on, so every check runs
        if plan.recorded_tables is not None:
            missing = sorted(set(plan.recorded_tables) - set(tables))
            if missing:
                return VerifyOutcome(
                    False,
                    "the dump lacks tables that existed at backup time: " + ", ".join(missing[:20]),
                    len(tables),
                )
        return VerifyOutcome(True, None, len(tables))
    except Exception as exc:
        if not isinstance(exc, AppError | pipeline.PipelineError):
            log.exception("verify_failed_unexpectedly", backup_id=plan.backup_id)
        return VerifyOutcome(False, user_message(exc))
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _record(
    db: Session, *, backup: Backup, ds: DataSource, actor: str, outcome: VerifyOutcome
) -> None:
    backup.verification_status = "verified" if outcome.ok else "failed"
    backup.verified_at = utcnow()
    backup.verification_error = outcome.error
    events.verification_finished(db, backup=backup, ds=ds, actor=actor)


def finish(db: Session, *, plan: VerifyPlan, outcome: VerifyOutcome) -> None:
    """Store the verdict (the backup may have been deleted meanwhile: then nothing to do)."""
    backup = db.get(Backup, plan.backup_id)
    if backup is None or backup.status != JobStatus.COMPLETED:
        return
    ds = db.get(DataSource, backup.data_source_id)
    if ds is not None:
        _record(db, backup=backup, ds=ds, actor=plan.actor, outcome=outcome)


def remove_spools(prefix: str) -> None:
    """Remove the spool directories a dead worker left (e.g. `restore-12`)."""
    root = get_settings().resolved_data_dir / "spool"
    if not root.is_dir():
        return
    for entry in os.scandir(root):
        if entry.name == prefix or entry.name.startswith(prefix + "-"):
            shutil.rmtree(entry.path, ignore_errors=True)
