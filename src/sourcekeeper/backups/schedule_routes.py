"""/api/data-sources/{data_source_id}/backup-schedules (API.md §3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from sourcekeeper.auth.deps import CurrentUser, DbSession
from sourcekeeper.backups import schedules as schedules_service
from sourcekeeper.backups.schedule_schemas import (
    BackupScheduleCreate,
    BackupScheduleList,
    BackupScheduleOut,
    BackupScheduleUpdate,
)
from sourcekeeper.core.envelope import COMMON_ERRORS, Deleted, Envelope, ok
from sourcekeeper.core.params import PathId
from sourcekeeper.core.permissions import Perm
from sourcekeeper.datasources.deps import data_source_for
from sourcekeeper.datasources.models import DataSource

router = APIRouter(
    prefix="/api/data-sources/{data_source_id}/backup-schedules",
    tags=["backup-schedules"],
    responses=COMMON_ERRORS,
)
ScheduleViewer = Annotated[DataSource, Depends(data_source_for(Perm.BACKUP_VIEW))]
ScheduleManager = Annotated[DataSource, Depends(data_source_for(Perm.BACKUP_SCHEDULE))]


@router.get("")
def list_backup_schedules(db: DbSession, ds: ScheduleViewer) -> Envelope[BackupScheduleList]:
    """The source's backup schedules with their next and last runs (UTC)."""
    items = schedules_service.list_schedules(db, data_source=ds)
    return ok(BackupScheduleList(schedules=schedules_service.present(db, items)))


@router.post("", status_code=201)
def create_backup_schedule(
    db: DbSession, user: CurrentUser, ds: ScheduleManager, body: BackupScheduleCreate
) -> Envelope[BackupScheduleOut]:
    """Add a cron schedule (evaluated in its IANA time zone); 422 names a bad cron or time zone."""
    schedule = schedules_service.create(db, data_source=ds, data=body, actor=user.username)
    return ok(BackupScheduleOut(schedule=schedules_service.present(db, [schedule])[0]))


@router.put("/{schedule_id}")
def update_backup_schedule(
    db: DbSession,
    user: CurrentUser,
    ds: ScheduleManager,
    schedule_id: PathId,
    body: BackupScheduleUpdate,
) -> Envelope[BackupScheduleOut]:
    """Change any subset of the fields; next_run is recomputed."""
    schedule = schedules_service.get_or_404(db, data_source=ds, schedule_id=schedule_id)
    schedule = schedules_service.update_schedule(
        db, schedule=schedule, data_source=ds, data=body, actor=user.username
    )
    return ok(BackupScheduleOut(schedule=schedules_service.present(db, [schedule])[0]))


@router.delete("/{schedule_id}")
def delete_backup_schedule(
    db: DbSession, user: CurrentUser, ds: ScheduleManager, schedule_id: PathId
) -> Envelope[Deleted]:
    """Remove the schedule; backups it already made are kept."""
    schedule = schedules_service.get_or_404(db, data_source=ds, schedule_id=schedule_id)
    schedules_service.delete(db, schedule=schedule, actor=user.username)
    return ok(Deleted(id=schedule_id))
