from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, SecretStr

from sourcekeeper.core.schemas import Bool, Input, Schema, Str, UtcDateTime

RoleName = Literal["admin", "data_steward", "data_analyst", "viewer"]
GrantRoleName = Literal["admin", "read", "write", "execute"]
GrantFlagName = Literal["read", "write", "execute", "admin", "scan", "configure"]
Username = Annotated[Str, Field(min_length=1, max_length=150, pattern=r"^[A-Za-z0-9_.@-]+$")]


class UserRead(Schema):
    id: int
    username: str
    email: str | None
    role: str
    is_active: bool
    created_at: UtcDateTime
    last_login_at: UtcDateTime | None


class Me(Schema):
    id: int
    username: str
    email: str | None
    role: str
    permissions: list[str]
    is_active: bool


class UserCreate(Input):
    username: Username
    email: Annotated[Str, Field(max_length=320)] | None = None
    password: Annotated[SecretStr, Field(min_length=8, max_length=1024)]
    role: RoleName | None = None
    is_active: Bool | None = None


class UserUpdate(Input):
    email: Annotated[Str, Field(max_length=320)] | None = None
    password: Annotated[SecretStr, Field(min_length=8, max_length=1024)] | None = None
    role: RoleName | None = None
    is_active: Bool | None = None


class UserOut(Schema):
    user: UserRead


class UserList(Schema):
    users: list[UserRead]
    total: int


class LoginForm(Input):
    username: Annotated[Str, Field(min_length=1, max_length=150)]
    password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class TokenOut(Schema):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: UtcDateTime | None
    user: UserRead


class LoggedOut(Schema):
    logged_out: bool


class ApiKeyCreate(Input):
    name: Annotated[Str, Field(min_length=1, max_length=150)]
    expires_at: datetime | None = None


class ApiKeyOut(Schema):
    id: int
    name: str | None
    key: str
    expires_at: UtcDateTime | None


class GrantRead(Schema):
    id: int
    data_source_id: int
    user_id: int
    username: str
    email: str | None
    role: str
    permissions: list[str]
    granted_at: UtcDateTime
    granted_by: str | None
    expires_at: UtcDateTime | None
    status: Literal["active", "expired", "revoked"]


class GrantCreate(Input):
    data_source_id: Annotated[int, Field(strict=True, ge=1)]
    user_id: Annotated[int, Field(strict=True, ge=1)] | None = None
    username: Str | None = None
    role: GrantRoleName = "read"
    permissions: list[GrantFlagName] | None = None
    expires_at: datetime | None = None


class GrantUpdate(Input):
    role: GrantRoleName | None = None
    permissions: list[GrantFlagName] | None = None
    expires_at: datetime | None = None


class GrantOut(Schema):
    grant: GrantRead
