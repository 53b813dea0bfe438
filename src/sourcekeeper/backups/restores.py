"""Restores of backups: onto the original database (after a `pre_restore` safety backup), into a
new database on the same server, or onto another registered source of the same engine.

Running one lives in `backups.restore_run`: the artifact is fetched and its checksum checked before
anything else, then decrypted (a wrong key fails on the header, still before the target is
touched), decompressed and fed to the engine's restore tool; afterwards the target's row counts are
compared with those recorded at backup time.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.backups.models import Backup, Restore
from sourcekeeper.backups.schemas import RestoreCreate, RestoreTarget
from sourcekeeper.core.db import utcnow
from sourcekeeper.core.errors import (
    AlreadyFinished,
    InvalidInput,
    NotCompleted,
    NotFound,
    RestoreInProgress,
    TargetExists,
)
from sourcekeeper.core.pagination import PageParams, paginate
from sourcekeeper.datasources import service as datasources_service
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.jobs.queue import enqueue_after_commit
from sourcekeeper.jobs.state import ACTIVE, JobStatus

DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FAMILY = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}


# ---- reads -------------------------------------------------------------------------------------


def _involving(ds: DataSource) -> Any:
    return or_(Restore.data_source_id == ds.id, Restore.target_data_source_id == ds.id)


def get_or_404(db: Session, *, ds: DataSource, restore_id: int) -> Restore:
    """A restore of one of the source's backups, or onto the source."""
    restore = db.get(Restore, restore_id)
    if restore is None or ds.id not in (restore.data_source_id, restore.target_data_source_id):
        raise NotFound(f"Restore {restore_id} does not exist for data source {ds.id}")
    return restore


def list_restores(
    db: Session, *, ds: DataSource, page: PageParams, status: str | None = None
) -> tuple[list[Restore], int]:
    """Restores of the source's backups and restores onto it, newest first."""
    stmt: Select[Any] = (
        select(Restore).where(_involving(ds)).order_by(Restore.created_at.desc(), Restore.id.desc())
    )
    if status:
        stmt = stmt.where(Restore.status == status)
    return paginate(db, stmt, page)


# ---- start and cancel --------------------------------------------------------------------------


def _resolve_tables(backup: Backup, engine: str, requested: list[str] | None) -> list[str] | None:
    """Check a table subset against the tables the backup holds; bare PostgreSQL names are
    qualified when exactly one schema has them. An empty list means every table."""
    if not requested:
        return None
    recorded: dict[str, int] | None = (backup.meta or {}).get("row_counts")
    chosen: list[str] = []
    for name in requested:
        if recorded is None or name in recorded:
            resolved = name
        else:
            matches = [
                t
                for t in recorded
                if engine == "postgresql" and "." not in name and t.rpartition(".")[2] == name
            ]
            if len(matches) != 1:
                why = "is ambiguous (" + ", ".join(matches) + ")" if matches else "is not"
                raise InvalidInput(f"Table '{name}' {why} in backup {backup.id}", field="tables")
            resolved = matches[0]
        if resolved not in chosen:
            chosen.append(resolved)
    return chosen


def _target_database(target_ds: DataSource, name: str) -> str:
    if target_ds.source_type == "sqlite":
        try:
            return str(datasources_service.sqlite_path_allowed(name))
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="target_database") from None
    if not DATABASE_NAME.fullmatch(name):
        raise InvalidInput(
            "target_database must be an identifier: a letter or underscore, then up to 62 "
            "letters, digits or underscores",
            field="target_database",
        )
    return name


def start(
    db: Session,
    *,
    backup: Backup,
    ds: DataSource,
    data: RestoreCreate | None,
    actor: str,
    target_source: DataSource | None = None,
) -> Restore:
    """Queue a restore of a completed backup; the caller has checked access to `target_source`."""
    given = (data or RestoreCreate()).given()
    if backup.status != JobStatus.COMPLETED or not backup.location:
        raise NotCompleted(
            f"Backup {backup.id} is {backup.status}; only completed backups can be restored"
        )
    target_ds = target_source or ds
    if _FAMILY[target_ds.source_type] != _FAMILY[ds.source_type]:
        raise InvalidInput(
            f"Backup {backup.id} is a {ds.source_type} dump and data source {target_ds.id} is "
            f"{target_ds.source_type}: a restore target must use the same engine",
            field="target_data_source_id",
        )
    wanted = given.get("target")
    name = given.get("target_database")
    if wanted == "original" and name is not None:
        raise InvalidInput(
            "target_database is only used with target 'new'", field="target_database"
        )
    if wanted == "new" or (wanted is None and name is not None):
        if name is None:
            raise InvalidInput(
                "target_database is required when target is 'new'", field="target_database"
            )
        target, database = RestoreTarget.NEW, _target_database(target_ds, name)
        connector = datasources_service.connector_for(target_ds)
        if connector.database_exists(database):
            raise TargetExists(
                f"Database '{database}' already exists on the server of data source "
                f"{target_ds.id}; choose a new name"
            )
    else:
        target = RestoreTarget.ORIGINAL if target_ds.id == ds.id else RestoreTarget.SOURCE
        database = None
    tables = _resolve_tables(backup, ds.source_type, given.get("tables"))
    busy = db.scalar(
        select(Restore.id).where(
            Restore.status.in_(ACTIVE),
            func.coalesce(Restore.target_data_source_id, Restore.data_source_id) == target_ds.id,
            Restore.target_database.is_(None)
            if database is None
            else Restore.target_database == database,
        )
    )
    if busy is not None:
        raise RestoreInProgress(f"Restore {busy} onto the same target is already queued or running")
    restore = Restore(
        backup_id=backup.id,
        data_source_id=ds.id,
        created_at=utcnow(),
        target=target.value,
        target_database=database,
        target_data_source_id=target_ds.id if target_ds.id != ds.id else None,
        tables=tables,
        clean=given.get("clean", True),
        verify=given.get("verify", True),
        status=JobStatus.SCHEDULED,
        bytes_processed=0,
        created_by=actor or audit.SYSTEM,
    )
    db.add(restore)
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="restore.started",
        target=f"restore:{restore.id}",
        data_source_id=ds.id,
        details={
            "restore_id": restore.id,
            "backup_id": backup.id,
            "target": target,
            "target_database": database,
            "target_data_source_id": target_ds.id,
            "tables": tables,
        },
    )
    enqueue_after_commit(db, "backups.restore", restore_id=restore.id)
    return restore


def cancel(db: Session, *, restore: Restore, actor: str) -> Restore:
    """Mark a queued or running restore cancelled at once; its worker stops the restore tool."""
    if restore.status not in ACTIVE:
        raise AlreadyFinished(f"Restore {restore.id} already finished ({restore.status})")
    restore.status = JobStatus.CANCELLED
    restore.cancel_requested = True
    restore.completed_at = utcnow()
    restore.error_message = f"Cancelled by {actor}"
    audit.record(
        db,
        actor=actor,
        action="restore.cancelled",
        target=f"restore:{restore.id}",
        data_source_id=restore.data_source_id,
        details={"restore_id": restore.id},
    )
    return restore
