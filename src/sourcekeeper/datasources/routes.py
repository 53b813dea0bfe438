"""/api/data-sources: registry CRUD and test-connection."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sourcekeeper.auth import service as auth_service
from sourcekeeper.auth.deps import CurrentUser, DbSession, require
from sourcekeeper.auth.service import Principal
from sourcekeeper.backups import service as backups_service
from sourcekeeper.core.envelope import COMMON_ERRORS, Deleted, Envelope, ok
from sourcekeeper.core.pagination import PageParams
from sourcekeeper.core.permissions import Perm
from sourcekeeper.datasources import service as datasources_service
from sourcekeeper.datasources.deps import SourceDeleter, SourceManager, SourceViewer
from sourcekeeper.datasources.schemas import (
    ConnectionTest,
    DataSourceCreate,
    DataSourceList,
    DataSourceOut,
    DataSourceRead,
    DataSourceUpdate,
    Environment,
    SourceStatus,
    SourceType,
)

router = APIRouter(prefix="/api/data-sources", tags=["data-sources"], responses=COMMON_ERRORS)
SourceCreator = Annotated[Principal, Depends(require(Perm.DATASOURCE_CREATE))]


@router.get("")
def list_data_sources(
    db: DbSession,
    user: CurrentUser,
    page: Annotated[PageParams, Query()],
    source_type: SourceType | None = None,
    status: SourceStatus | None = None,
    environment: Environment | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
) -> Envelope[DataSourceList]:
    """Sources the caller may see, newest first."""
    items, total = datasources_service.list_sources(
        db,
        page=page,
        visible_ids=auth_service.visible_source_ids(db, user),
        source_type=source_type,
        status=status,
        environment=environment,
        search=search,
    )
    return ok(
        DataSourceList(data_sources=[DataSourceRead.model_validate(d) for d in items], total=total)
    )


@router.post("", status_code=201)
def create_data_source(
    db: DbSession, user: SourceCreator, body: DataSourceCreate
) -> Envelope[DataSourceOut]:
    """Register a source; its password is stored encrypted and never returned."""
    ds = datasources_service.create(db, data=body, actor=user.user)
    return ok(DataSourceOut(data_source=DataSourceRead.model_validate(ds)))


@router.get("/{data_source_id}")
def get_data_source(ds: SourceViewer) -> Envelope[DataSourceOut]:
    return ok(DataSourceOut(data_source=DataSourceRead.model_validate(ds)))


@router.put("/{data_source_id}")
def update_data_source(
    db: DbSession, user: CurrentUser, ds: SourceManager, body: DataSourceUpdate
) -> Envelope[DataSourceOut]:
    ds = datasources_service.update(db, ds=ds, data=body, actor=user.username)
    return ok(DataSourceOut(data_source=DataSourceRead.model_validate(ds)))


@router.delete("/{data_source_id}")
def delete_data_source(
    db: DbSession, user: CurrentUser, ds: SourceDeleter, delete_backups: bool = False
) -> Envelope[Deleted]:
    """Delete a source; refuses while a job runs, or while it has backups unless
    delete_backups=true.
    """
    source_id = ds.id
    backups_service.prepare_source_deletion(
        db, ds=ds, delete_backups=delete_backups, actor=user.username
    )
    datasources_service.delete(db, ds=ds, actor=user.username)
    return ok(Deleted(id=source_id))


@router.post("/{data_source_id}/test-connection")
def test_connection(
    db: DbSession, user: CurrentUser, ds: SourceManager
) -> Envelope[ConnectionTest]:
    """Connect once and report version, latency and SSL; ok=false with a message when
    unreachable.
    """
    check = datasources_service.test_connection(db, ds=ds, actor=user.username)
    return ok(ConnectionTest.model_validate(check))
