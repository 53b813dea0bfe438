"""Users, login, tokens and API keys, and the per-source grants that decide what a user may do."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.auth.models import AuthToken, DataSourceGrant, User
from sourcekeeper.auth.passwords import hash_password, verify_password
from sourcekeeper.auth.schemas import GrantCreate, GrantUpdate, UserCreate, UserUpdate
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.crypto import hash_token, new_token
from sourcekeeper.core.db import utcnow
from sourcekeeper.core.errors import Conflict, InvalidInput, NotFound, RateLimited, Unauthenticated
from sourcekeeper.core.pagination import PageParams, paginate
from sourcekeeper.core.permissions import Perm, Role, global_permissions, source_permissions


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request: the user plus how they proved it."""

    user: User
    token_id: int
    permissions: frozenset[Perm]

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.ADMIN


# ---- users -------------------------------------------------------------------------------------


def get_user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound(f"User {user_id} does not exist")
    return user


def find_user(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(func.lower(User.username) == username.lower()))


def list_users(db: Session, *, page: PageParams) -> tuple[list[User], int]:
    return paginate(db, select(User).order_by(User.id.desc()), page)


def create_user(db: Session, *, data: UserCreate, actor: str | None) -> User:
    """Create a user (viewer unless a role is given)."""
    if find_user(db, data.username) is not None:
        raise Conflict(f"A user named '{data.username}' already exists")
    user = User(
        username=data.username,
        email=data.email,
        password_hash=hash_password(data.password.get_secret_value()),
        role=data.role or Role.VIEWER,
        is_active=True if data.is_active is None else data.is_active,
    )
    db.add(user)
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="user.created",
        target=f"user:{user.id}",
        details={"username": user.username, "role": user.role},
    )
    return user


def update_user(db: Session, *, user: User, data: UserUpdate, actor: Principal) -> User:
    given = data.given()
    if user.id == actor.user.id and (
        given.get("role", Role.ADMIN) != Role.ADMIN or given.get("is_active") is False
    ):
        raise Conflict("You cannot demote or deactivate yourself")
    if "password" in given:
        user.password_hash = hash_password(given.pop("password").get_secret_value())
        _revoke_all(db, user.id, kind="session")
    for key, value in given.items():
        setattr(user, key, value)
    if given.get("is_active") is False:
        _revoke_all(db, user.id)
    audit.record(
        db,
        actor=actor.username,
        action="user.updated",
        target=f"user:{user.id}",
        details={"fields": sorted(data.given())},
    )
    return user


def delete_user(db: Session, *, user: User, actor: Principal) -> None:
    if user.id == actor.user.id:
        raise Conflict("You cannot delete yourself")
    audit.record(
        db,
        actor=actor.username,
        action="user.deleted",
        target=f"user:{user.id}",
        details={"username": user.username},
    )
    db.delete(user)


def ensure_admin(db: Session) -> str | None:
    """On first start create `admin`; returns the generated password when none was configured."""
    if db.scalar(select(func.count()).select_from(User)):
        return None
    configured = get_settings().admin_password
    password = configured.get_secret_value() if configured else secrets.token_urlsafe(16)
    db.add(
        User(
            username="admin",
            email=None,
            password_hash=hash_password(password),
            role=Role.ADMIN,
            is_active=True,
        )
    )
    audit.record(
        db,
        actor=audit.SYSTEM,
        action="user.created",
        target="user:admin",
        details={"username": "admin", "role": "admin", "first_start": True},
    )
    return None if configured else password


# ---- login and tokens ----------------------------------------------------------------------------


def _issue(
    db: Session, user: User, *, kind: str, name: str | None, expires_at: datetime | None
) -> tuple[AuthToken, str]:
    secret = new_token("skt" if kind == "session" else "ska")
    row = AuthToken(
        user_id=user.id, kind=kind, name=name, token_hash=hash_token(secret), expires_at=expires_at
    )
    db.add(row)
    db.flush()
    return row, secret


