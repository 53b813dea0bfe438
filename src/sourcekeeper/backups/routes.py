"""Backups and restores of one data source (API.md §3), under /api/data-sources/{data_source_id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import StreamingResponse

from sourcekeeper.auth.deps import CurrentUser, DbSession
from sourcekeeper.backups import restores, stats, verify
from sourcekeeper.backups import service as backups_service
from sourcekeeper.backups.schemas import (
    BackupCreate,
    BackupList,
    BackupOut,
    BackupRead,
    BackupStatus,
    BackupStatusRead,
    RestoreCreate,
    RestoreList,
    RestoreOut,
    RestoreRead,
    RestoreStatus,
)
from sourcekeeper.core.envelope import COMMON_ERRORS, Deleted, Envelope, ok
from sourcekeeper.core.pagination import PageParams
from sourcekeeper.core.params import PathId
from sourcekeeper.core.permissions import Perm
from sourcekeeper.datasources.deps import authorize_source, data_source_for
from sourcekeeper.datasources.models import DataSource

router = APIRouter(
    prefix="/api/data-sources/{data_source_id}", tags=["backups"], responses=COMMON_ERRORS
)

BackupViewer = Annotated[DataSource, Depends(data_source_for(Perm.BACKUP_VIEW))]
BackupCreator = Annotated[DataSource, Depends(data_source_for(Perm.BACKUP_CREATE))]
BackupRestorer = Annotated[DataSource, Depends(data_source_for(Perm.BACKUP_RESTORE))]
BackupDeleter = Annotated[DataSource, Depends(data_source_for(Perm.BACKUP_DELETE))]


@router.get("/backup-status")
def get_backup_status(db: DbSession, ds: BackupViewer) -> Envelope[BackupStatusRead]:
    """Recent backups (newest first, at most 50), statistics, the next scheduled run, and a
    health verdict with its reasons: `critical` when no backup succeeded within twice the
    schedule interval (48 hours without a schedule)."""
    return ok(stats.status(db, ds=ds))


@router.get("/backups")
def list_backups(
    db: DbSession,
    ds: BackupViewer,
    page: Annotated[PageParams, Query()],
    status: BackupStatus | None = None,
) -> Envelope[BackupList]:
    """The source's backups, newest first."""
    items, total = backups_service.list_backups(db, ds=ds, page=page, status=status)
    return ok(BackupList(backups=[BackupRead.of(b) for b in items], total=total))


@router.post("/backups", status_code=202)
def start_backup(
    db: DbSession,
    user: CurrentUser,
    ds: BackupCreator,
    body: Annotated[BackupCreate | None, Body()] = None,
) -> Envelope[BackupOut]:
    """Queue a full backup (status `scheduled`); 409 `backup_in_progress` if one is queued or
    running. Every body field may be null: name "Backup YYYY-MM-DD HH:MM", type "full",
    retention 30 days."""
    backup = backups_service.start(db, data_source=ds, data=body, actor=user.username)
    return ok(BackupOut(backup=BackupRead.of(backup)))


@router.get("/backups/{backup_id}")
def get_backup(db: DbSession, ds: BackupViewer, backup_id: PathId) -> Envelope[BackupOut]:
    backup = backups_service.get_or_404(db, ds=ds, backup_id=backup_id)
    return ok(BackupOut(backup=BackupRead.of(backup)))


@router.post("/backups/{backup_id}/cancel")
def cancel_backup(
    db: DbSession, user: CurrentUser, ds: BackupCreator, backup_id: PathId
) -> Envelope[BackupOut]:
    """Cancel at once (status `cancelled`); the worker kills the dump within seconds and removes
    partial output. 409 `already_finished` otherwise."""
    backup = backups_service.get_or_404(db, ds=ds, backup_id=backup_id)
    backup = backups_service.cancel(db, backup=backup, actor=user.username)
    return ok(BackupOut(backup=BackupRead.of(backup)))


