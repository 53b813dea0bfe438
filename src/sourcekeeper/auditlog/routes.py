"""GET /api/audit-log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sourcekeeper.auditlog import service as audit
from sourcekeeper.auditlog.schemas import AuditEventList, AuditEventRead
from sourcekeeper.auth.deps import DbSession, require
from sourcekeeper.auth.service import Principal
from sourcekeeper.core.envelope import COMMON_ERRORS, Envelope, ok
from sourcekeeper.core.pagination import PageParams
from sourcekeeper.core.params import MAX_ID
from sourcekeeper.core.permissions import Perm

router = APIRouter(prefix="/api/audit-log", tags=["audit-log"], responses=COMMON_ERRORS)
AuditViewer = Annotated[Principal, Depends(require(Perm.AUDITLOG_VIEW))]


@router.get("")
def list_audit_events(
    db: DbSession,
    _: AuditViewer,
    page: Annotated[PageParams, Query()],
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=150)] = None,
    data_source_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    outcome: Annotated[str | None, Query(max_length=16)] = None,
    since: datetime | None = None,
) -> Envelope[AuditEventList]:
    """Who did what, from where, with what outcome; newest first."""
    events, total = audit.list_events(
        db,
        page=page,
        action=action,
        actor=actor,
        data_source_id=data_source_id,
        outcome=outcome,
        since=since,
    )
    return ok(
        AuditEventList(events=[AuditEventRead.model_validate(e) for e in events], total=total)
    )