def login(
    db: Session, *, username: str, password: str, ip: str | None
) -> tuple[AuthToken, str, User]:
    """Check credentials (throttled per user and IP) and issue a session token."""
    settings = get_settings()
    since = utcnow() - timedelta(seconds=settings.login_window_seconds)
    target = f"user:{username.lower()}"
    failures = audit.count_recent(db, action="auth.login_failed", since=since, target=target, ip=ip)
    if failures >= settings.login_max_failures:
        audit.record_regardless(
            db, actor=username, action="auth.login_throttled", target=target, outcome="denied"
        )
        raise RateLimited(
            f"Too many failed logins for '{username}' from this address; "
            f"try again in {settings.login_window_seconds // 60} minutes"
        )
    user = find_user(db, username)
    good = verify_password(password, user.password_hash if user else None)
    if user is None or not good or not user.is_active:
        # Recorded in its own transaction: the error below rolls this one back.
        audit.record_regardless(
            db,
            actor=username,
            action="auth.login_failed",
            target=target,
            outcome="failure",
            details={"reason": "inactive" if user and good else "bad_credentials"},
        )
        raise Unauthenticated("Invalid username or password")
    user.last_login_at = utcnow()
    expires = utcnow() + timedelta(hours=settings.token_ttl_hours)
    row, secret = _issue(db, user, kind="session", name=None, expires_at=expires)
    audit.record(db, actor=user.username, action="auth.login", target=f"user:{user.id}")
    return row, secret, user


def create_api_key(
    db: Session, *, principal: Principal, name: str, expires_at: datetime | None
) -> tuple[AuthToken, str]:
    if expires_at is not None and _aware(expires_at) <= utcnow():
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    row, secret = _issue(
        db,
        principal.user,
        kind="api_key",
        name=name,
        expires_at=_aware(expires_at) if expires_at else None,
    )
    audit.record(
        db,
        actor=principal.username,
        action="auth.api_key_created",
        target=f"api_key:{row.id}",
        details={"name": name},
    )
    return row, secret


