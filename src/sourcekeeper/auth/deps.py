"""Route dependencies: who is calling, and may they do this (the one permission checker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.auth import service as auth_service
from sourcekeeper.auth.service import Principal
from sourcekeeper.core.db import session_scope
from sourcekeeper.core.errors import PermissionDenied, Unauthenticated
from sourcekeeper.core.permissions import Perm


def get_db() -> Iterator[Session]:
    with session_scope() as db:
        yield db


# scope="function": commit before the response is sent, so a failed commit is an error reply.
DbSession = Annotated[Session, Depends(get_db, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="Session token or API key")
_cookie = APIKeyCookie(name="session_token", auto_error=False)


def get_current_user(
    request: Request,
    db: DbSession,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    token = bearer.credentials if bearer else cookie
    if not token:
        raise Unauthenticated(
            "Authentication required: send a Bearer token or the session_token cookie"
        )
    principal = auth_service.authenticate(db, token)
    request.state.user = principal.username
    structlog.contextvars.bind_contextvars(user=principal.username)
    return principal


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def deny(
    db: Session, principal: Principal, perm: str, data_source_id: int | None = None
) -> PermissionDenied:
    """Record the denied request and build the 403 that names the missing permission."""
    audit.record_regardless(
        db,
        actor=principal.username,
        action="access.denied",
        outcome="denied",
        data_source_id=data_source_id,
        target=perm,
        details={"permission": perm},
    )
    return PermissionDenied(f"Missing permission: {perm}", [{"permission": perm}])


def require(perm: Perm) -> Callable[[Principal], Principal]:
    """A global permission check (per-source checks live in datasources.deps)."""

    def checker(user: CurrentUser, db: DbSession) -> Principal:
        if perm not in user.permissions:
            raise deny(db, user, perm)
        return user

    checker.__name__ = f"require_{perm.value.replace('.', '_')}"
    checker.permission = perm  # type: ignore[attr-defined]  # read by the authz matrix test
    return checker
