"""API.md §1: login, tokens, cookies, API keys, users, throttling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from support import ADMIN_PASSWORD, Caller, planted_secret

from sourcekeeper.auth.models import AuthToken, User
from sourcekeeper.core.crypto import hash_token
from sourcekeeper.core.db import session_scope


def test_login_with_form_sets_http_only_cookie(client: TestClient) -> None:
    resp = client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["token_type"] == "bearer" and data["user"]["username"] == "admin"
    assert data["expires_at"].endswith("Z")
    cookie = resp.headers["set-cookie"]
    assert "session_token=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "password_hash" not in resp.text


def test_cookie_authenticates_and_logout_revokes(client: TestClient) -> None:
    token = client.post(
        "/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["data"]["access_token"]
    fresh = TestClient(client.app)
    fresh.cookies.set("session_token", token)
    assert fresh.get("/auth/me").json()["data"]["username"] == "admin"
    assert fresh.post("/auth/logout").json()["data"] == {"logged_out": True}
    resp = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


def test_tokens_are_stored_only_as_hashes(client: TestClient, admin: Caller) -> None:
    with session_scope() as db:
        hashes = set(db.scalars(select(AuthToken.token_hash)))
    assert admin.token not in hashes
    assert hash_token(admin.token) in hashes


def test_expired_token_is_rejected(client: TestClient, admin: Caller) -> None:
    token = client.post(
        "/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["data"]["access_token"]
    with session_scope() as db:
        row = db.scalar(select(AuthToken).where(AuthToken.token_hash == hash_token(token)))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    resp = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthenticated"


def test_api_key_is_used_like_a_token(client: TestClient, make_caller) -> None:
    viewer = make_caller("viewer")
    resp = client.post(
        "/auth/api-keys", headers=viewer.headers, json={"name": "ci", "expires_at": None}
    )
    assert resp.status_code == 201, resp.text
    key = resp.json()["data"]["key"]
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert me["username"] == viewer.username
    assert me["permissions"] == ["notification.view"]


def test_me_lists_role_permissions(client: TestClient, make_caller) -> None:
    steward = make_caller("data_steward")
    perms = client.get("/auth/me", headers=steward.headers).json()["data"]["permissions"]
    assert perms == ["datasource.create", "notification.delete", "notification.view"]


def test_failed_logins_are_throttled_and_audited(
    client: TestClient, admin: Caller, make_caller
) -> None:
    victim = make_caller("viewer")
    for _ in range(5):
        resp = client.post(
            "/auth/token", json={"username": victim.username, "password": "wrong-pass"}
        )
        assert resp.status_code == 401
    resp = client.post("/auth/token", json={"username": victim.username, "password": "wrong-pass"})
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "rate_limited"
    events = client.get(
        f"/api/audit-log?action=auth.login_failed&actor={victim.username}", headers=admin.headers
    ).json()["data"]
    assert events["total"] == 5
    assert all(e["outcome"] == "failure" and e["ip"] for e in events["events"])


def test_users_crud_never_returns_hash(client: TestClient, admin: Caller) -> None:
    password = planted_secret("newuser")
    resp = client.post(
        "/api/users",
        headers=admin.headers,
        json={
            "username": "carol",
            "email": "carol@example.org",
            "password": password,
            "role": None,
            "is_active": None,
        },
    )
    assert resp.status_code == 201, resp.text
    user = resp.json()["data"]["user"]
    assert user["role"] == "viewer" and user["is_active"] is True
    uid = user["id"]
    resp = client.put(f"/api/users/{uid}", headers=admin.headers, json={"role": "data_analyst"})
    assert resp.json()["data"]["user"]["role"] == "data_analyst"
    listing = client.get("/api/users", headers=admin.headers).json()["data"]
    assert any(u["username"] == "carol" for u in listing["users"])
    assert "hash" not in str(listing) and password not in str(listing)
    assert (
        client.post(
            "/api/users",
            headers=admin.headers,
            json={"username": "carol", "password": "another-pass"},
        ).status_code
        == 409
    )
    resp = client.delete(f"/api/users/{uid}", headers=admin.headers)
    assert resp.json() == {"success": True, "data": {"id": uid, "deleted": True}}
    assert client.get(f"/api/users/{uid}", headers=admin.headers).status_code == 404


def test_deactivated_user_loses_access(client: TestClient, admin: Caller, make_caller) -> None:
    user = make_caller("viewer")
    client.put(f"/api/users/{user.id}", headers=admin.headers, json={"is_active": False})
    assert client.get("/auth/me", headers=user.headers).status_code == 401


def test_passwords_are_argon2(client: TestClient, admin: Caller) -> None:
    with session_scope() as db:
        hashes = list(db.scalars(select(User.password_hash)))
    assert hashes and all(h.startswith("$argon2") for h in hashes)
