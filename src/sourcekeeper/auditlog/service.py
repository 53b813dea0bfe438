"""Record and list audit events; every sensitive action of the API and the workers goes through
here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from sourcekeeper.auditlog.models import AuditEvent
from sourcekeeper.core.context import client_ip_var, request_id_var
from sourcekeeper.core.pagination import PageParams, paginate

log = structlog.get_logger("sourcekeeper.audit")

SYSTEM = "System"


def record(
    db: Session,
    *,
    actor: str | None,
    action: str,
    target: str | None = None,
    data_source_id: int | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (it is kept only if the change is)."""
    event = AuditEvent(
        actor=actor or SYSTEM,
        action=action,
        target=target,
        data_source_id=data_source_id,
        outcome=outcome,
        ip=client_ip_var.get(),
        request_id=request_id_var.get(),
        details=details or {},
    )
    db.add(event)
    log.info("audit", action=action, actor=event.actor, target=target, outcome=outcome)
    return event


def list_events(
    db: Session,
    *,
    page: PageParams,
    action: str | None = None,
    actor: str | None = None,
    data_source_id: int | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
) -> tuple[list[AuditEvent], int]:
    """Newest first, filtered."""
    stmt: Select[Any] = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if data_source_id is not None:
        stmt = stmt.where(AuditEvent.data_source_id == data_source_id)
    if outcome:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    return paginate(db, stmt, page)


def count_recent(
    db: Session, *, action: str, since: datetime, target: str | None = None, ip: str | None = None
) -> int:
    """How many matching events happened since a time (login throttling, incident detection)."""
    stmt = (
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.action == action, AuditEvent.at >= since)
    )
    if target is not None:
        stmt = stmt.where(AuditEvent.target == target)
    if ip is not None:
        stmt = stmt.where(AuditEvent.ip == ip)
    return db.scalar(stmt) or 0


def record_regardless(db: Session, **kwargs: Any) -> None:
    """Record in a transaction of its own once `db`'s ends, for events whose request is about to
    fail and roll back (failed logins, denied requests)."""
    from sourcekeeper.core.db import after_close, session_scope

    ip, request_id = client_ip_var.get(), request_id_var.get()

    def write() -> None:
        with session_scope() as own:
            event = record(own, **kwargs)
            event.ip, event.request_id = ip, request_id

    after_close(db, write)
