"""/auth and /api/users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from sourcekeeper.auth import service as auth_service
from sourcekeeper.auth.deps import CurrentUser, DbSession, require
from sourcekeeper.auth.schemas import (
    ApiKeyCreate,
    ApiKeyOut,
    LoggedOut,
    LoginForm,
    Me,
    TokenOut,
    UserCreate,
    UserList,
    UserOut,
    UserRead,
    UserUpdate,
)
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.envelope import COMMON_ERRORS, Deleted, Envelope, ok
from sourcekeeper.core.errors import BadRequest, InvalidInput
from sourcekeeper.core.pagination import PageParams
from sourcekeeper.core.params import PathId
from sourcekeeper.core.permissions import Perm

public = APIRouter(tags=["auth"], responses=COMMON_ERRORS)
router = APIRouter(tags=["auth"], responses=COMMON_ERRORS)
users_router = APIRouter(prefix="/api/users", tags=["users"], responses=COMMON_ERRORS)
UserManager = Annotated[auth_service.Principal, Depends(require(Perm.USER_MANAGE))]

_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginForm.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": LoginForm.model_json_schema()},
        },
    }
}


async def _login_form(request: Request) -> LoginForm:
    """The client posts a form (OAuth2 password style) or JSON; both are read the same way."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            raw: Any = await request.json()
        elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            raw = dict(await request.form())
        else:
            raise BadRequest("Send username and password as JSON or as a form")
        return LoginForm.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else None
        raise InvalidInput(f"{field or 'body'}: {first['msg']}", field=field) from None
    except ValueError:
        raise BadRequest("The request body is not valid JSON") from None


@public.post("/auth/token", openapi_extra=_LOGIN_BODY)
def login(
    request: Request,
    response: Response,
    db: DbSession,
    form: Annotated[LoginForm, Depends(_login_form)],
) -> Envelope[TokenOut]:
    """Exchange a username and password for a session token (also set as the session_token
    cookie).
    """
    ip = request.client.host if request.client else None
    row, secret, user = auth_service.login(
        db, username=form.username, password=form.password.get_secret_value(), ip=ip
    )
    settings = get_settings()
    response.set_cookie(
        "session_token",
        secret,
        max_age=settings.token_ttl_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
    )
    return ok(
        TokenOut(access_token=secret, expires_at=row.expires_at, user=UserRead.model_validate(user))
    )


@router.post("/auth/logout")
def logout(response: Response, db: DbSession, user: CurrentUser) -> Envelope[LoggedOut]:
    """Revoke the token this request was made with."""
    auth_service.logout(db, principal=user)
    response.delete_cookie("session_token", path="/")
    return ok(LoggedOut(logged_out=True))


@router.get("/auth/me")
def me(user: CurrentUser) -> Envelope[Me]:
    """The caller, with their global permissions."""
    u = user.user
    return ok(
        Me(
            id=u.id,
            username=u.username,
            email=u.email,
            role=u.role,
            permissions=sorted(user.permissions),
            is_active=u.is_active,
        )
    )


@router.post("/auth/api-keys", status_code=201)
def create_api_key(db: DbSession, user: CurrentUser, body: ApiKeyCreate) -> Envelope[ApiKeyOut]:
    """Create an API key for the caller; the key is shown once and used like a token."""
    row, secret = auth_service.create_api_key(
        db, principal=user, name=body.name, expires_at=body.expires_at
    )
    return ok(ApiKeyOut(id=row.id, name=row.name, key=secret, expires_at=row.expires_at))


@users_router.get("")
def list_users(
    db: DbSession, _: UserManager, page: Annotated[PageParams, Query()]
) -> Envelope[UserList]:
    users, total = auth_service.list_users(db, page=page)
    return ok(UserList(users=[UserRead.model_validate(u) for u in users], total=total))


@users_router.post("", status_code=201)
def create_user(db: DbSession, actor: UserManager, body: UserCreate) -> Envelope[UserOut]:
    user = auth_service.create_user(db, data=body, actor=actor.username)
    return ok(UserOut(user=UserRead.model_validate(user)))


@users_router.get("/{user_id}")
def get_user(db: DbSession, _: UserManager, user_id: PathId) -> Envelope[UserOut]:
    return ok(UserOut(user=UserRead.model_validate(auth_service.get_user(db, user_id))))


@users_router.put("/{user_id}")
def update_user(
    db: DbSession, actor: UserManager, user_id: PathId, body: UserUpdate
) -> Envelope[UserOut]:
    user = auth_service.update_user(
        db, user=auth_service.get_user(db, user_id), data=body, actor=actor
    )
    return ok(UserOut(user=UserRead.model_validate(user)))


@users_router.delete("/{user_id}")
def delete_user(db: DbSession, actor: UserManager, user_id: PathId) -> Envelope[Deleted]:
    auth_service.delete_user(db, user=auth_service.get_user(db, user_id), actor=actor)
    return ok(Deleted(id=user_id))
