"""API.md §2: the data-source registry and test-connection, against the real servers."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from servers_plugin import DbServer, free_port
from support import Caller, planted_secret


def _create(client: TestClient, caller: Caller, **body: Any) -> Any:
    body.setdefault("name", f"src-{secrets.token_hex(4)}")
    return client.post("/api/data-sources", headers=caller.headers, json=body)


def test_create_with_nulls_uses_defaults(
    client: TestClient, admin: Caller, sqlite_dir: Path
) -> None:
    path = sqlite_dir / "defaults.db"
    path.touch()
    resp = _create(
        client,
        admin,
        source_type="sqlite",
        database_name=str(path),
        host=None,
        port=None,
        environment=None,
        criticality=None,
        tags=None,
        backup_enabled=None,
        description=None,
        password=None,
    )
    assert resp.status_code == 201, resp.text
    ds = resp.json()["data"]["data_source"]
    assert ds["environment"] == "development" and ds["criticality"] == "medium"
    assert ds["tags"] == [] and ds["backup_enabled"] is True and ds["status"] == "pending"
    assert ds["has_password"] is False and ds["created_by"] == "admin"
    assert ds["created_at"].endswith("Z")


def test_sqlite_path_outside_allowed_dirs_is_422(
    client: TestClient, admin: Caller, sqlite_dir: Path
) -> None:
    for bad in ("/etc/passwd", str(sqlite_dir / ".." / "master.key"), "relative.db"):
        resp = _create(client, admin, source_type="sqlite", database_name=bad)
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["details"][0]["loc"] == ["body", "database_name"]
    link = sqlite_dir / "escape.db"
    link.symlink_to("/etc/passwd")
    assert _create(client, admin, source_type="sqlite", database_name=str(link)).status_code == 422


def test_postgres_requires_host_and_gets_default_port(client: TestClient, admin: Caller) -> None:
    assert _create(client, admin, source_type="postgresql", database_name="x").status_code == 422
    resp = _create(client, admin, source_type="postgresql", database_name="x", host="127.0.0.1")
    assert resp.json()["data"]["data_source"]["port"] == 5432


def test_crud_filters_and_password_is_write_only(client: TestClient, admin: Caller) -> None:
    password = planted_secret("dspw")
    tag = secrets.token_hex(3)
    resp = _create(
        client,
        admin,
        source_type="mysql",
        host="127.0.0.1",
        port=3306,
        database_name="sales",
        username="app",
        password=password,
        environment="production",
        tags=[tag],
        description=f"sales {tag}",
    )
    assert resp.status_code == 201
    ds = resp.json()["data"]["data_source"]
    assert ds["has_password"] is True and "password" not in ds and password not in resp.text
    got = client.get(f"/api/data-sources/{ds['id']}", headers=admin.headers)
    assert password not in got.text
    listing = client.get(
        f"/api/data-sources?search={tag}&environment=production&source_type=mysql",
        headers=admin.headers,
    ).json()["data"]
    assert [d["id"] for d in listing["data_sources"]] == [ds["id"]] and listing["total"] == 1
    none = client.get(f"/api/data-sources?search={tag}&environment=staging", headers=admin.headers)
    assert none.json()["data"]["total"] == 0
    upd = client.put(
        f"/api/data-sources/{ds['id']}",
        headers=admin.headers,
        json={"description": "changed", "port": None, "criticality": "high"},
    )
    body = upd.json()["data"]["data_source"]
    assert (
        body["description"] == "changed" and body["port"] == 3306 and body["criticality"] == "high"
    )
    assert body["has_password"] is True  # absent password leaves it as it was
    dup = _create(client, admin, name=ds["name"], source_type="mysql", host="h", database_name="d")
    assert dup.status_code == 409
    resp = client.delete(f"/api/data-sources/{ds['id']}", headers=admin.headers)
    assert resp.json() == {"success": True, "data": {"id": ds["id"], "deleted": True}}
    assert client.get(f"/api/data-sources/{ds['id']}", headers=admin.headers).status_code == 404


def test_non_admin_sees_only_granted_sources(
    client: TestClient, admin: Caller, make_caller, sqlite_source: dict[str, Any]
) -> None:
    steward = make_caller("data_steward")
    other = make_caller("data_steward")
    mine = _create(client, steward, source_type="postgresql", host="127.0.0.1", database_name="m")
    assert mine.status_code == 201
    mine_id = mine.json()["data"]["data_source"]["id"]
    ids = [
        d["id"]
        for d in client.get("/api/data-sources?limit=500", headers=steward.headers).json()["data"][
            "data_sources"
        ]
    ]
    assert ids == [mine_id]  # the creator is granted admin on it, and sees nothing else
    hidden = client.get(f"/api/data-sources/{sqlite_source['id']}", headers=steward.headers)
    assert hidden.status_code == 404
    assert client.get(f"/api/data-sources/{mine_id}", headers=other.headers).status_code == 404
    # a read grant lets `other` see it but not change it
    grant = client.post(
        "/scan/data-sources/access-control",
        headers=steward.headers,
        json={"data_source_id": mine_id, "user_id": other.id, "role": "read"},
    )
    assert grant.status_code == 201, grant.text
    assert client.get(f"/api/data-sources/{mine_id}", headers=other.headers).status_code == 200
    denied = client.put(f"/api/data-sources/{mine_id}", headers=other.headers, json={"owner": "x"})
    assert denied.status_code == 403 and "datasource.manage" in denied.json()["error"]["message"]
    ac = client.get(f"/scan/data-sources/{mine_id}/access-control", headers=steward.headers).json()
    assert ac["data_source_id"] == mine_id and ac["summary"]["active_grants"] == 2
    assert {g["username"] for g in ac["data"]} == {steward.username, other.username}
    gid = grant.json()["data"]["grant"]["id"]
    assert (
        client.delete(f"/scan/data-sources/access-control/{gid}", headers=steward.headers).json()[
            "data"
        ]["deleted"]
        is True
    )
    assert client.get(f"/api/data-sources/{mine_id}", headers=other.headers).status_code == 404
    ac = client.get(f"/scan/data-sources/{mine_id}/access-control", headers=steward.headers).json()
    assert {g["status"] for g in ac["data"] if g["id"] == gid} == {"revoked"}


def _register(
    client: TestClient,
    admin: Caller,
    server: DbServer,
    *,
    password: str,
    port: int | None = None,
    database: str | None = None,
) -> int:
    engine = "postgresql" if server.engine == "postgresql" else "mariadb"
    resp = _create(
        client,
        admin,
        source_type=engine,
        host=server.host,
        port=port or server.port,
        database_name=database or ("postgres" if engine == "postgresql" else "mysql"),
        username=server.superuser,
        password=password,
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["data"]["data_source"]["id"])


@pytest.fixture(params=["pg_server", "mariadb_server"])
def server(request: pytest.FixtureRequest) -> DbServer:
    return request.getfixturevalue(request.param)


def test_test_connection_live_server(client: TestClient, admin: Caller, server: DbServer) -> None:
    ds_id = _register(client, admin, server, password=server.password)
    resp = client.post(f"/api/data-sources/{ds_id}/test-connection", headers=admin.headers)
    data = resp.json()["data"]
    assert data["ok"] is True, data
    assert data["server_version"] and data["latency_ms"] > 0 and data["ssl"] is False
    ds = client.get(f"/api/data-sources/{ds_id}", headers=admin.headers).json()["data"][
        "data_source"
    ]
    assert ds["status"] == "active"


def test_test_connection_wrong_password(
    client: TestClient, admin: Caller, server: DbServer
) -> None:
    wrong = planted_secret("wrongpw")
    ds_id = _register(client, admin, server, password=wrong)
    start = time.monotonic()
    resp = client.post(f"/api/data-sources/{ds_id}/test-connection", headers=admin.headers)
    assert time.monotonic() - start < 5
    data = resp.json()["data"]
    assert resp.status_code == 200 and data["ok"] is False
    assert "denied" in data["message"].lower() or "authentication failed" in data["message"].lower()
    assert wrong not in resp.text
    ds = client.get(f"/api/data-sources/{ds_id}", headers=admin.headers).json()["data"][
        "data_source"
    ]
    assert ds["status"] == "error"


def test_test_connection_closed_port_returns_within_timeout(
    client: TestClient, admin: Caller, server: DbServer
) -> None:
    ds_id = _register(client, admin, server, password="x", port=free_port())
    start = time.monotonic()
    resp = client.post(f"/api/data-sources/{ds_id}/test-connection", headers=admin.headers)
    elapsed = time.monotonic() - start
    data = resp.json()["data"]
    assert resp.status_code == 200 and data["ok"] is False
    assert "refused" in data["message"].lower() or "could not connect" in data["message"].lower()
    assert elapsed < 3 + 2  # SOURCEKEEPER_CONNECT_TIMEOUT_SECONDS=3 in the tests


def test_test_connection_sqlite(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any], sqlite_dir: Path
) -> None:
    data = client.post(
        f"/api/data-sources/{sqlite_source['id']}/test-connection", headers=admin.headers
    ).json()["data"]
    assert data["ok"] is True and data["server_version"]
    missing = _create(
        client, admin, source_type="sqlite", database_name=str(sqlite_dir / "nope.db")
    )
    ds_id = missing.json()["data"]["data_source"]["id"]
    data = client.post(f"/api/data-sources/{ds_id}/test-connection", headers=admin.headers).json()[
        "data"
    ]
    assert data["ok"] is False and "not exist" in data["message"]
    assert not (sqlite_dir / "nope.db").exists()


def test_changes_are_audited(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    client.put(
        f"/api/data-sources/{sqlite_source['id']}", headers=admin.headers, json={"owner": "ops"}
    )
    events = client.get(
        f"/api/audit-log?data_source_id={sqlite_source['id']}", headers=admin.headers
    ).json()["data"]["events"]
    actions = [e["action"] for e in events]
    assert actions[:2] == ["datasource.updated", "datasource.created"]
    assert events[0]["request_id"] and events[0]["actor"] == "admin"
