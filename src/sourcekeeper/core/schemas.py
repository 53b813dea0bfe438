"""Base Pydantic models: ORM-readable output, and strict, tolerant input as API.md §0 asks."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)


def _as_utc(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Every timestamp goes out as ISO 8601 UTC with "Z" (SQLite hands back naive datetimes that are
# UTC).
UtcDateTime = Annotated[datetime, PlainSerializer(_as_utc, return_type=str, when_used="json")]


class Schema(BaseModel):
    """Output model: reads ORM attributes."""

    model_config = ConfigDict(from_attributes=True)


class Input(BaseModel):
    """Request body: unknown fields ignored, null = default; use the Strict* types below for
    numbers, booleans and strings so `false` never becomes 0 and 5 never becomes "5"."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _accept_camel_case(cls, data: Any) -> Any:
        """The client sends `sourceType` as readily as `source_type`; the snake_case key wins."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, value in data.items():
            if isinstance(key, str) and any(c.isupper() for c in key):
                snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
                if snake in cls.model_fields and snake not in data:
                    out[snake] = value
                    del out[key]
        return out

    def given(self) -> dict[str, Any]:
        """Fields the client sent with a non-null value (null means "use the default")."""
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None}


def utcnow() -> datetime:
    return datetime.now(UTC)


Int = StrictInt
Bool = StrictBool
Str = StrictStr
