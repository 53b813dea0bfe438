"""Access control of a data source: the platform's grants (and, with the audit issue, the
database's).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends

from sourcekeeper.auth import service as auth_service
from sourcekeeper.auth.deps import CurrentUser, DbSession
from sourcekeeper.auth.models import DataSourceGrant
from sourcekeeper.auth.schemas import GrantCreate, GrantOut, GrantRead, GrantUpdate
from sourcekeeper.core.envelope import COMMON_ERRORS, Deleted, Envelope, ok
from sourcekeeper.core.errors import NotFound
from sourcekeeper.core.params import PathId
from sourcekeeper.core.permissions import Perm
from sourcekeeper.datasources.deps import authorize_source, data_source_for
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.security.schemas import AccessControlReply

router = APIRouter(tags=["access-control"], responses=COMMON_ERRORS)
# These routes find their source in the body or the grant, so they state their rule here.
_MANAGE = {"x-permission": Perm.ACCESS_CONTROL_MANAGE.value}
AccessViewer = Annotated[DataSource, Depends(data_source_for(Perm.ACCESS_CONTROL_VIEW))]


def _read(grant: DataSourceGrant, username: str, email: str | None) -> GrantRead:
    return GrantRead(
        id=grant.id,
        data_source_id=grant.data_source_id,
        user_id=grant.user_id,
        username=username,
        email=email,
        role=grant.role,
        permissions=list(grant.permissions),
        granted_at=grant.granted_at,
        granted_by=grant.granted_by,
        expires_at=grant.expires_at,
        status=auth_service.grant_status(grant),  # type: ignore[arg-type]
    )


def _grant_read(db: DbSession, grant: DataSourceGrant) -> GrantRead:
    user = auth_service.get_user(db, grant.user_id)
    return _read(grant, user.username, user.email)


def _managed_grant(db: DbSession, user: CurrentUser, grant_id: int) -> DataSourceGrant:
    """The grant, if the caller may manage access on its source (else 404/403 as for the source)."""
    grant = db.get(DataSourceGrant, grant_id)
    if grant is None:
        raise NotFound(f"Grant {grant_id} does not exist")
    try:
        authorize_source(db, user, grant.data_source_id, Perm.ACCESS_CONTROL_MANAGE)
    except NotFound:
        raise NotFound(f"Grant {grant_id} does not exist") from None
    return grant


for prefix in ("/scan/data-sources", "/api/data-sources"):

    @router.get(
        f"{prefix}/{{data_source_id}}/access-control", include_in_schema=prefix.startswith("/scan")
    )
    def get_access_control(db: DbSession, ds: AccessViewer) -> AccessControlReply:
        """The platform's grants on the source, with a summary by status and role."""
        grants = [_read(g, u.username, u.email) for g, u in auth_service.list_grants(db, ds.id)]
        status = Counter(g.status for g in grants)
        summary = {
            "total_grants": len(grants),
            "active_grants": status.get("active", 0),
            "expired_grants": status.get("expired", 0),
            "revoked_grants": status.get("revoked", 0),
            "by_role": dict(Counter(g.role for g in grants if g.status == "active")),
        }
        return AccessControlReply(
            data=grants, database_access=None, summary=summary, data_source_id=ds.id
        )

    @router.post(
        f"{prefix}/access-control",
        status_code=201,
        openapi_extra=_MANAGE,
        include_in_schema=prefix.startswith("/scan"),
    )
    def create_grant(db: DbSession, user: CurrentUser, body: GrantCreate) -> Envelope[GrantOut]:
        """Grant a user a role (and permission flags) on a source."""
        authorize_source(db, user, body.data_source_id, Perm.ACCESS_CONTROL_MANAGE)
        grant = auth_service.create_grant(db, data=body, actor=user.username)
        return ok(GrantOut(grant=_grant_read(db, grant)))

    @router.put(
        f"{prefix}/access-control/{{grant_id}}",
        openapi_extra=_MANAGE,
        include_in_schema=prefix.startswith("/scan"),
    )
    def update_grant(
        db: DbSession, user: CurrentUser, grant_id: PathId, body: GrantUpdate
    ) -> Envelope[GrantOut]:
        grant = _managed_grant(db, user, grant_id)
        grant = auth_service.update_grant(db, grant=grant, data=body, actor=user.username)
        return ok(GrantOut(grant=_grant_read(db, grant)))

    @router.delete(
        f"{prefix}/access-control/{{grant_id}}",
        openapi_extra=_MANAGE,
        include_in_schema=prefix.startswith("/scan"),
    )
    def revoke_grant(db: DbSession, user: CurrentUser, grant_id: PathId) -> Envelope[Deleted]:
        """Revoke the grant (it stays listed with status `revoked`)."""
        auth_service.revoke_grant(db, grant=_managed_grant(db, user, grant_id), actor=user.username)
        return ok(Deleted(id=grant_id))
