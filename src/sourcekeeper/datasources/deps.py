"""Load a data source from the path and decide, in one place, whether the caller may act on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.auth import service as auth_service
from sourcekeeper.auth.deps import CurrentUser, DbSession, deny
from sourcekeeper.auth.service import Principal
from sourcekeeper.core.errors import NotFound
from sourcekeeper.core.params import MAX_ID
from sourcekeeper.core.permissions import Perm
from sourcekeeper.datasources import service as datasources_service
from sourcekeeper.datasources.models import DataSource

SourceId = Annotated[int, Path(ge=1, le=MAX_ID, description="Data source id")]


def authorize_source(
    db: Session, principal: Principal, data_source_id: int, perm: Perm
) -> DataSource:
    """404 when the source is missing or not granted to the caller (its existence stays hidden);
    403 naming the permission when granted without it."""
    ds = datasources_service.get(db, data_source_id)
    perms = auth_service.source_access(db, principal, data_source_id) if ds else None
    if ds is None or perms is None:
        if ds is not None:
            audit.record_regardless(
                db,
                actor=principal.username,
                action="access.denied",
                outcome="denied",
                data_source_id=data_source_id,
                target=perm,
                details={"permission": perm, "reason": "no_grant"},
            )
        raise NotFound(f"Data source {data_source_id} does not exist")
    if perm not in perms:
        raise deny(db, principal, perm, data_source_id)
    return ds


def data_source_for(perm: Perm) -> Callable[..., DataSource]:
    """Dependency factory: the path's data source, if the caller holds `perm` on it."""

    def dependency(data_source_id: SourceId, db: DbSession, user: CurrentUser) -> DataSource:
        return authorize_source(db, user, data_source_id, perm)

    dependency.__name__ = f"data_source_with_{perm.value.replace('.', '_')}"
    dependency.permission = perm  # type: ignore[attr-defined]  # read by the authz matrix test
    return dependency


SourceViewer = Annotated[DataSource, Depends(data_source_for(Perm.DATASOURCE_VIEW))]
SourceManager = Annotated[DataSource, Depends(data_source_for(Perm.DATASOURCE_MANAGE))]
SourceDeleter = Annotated[DataSource, Depends(data_source_for(Perm.DATASOURCE_DELETE))]
