"""Test session: a fresh data directory, the app built from migrations, users of every role."""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

# support fixes the environment; it must be imported before sourcekeeper reads its settings.
from support import ADMIN_PASSWORD, DATA_DIR, LOG_FILE, Caller, planted_secret

from sourcekeeper.main import create_app

pytest_plugins = ["servers_plugin"]


@pytest.fixture(scope="session")
def app() -> Any:
    return create_app(migrate=True)


@pytest.fixture(scope="session")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        # Keep a copy of every log line for the leak check, in the service's own JSON format.
        root = logging.getLogger()
        handler = logging.FileHandler(LOG_FILE)
        handler.setFormatter(root.handlers[0].formatter)
        root.addHandler(handler)
        yield c
        root.removeHandler(handler)


@pytest.fixture(autouse=True)
def _no_leftover_cookie(request: pytest.FixtureRequest) -> None:
    """A login sets the session cookie on the shared client; an "anonymous" call must not carry
    it.
    """
    if "client" in request.fixturenames:
        request.getfixturevalue("client").cookies.clear()


def login(client: TestClient, username: str, password: str) -> str:
    resp = client.post("/auth/token", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    client.cookies.clear()
    return resp.json()["data"]["access_token"]


@pytest.fixture(scope="session")
def admin(client: TestClient) -> Caller:
    token = login(client, "admin", ADMIN_PASSWORD)
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["data"]
    return Caller(id=me["id"], username="admin", role="admin", token=token)


@pytest.fixture(scope="session")
def make_caller(client: TestClient, admin: Caller) -> Callable[[str], Caller]:
    """Create a new user of `role` and log them in."""

    def make(role: str) -> Caller:
        username = f"{role}-{secrets.token_hex(4)}"
        password = planted_secret("userpw")
        resp = client.post(
            "/api/users",
            headers=admin.headers,
            json={
                "username": username,
                "email": f"{username}@example.org",
                "password": password,
                "role": role,
                "is_active": True,
            },
        )
        assert resp.status_code == 201, resp.text
        return Caller(
            id=resp.json()["data"]["user"]["id"],
            username=username,
            role=role,
            token=login(client, username, password),
        )

    return make


@pytest.fixture(scope="session")
def sqlite_dir() -> Path:
    path = DATA_DIR / "sqlite"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def sqlite_source(client: TestClient, admin: Caller, sqlite_dir: Path) -> dict[str, Any]:
    """A registered SQLite source with a little data."""
    import sqlite3

    path = sqlite_dir / f"src-{secrets.token_hex(4)}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items (name) VALUES (?)", [("a",), ("b",), ("c",)])
    resp = client.post(
        "/api/data-sources",
        headers=admin.headers,
        json={"name": f"sqlite-{path.stem}", "source_type": "sqlite", "database_name": str(path)},
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]["data_source"]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    shutil.rmtree(DATA_DIR, ignore_errors=True)
