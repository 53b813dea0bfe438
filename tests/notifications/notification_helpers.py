"""Helpers shared by the notification tests: emit events like other domains do, grant access."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from sourcekeeper.core.db import session_scope
from sourcekeeper.notifications import service as notifications_service

EVENT_DEFAULTS: dict[str, Any] = {
    "event_type": "backup.completed",
    "category": "backup",
    "type": "success",
    "priority": "medium",
    "title": "Backup completed",
    "message": "The backup finished.",
}


def emit(**kwargs: Any) -> dict[int, int]:
    """Emit one event in its own transaction; returns {user_id: notification_id}."""
    with session_scope() as db:
        rows = notifications_service.emit(db, **(EVENT_DEFAULTS | kwargs))
        return {row.user_id: row.id for row in rows}


def grant(
    client: TestClient,
    admin_headers: dict[str, str],
    data_source_id: int,
    user_id: int,
    role: str = "read",
) -> None:
    resp = client.post(
        "/scan/data-sources/access-control",
        headers=admin_headers,
        json={"data_source_id": data_source_id, "user_id": user_id, "role": role},
    )
    assert resp.status_code == 201, resp.text
