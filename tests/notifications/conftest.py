"""Fixtures for the notification tests."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def new_source(client: TestClient, admin: Any, sqlite_dir: Path) -> Callable[[], dict[str, Any]]:
    """Register a fresh SQLite source per call (tests often need two)."""

    def make() -> dict[str, Any]:
        path = sqlite_dir / f"notif-{secrets.token_hex(4)}.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        resp = client.post(
            "/api/data-sources",
            headers=admin.headers,
            json={
                "name": f"notif-{path.stem}",
                "source_type": "sqlite",
                "database_name": str(path),
            },
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["data"]["data_source"]

    return make
