from __future__ import annotations

from typing import Any

from sourcekeeper.core.schemas import Schema, UtcDateTime


class AuditEventRead(Schema):
    id: int
    at: UtcDateTime
    actor: str
    action: str
    data_source_id: int | None
    target: str | None
    outcome: str
    ip: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditEventList(Schema):
    events: list[AuditEventRead]
    total: int