def authenticate(db: Session, token: str) -> Principal:
    """Resolve a bearer token or API key to its user; expired, revoked or unknown → 401."""
    now = utcnow()
    row = db.scalar(select(AuthToken).where(AuthToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None or (row.expires_at and row.expires_at <= now):
        raise Unauthenticated("Invalid or expired token")
    user = db.get(User, row.user_id)
    if user is None or not user.is_active:
        raise Unauthenticated("Invalid or expired token")
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return Principal(user=user, token_id=row.id, permissions=global_permissions(user.role))


def logout(db: Session, *, principal: Principal) -> None:
    row = db.get(AuthToken, principal.token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    audit.record(
        db, actor=principal.username, action="auth.logout", target=f"user:{principal.user.id}"
    )


def _revoke_all(db: Session, user_id: int, kind: str | None = None) -> None:
    stmt = select(AuthToken).where(AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None))
    if kind:
        stmt = stmt.where(AuthToken.kind == kind)
    for row in db.scalars(stmt):
        row.revoked_at = utcnow()


# ---- per-source grants ---------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def grant_status(grant: DataSourceGrant, now: datetime | None = None) -> str:
    if grant.revoked_at is not None:
        return "revoked"
    if grant.expires_at is not None and grant.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def _active_grants(db: Session, user_id: int, data_source_id: int | None = None) -> Any:
    now = utcnow()
    stmt = select(DataSourceGrant).where(
        DataSourceGrant.user_id == user_id,
        DataSourceGrant.revoked_at.is_(None),
        or_(DataSourceGrant.expires_at.is_(None), DataSourceGrant.expires_at > now),
    )
    if data_source_id is not None:
        stmt = stmt.where(DataSourceGrant.data_source_id == data_source_id)
    return stmt


def source_access(db: Session, principal: Principal, data_source_id: int) -> frozenset[Perm] | None:
    """Effective permissions on one source; None when the user has no active grant (→ 404)."""
    if principal.is_admin:
        return source_permissions(principal.user.role, None, [])
    grants = list(db.scalars(_active_grants(db, principal.user.id, data_source_id)))
    if not grants:
        return None
    perms: frozenset[Perm] = frozenset()
    for grant in grants:
        perms |= source_permissions(principal.user.role, grant.role, grant.permissions)
    return perms


def visible_source_ids(db: Session, principal: Principal) -> list[int] | None:
    """Source ids a non-admin may see; None means all (admin)."""
    if principal.is_admin:
        return None
    stmt = _active_grants(db, principal.user.id).with_only_columns(DataSourceGrant.data_source_id)
    return sorted(set(db.scalars(stmt)))


def users_with_access(db: Session, data_source_id: int) -> list[User]:
    """Everyone allowed to see a source: active admins and holders of an active grant."""
    now = utcnow()
    granted = select(DataSourceGrant.user_id).where(
        DataSourceGrant.data_source_id == data_source_id,
        DataSourceGrant.revoked_at.is_(None),
        or_(DataSourceGrant.expires_at.is_(None), DataSourceGrant.expires_at > now),
    )
    return list(
        db.scalars(
            select(User)
            .where(User.is_active.is_(True))
            .where(or_(User.role == Role.ADMIN, User.id.in_(granted)))
            .order_by(User.id)
        )
    )


def list_grants(db: Session, data_source_id: int) -> list[tuple[DataSourceGrant, User]]:
    rows = db.execute(
        select(DataSourceGrant, User)
        .join(User, User.id == DataSourceGrant.user_id)
        .where(DataSourceGrant.data_source_id == data_source_id)
        .order_by(DataSourceGrant.id)
    ).all()
    return [(g, u) for g, u in rows]


def get_grant(db: Session, grant_id: int) -> DataSourceGrant:
    grant = db.get(DataSourceGrant, grant_id)
    if grant is None:
        raise NotFound(f"Grant {grant_id} does not exist")
    return grant


def create_grant(db: Session, *, data: GrantCreate, actor: str) -> DataSourceGrant:
    """Grant a user a role on a source (the source's existence is checked by the caller)."""
    if data.user_id is not None:
        user = db.get(User, data.user_id)
    elif data.username:
        user = find_user(db, data.username)
    else:
        raise InvalidInput("user_id or username is required", field="user_id")
    if user is None:
        raise InvalidInput("No such user", field="user_id" if data.user_id else "username")
    if data.expires_at is not None and _aware(data.expires_at) <= utcnow():
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    grant = DataSourceGrant(
        user_id=user.id,
        data_source_id=data.data_source_id,
        role=data.role,
        permissions=sorted(set(data.permissions or [])),
        granted_by=actor,
        expires_at=_aware(data.expires_at) if data.expires_at else None,
    )
    db.add(grant)
    try:
        db.flush()
    except IntegrityError as exc:
        raise InvalidInput("No such data source", field="data_source_id") from exc
    audit.record(
        db,
        actor=actor,
        action="grant.created",
        target=f"grant:{grant.id}",
        data_source_id=grant.data_source_id,
        details={"user": user.username, "role": grant.role, "permissions": grant.permissions},
    )
    return grant


def update_grant(
    db: Session, *, grant: DataSourceGrant, data: GrantUpdate, actor: str
) -> DataSourceGrant:
    given = data.model_dump(exclude_unset=True)
    if given.get("role") is not None:
        grant.role = given["role"]
    if given.get("permissions") is not None:
        grant.permissions = sorted(set(given["permissions"]))
    if "expires_at" in given:  # explicit null removes the expiry
        expires = given["expires_at"]
        if expires is not None and _aware(expires) <= utcnow():
            raise InvalidInput("expires_at must be in the future", field="expires_at")
        grant.expires_at = _aware(expires) if expires else None
    audit.record(
        db,
        actor=actor,
        action="grant.updated",
        target=f"grant:{grant.id}",
        data_source_id=grant.data_source_id,
        details={"fields": sorted(given)},
    )
    return grant


def revoke_grant(db: Session, *, grant: DataSourceGrant, actor: str) -> None:
    """Revoke rather than delete, so the list keeps who had access and until when."""
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
    audit.record(
        db,
        actor=actor,
        action="grant.revoked",
        target=f"grant:{grant.id}",
        data_source_id=grant.data_source_id,
        details={"user_id": grant.user_id},
    )


def grant_creator(db: Session, *, user: User, data_source_id: int) -> None:
    """A non-admin who registers a source gets `admin` on it."""
    if user.role != Role.ADMIN:
        db.add(
            DataSourceGrant(
                user_id=user.id,
                data_source_id=data_source_id,
                role="admin",
                permissions=[],
                granted_by=user.username,
            )
        )
