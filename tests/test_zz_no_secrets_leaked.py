"""Runs last (by name): no secret handed to the service appears in its logs or its database file.

Every test that gives the service a password makes it with `conftest.planted_secret`, so this
check covers the whole session: data-source passwords, user passwords, the admin password.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import DATA_DIR, LOG_FILE, PLANTED_SECRETS, Caller, planted_secret


def test_a_source_password_never_comes_back(client: TestClient, admin: Caller) -> None:
    password = planted_secret("leakcheck")
    resp = client.post(
        "/api/data-sources",
        headers=admin.headers,
        json={
            "name": "leak-check",
            "source_type": "postgresql",
            "host": "127.0.0.1",
            "port": 1,
            "database_name": "postgres",
            "username": "u",
            "password": password,
        },
    )
    ds_id = resp.json()["data"]["data_source"]["id"]
    replies = [
        resp.text,
        client.get(f"/api/data-sources/{ds_id}", headers=admin.headers).text,
        client.get("/api/data-sources?limit=500", headers=admin.headers).text,
        client.put(
            f"/api/data-sources/{ds_id}",
            headers=admin.headers,
            json={"password": password, "description": password[:3]},
        ).text,
        client.post(f"/api/data-sources/{ds_id}/test-connection", headers=admin.headers).text,
        client.get("/api/audit-log?limit=500", headers=admin.headers).text,
    ]
    for reply in replies:
        assert password not in reply


def _files_to_scan() -> list[Path]:
    return [
        p
        for p in DATA_DIR.iterdir()
        if p.is_file() and (p.name.startswith("sourcekeeper.db") or p == LOG_FILE)
    ]


@pytest.mark.parametrize("what", ["log", "database"])
def test_no_planted_secret_in_logs_or_database(client: TestClient, what: str) -> None:
    files = [f for f in _files_to_scan() if (f == LOG_FILE) == (what == "log")]
    assert files, f"nothing to scan for {what}"
    for path in files:
        content = path.read_bytes()
        assert len(content) > 0
        leaked = [s for s in PLANTED_SECRETS if s.encode() in content]
        assert not leaked, f"{len(leaked)} secret(s) found in clear in {path.name}"
    if what == "log":
        # the log really captured the session: it has request lines from many tests
        assert LOG_FILE.read_text().count('"event": "request"') > 20
