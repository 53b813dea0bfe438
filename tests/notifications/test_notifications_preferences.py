"""GET/PUT /api/notifications/preferences."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from sourcekeeper.core.db import session_scope
from sourcekeeper.notifications.models import NotificationPreference

URL = "/api/notifications/preferences"
ALL_CATEGORIES = [
    "system",
    "performance",
    "security",
    "backup",
    "connectivity",
    "compliance",
    "maintenance",
]


def put(client: TestClient, who: Any, body: Any) -> Any:
    return client.put(URL, headers=who.headers, json=body)


def test_defaults_before_anything_is_saved(
    client: TestClient, make_caller: Callable[[str], Any]
) -> None:
    user = make_caller("viewer")
    resp = client.get(URL, headers=user.headers)
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"success", "preferences"}
    prefs = body["preferences"]
    assert prefs == {
        "in_app": True,
        "min_priority": "low",
        "categories": ALL_CATEGORIES,
        "email_enabled": False,
        "email": f"{user.username}@example.org",
        "email_is_account_default": True,
        "webhooks": [],
        "updated_at": None,
    }


def test_partial_updates_keep_the_rest(
    client: TestClient, make_caller: Callable[[str], Any]
) -> None:
    user = make_caller("data_analyst")
    first = put(client, user, {"min_priority": "high", "categories": ["security", "backup"]})
    assert first.status_code == 200, first.text
    prefs = first.json()["preferences"]
    assert prefs["min_priority"] == "high"
    assert prefs["categories"] == ["security", "backup"]
    assert prefs["updated_at"].endswith("Z")

    second = put(
        client, user, {"emailEnabled": True, "email": "ops@example.org", "min_priority": None}
    ).json()["preferences"]
    assert second["email_enabled"] is True and second["email"] == "ops@example.org"
    assert second["email_is_account_default"] is False
    assert second["min_priority"] == "high"  # null leaves it as it is
    assert second["categories"] == ["security", "backup"]

    back = put(client, user, {"email": ""}).json()["preferences"]
    assert back["email"] == f"{user.username}@example.org"
    assert back["email_is_account_default"] is True
    assert client.get(URL, headers=user.headers).json()["preferences"] == back


def test_webhooks_are_stored_encrypted_and_shown_to_their_owner(
    client: TestClient, make_caller: Callable[[str], Any]
) -> None:
    user = make_caller("viewer")
    secret_url = "https://hooks.slack.com/services/T000/B000/very-secret-token"
    hooks = [
        {"url": secret_url, "format": "slack"},
        {"url": "http://127.0.0.1:9/hook", "format": "generic", "enabled": False},
    ]
    prefs = put(client, user, {"webhooks": hooks}).json()["preferences"]
    assert prefs["webhooks"] == [
        {"url": secret_url, "format": "slack", "enabled": True},
        {"url": "http://127.0.0.1:9/hook", "format": "generic", "enabled": False},
    ]
    with session_scope() as db:
        row = db.scalar(
            select(NotificationPreference).where(NotificationPreference.user_id == user.id)
        )
        assert row is not None
        assert "very-secret-token" not in str(row.webhooks)
    assert put(client, user, {"webhooks": []}).json()["preferences"]["webhooks"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhooks": [{"url": "ftp://example.org/x"}]}, "url"),
        ({"webhooks": [{"url": "javascript:alert(1)"}]}, "url"),
        ({"webhooks": [{"url": "http://"}]}, "url"),
        ({"webhooks": [{"url": "file:///etc/passwd"}]}, "url"),
        ({"webhooks": [{"url": "https://example.org:99999/x"}]}, "url"),
        ({"webhooks": [{"url": "https://example.org/x", "format": "teams"}]}, "format"),
        ({"webhooks": [{"url": "https://example.org/x", "enabled": "yes"}]}, "enabled"),
        ({"webhooks": [{"format": "slack"}]}, "url"),
        ({"webhooks": [{"url": f"https://example.org/{i}"} for i in range(11)]}, "webhooks"),
        ({"min_priority": "urgent"}, "min_priority"),
        ({"categories": ["backup", "gossip"]}, 1),
        ({"email_enabled": "true"}, "email_enabled"),
        ({"email": "not-an-address"}, "email"),
    ],
)
def test_invalid_preferences_are_422(
    client: TestClient, admin: Any, body: dict[str, Any], field: str | int
) -> None:
    resp = put(client, admin, body)
    assert resp.status_code == 422, resp.text
    assert field in resp.json()["error"]["details"][0]["loc"]


def test_change_is_audited_without_the_urls(
    client: TestClient, admin: Any, make_caller: Callable[[str], Any]
) -> None:
    user = make_caller("viewer")
    put(client, user, {"webhooks": [{"url": "https://example.org/hook?token=abc123secret"}]})
    events = client.get(
        "/api/audit-log",
        headers=admin.headers,
        params={"action": "notification.preferences_updated", "actor": user.username},
    ).json()["data"]["events"]
    assert len(events) == 1
    assert events[0]["details"] == {"fields": ["webhooks"], "webhooks": 1}
    assert "abc123secret" not in str(events[0])
