"""Notification replies are flat (API.md §0/§4): `success` beside the payload, not in `data`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sourcekeeper.core.params import MAX_ID
from sourcekeeper.core.schemas import Bool, Input, Schema, Str, UtcDateTime

TypeName = Literal["info", "success", "warning", "error"]
PriorityName = Literal["low", "medium", "high", "critical"]
CategoryName = Literal[
    "system", "performance", "security", "backup", "connectivity", "compliance", "maintenance"
]
WebhookFormatName = Literal["slack", "generic"]
MAX_MARK_IDS = 1000
MAX_WEBHOOKS = 10
_DIGITS = re.compile(r"^[0-9]{1,10}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class Flat(Schema):
    success: Literal[True] = True


class NotificationRead(Schema):
    id: int
    title: str
    message: str
    type: str
    priority: str
    category: str
    source: str = Field(
        validation_alias=AliasChoices("event_type", "source"),
        description="The event that produced it, e.g. `datasource.unreachable`",
    )
    data_source_id: int | None
    data_source_name: str | None
    action_url: str | None
    tags: list[str]
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("meta", "metadata"))
    created_at: UtcDateTime
    read_at: UtcDateTime | None
    acknowledged_at: UtcDateTime | None
    acknowledged_by: str | None
    expires_at: UtcDateTime | None


class NotificationList(Flat):
    notifications: list[NotificationRead]
    total: int = Field(description="Notifications matching every filter (before limit/offset)")
    unread_count: int = Field(description="Unread ones matching the filters other than unread_only")


class NotificationOut(Flat):
    notification: NotificationRead


class NotificationStats(Flat):
    total: int
    unread_count: int
    unacknowledged_count: int
    by_type: dict[str, int]
    by_priority: dict[str, int]
    by_category: dict[str, int]
    last_24h: int


class MarkReadResult(Flat):
    updated: int = Field(description="Notifications that went from unread to read")


class NotificationDeleted(Flat):
    id: int
    deleted: Literal[True] = True


def _as_id(value: Any) -> int | None:
    """Ids may arrive as numbers or digit strings; `true` or `"abc"` are mistakes, not ids. A digit
    string outside the id range cannot be anyone's notification, so it is ignored like one."""
    if isinstance(value, bool):
        raise ValueError("must be a notification id (an integer), not a boolean")
    if isinstance(value, int):
        if not 1 <= value <= MAX_ID:
            raise ValueError(f"must be between 1 and {MAX_ID}")
        return value
    if isinstance(value, str) and _DIGITS.match(value):
        number = int(value)
        return number if 1 <= number <= MAX_ID else None
    raise ValueError("must be a notification id: an integer or a string of digits")


NotificationIdIn = Annotated[
    int | None,
    PlainValidator(_as_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                {"type": "string", "pattern": _DIGITS.pattern},
            ]
        }
    ),
]

# The two accepted shapes, for the OpenAPI document (and fuzzers) to know what is valid.
_MARK_READ_SHAPES = {
    "anyOf": [
        {
            "required": ["notification_ids"],
            "properties": {"notification_ids": {"type": "array"}, "all": {"not": {"const": True}}},
        },
        {
            "required": ["all"],
            "properties": {
                "all": {"const": True},
                "notification_ids": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]},
            },
        },
    ]
}


class MarkReadRequest(Input):
    """Either `{notification_ids: [...]}` or `{all: true, data_source_id?}`."""

    model_config = ConfigDict(json_schema_extra=_MARK_READ_SHAPES)

    notification_ids: Annotated[list[NotificationIdIn], Field(max_length=MAX_MARK_IDS)] | None = (
        None
    )
    all: Bool | None = None
    data_source_id: Annotated[int, Field(strict=True, ge=1, le=MAX_ID)] | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> MarkReadRequest:
        if self.all:
            if self.notification_ids:
                raise ValueError("give either notification_ids or all: true, not both")
        elif self.notification_ids is None:
            raise ValueError("give notification_ids (a list, may be empty) or all: true")
        return self

    def ids(self) -> list[int]:
        return [i for i in self.notification_ids or [] if i is not None]


class WebhookIn(Input):
    url: Annotated[Str, Field(min_length=1, max_length=2000)]
    format: WebhookFormatName = "generic"
    enabled: Bool = True

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
            raise ValueError("webhook URL must be an http:// or https:// URL with a host")
        if any(c.isspace() for c in value):
            raise ValueError("webhook URL must not contain spaces")
        return value


class WebhookRead(Schema):
    url: str
    format: str
    enabled: bool


class PreferencesRead(Schema):
    in_app: Literal[True] = Field(True, description="In-app notifications are always on")
    min_priority: str = Field(description="Email and webhooks carry this priority and above")
    categories: list[str] = Field(description="Categories delivered by email and webhooks")
    email_enabled: bool
    email: str | None = Field(description="Where email goes; the account's address unless set")
    email_is_account_default: bool
    webhooks: list[WebhookRead]
    updated_at: UtcDateTime | None


class PreferencesOut(Flat):
    preferences: PreferencesRead


class PreferencesUpdate(Input):
    """Any subset; absent or null leaves a field as it is. `email: ""` returns to the account's
    address. `webhooks` replaces the whole list."""

    min_priority: PriorityName | None = None
    categories: list[CategoryName] | None = None
    email_enabled: Bool | None = None
    email: Annotated[Str, Field(max_length=320)] | None = None
    webhooks: Annotated[list[WebhookIn], Field(max_length=MAX_WEBHOOKS)] | None = None

    @field_validator("email")
    @classmethod
    def _looks_like_email(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return value if value is None else ""
        value = value.strip()
        if not _EMAIL.match(value):
            raise ValueError("not an email address")
        return value


class DeliveryRead(Schema):
    id: int
    channel: str
    target: str
    attempt: int
    status: str
    error: str | None
    at: UtcDateTime


class DeliveryList(Flat):
    deliveries: list[DeliveryRead]