@router.delete("/backups/{backup_id}")
def delete_backup(
    db: DbSession, user: CurrentUser, ds: BackupDeleter, backup_id: PathId
) -> Envelope[Deleted]:
    """Delete the backup and its stored artifact; 409 while it is queued or running."""
    backup = backups_service.get_or_404(db, ds=ds, backup_id=backup_id)
    backups_service.delete(db, backup=backup, actor=user.username)
    return ok(Deleted(id=backup_id))


@router.post("/backups/{backup_id}/verify", status_code=202)
def verify_backup(
    db: DbSession, user: CurrentUser, ds: BackupCreator, backup_id: PathId
) -> Envelope[BackupOut]:
    """Re-read the artifact end to end (checksum, decryption, decompression, the dump's table of
    contents); the verdict lands in `verification_status`, `verified_at`, `verification_error`.
    409 `not_completed` unless the backup completed."""
    backup = backups_service.get_or_404(db, ds=ds, backup_id=backup_id)
    backup = verify.request(db, backup=backup, actor=user.username)
    return ok(BackupOut(backup=BackupRead.of(backup)))


@router.get(
    "/backups/{backup_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The encrypted artifact (age, then zstd inside)",
        }
    },
)
def download_backup(
    db: DbSession, user: CurrentUser, ds: BackupRestorer, backup_id: PathId
) -> StreamingResponse:
    """The stored artifact as it is: age-encrypted, zstd-compressed. Opening it takes the age
    identity (`age -d -i key | zstd -dc`). Needs `backup.restore`, like restoring it."""
    backup = backups_service.get_or_404(db, ds=ds, backup_id=backup_id)
    download = backups_service.open_download(db, backup=backup, actor=user.username)
    return StreamingResponse(
        download.chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{download.filename}"',
            "Content-Length": str(download.size),
            "ETag": f'"{backup.checksum_sha256}"',
        },
    )


@router.post("/backups/{backup_id}/restore", status_code=202)
def restore_backup(
    db: DbSession,
    user: CurrentUser,
    ds: BackupRestorer,
    backup_id: PathId,
    body: Annotated[RestoreCreate | None, Body()] = None,
) -> Envelope[RestoreOut]:
    """Queue a restore: onto the original database (after a `pre_restore` safety backup), into a
    new database (`target: "new"`, `target_database`), or onto another source of the same engine
    (`target_data_source_id`, which needs `backup.restore` on that source too)."""
    backup = backups_service.get_or_404(db, ds=ds, backup_id=backup_id)
    target = None
    if body is not None and body.target_data_source_id is not None:
        target = authorize_source(db, user, body.target_data_source_id, Perm.BACKUP_RESTORE)
    restore = restores.start(
        db, backup=backup, ds=ds, data=body, actor=user.username, target_source=target
    )
    return ok(RestoreOut(restore=RestoreRead.of(restore)))


@router.get("/restores")
def list_restores(
    db: DbSession,
    ds: BackupViewer,
    page: Annotated[PageParams, Query()],
    status: RestoreStatus | None = None,
) -> Envelope[RestoreList]:
    """Restores of the source's backups and restores onto it, newest first."""
    items, total = restores.list_restores(db, ds=ds, page=page, status=status)
    return ok(RestoreList(restores=[RestoreRead.of(r) for r in items], total=total))


@router.get("/restores/{restore_id}")
def get_restore(db: DbSession, ds: BackupViewer, restore_id: PathId) -> Envelope[RestoreOut]:
    restore = restores.get_or_404(db, ds=ds, restore_id=restore_id)
    return ok(RestoreOut(restore=RestoreRead.of(restore)))


@router.post("/restores/{restore_id}/cancel")
def cancel_restore(
    db: DbSession, user: CurrentUser, ds: BackupRestorer, restore_id: PathId
) -> Envelope[RestoreOut]:
    """Cancel at once (status `cancelled`); the worker stops the restore tool within seconds.
    409 `already_finished` otherwise."""
    restore = restores.get_or_404(db, ds=ds, restore_id=restore_id)
    restore = restores.cancel(db, restore=restore, actor=user.username)
    return ok(RestoreOut(restore=RestoreRead.of(restore)))
