"""API.md §3 through HTTP on a SQLite source: defaults, the client's quirks, 409s, listing,
status, stats, audit and metrics, download, and deleting a source that has backups."""

from __future__ import annotations

import re
import secrets
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backup_support import (
    Worker,
    artifact_path,
    backup_ok,
    base,
    get_backup,
    register_source,
    start_backup,
    wait_backup,
)
from fastapi.testclient import TestClient
from support import Caller


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_all_null_body_takes_the_defaults(
    client: TestClient, admin: Caller, worker: Worker, sqlite_source: dict[str, Any]
) -> None:
    ds_id = sqlite_source["id"]
    resp = client.post(
        f"{base(ds_id)}/backups",
        headers=admin.headers,
        json={
            "name": None,
            "type": None,
            "retentionDays": None,
            "description": None,
            "unknown_field": 1,
        },
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["success"] is True
    backup = body["data"]["backup"]
    assert backup["status"] == "scheduled" and backup["trigger"] == "manual"
    assert re.fullmatch(r"Backup \d{4}-\d{2}-\d{2} \d{2}:\d{2}", backup["name"])
    assert backup["type"] == "full" and backup["retention_days"] == 30
    assert backup["created_at"].endswith("Z")
    assert _ts(backup["expires_at"]) - _ts(backup["created_at"]) == timedelta(days=30)
    assert backup["encrypted"] is True and backup["encryption"] == "age-x25519"
    assert backup["compression"] == "zstd" and backup["created_by"] == "admin"
    assert backup["verification_status"] == "unverified"

    done = wait_backup(client, admin, ds_id, backup["id"])
    assert done["status"] == "completed", done
    assert done["location"] == f"backups/{ds_id}/{backup['id']}.db.zst.age"
    assert re.fullmatch(r"[0-9a-f]{64}", done["checksum_sha256"])
    assert done["size_bytes"] == artifact_path(done["location"]).stat().st_size
    assert done["original_size_bytes"] == Path(sqlite_source["database_name"]).stat().st_size
    assert done["bytes_processed"] == done["original_size_bytes"]
    assert done["compression_ratio"] == round(done["original_size_bytes"] / done["size_bytes"], 2)
    assert done["progress"] == 100 and done["duration_seconds"] >= 0
    version = sqlite3.sqlite_version
    assert done["metadata"] == {
        "engine": "sqlite",
        "server_version": version,
        "tool": "sqlite3-backup-api",
        "tool_version": version,
        "format": "sqlite",
        "tables": 1,
    }
    assert done["error_message"] is None

    # No body at all is as good as an empty one.
    resp = client.post(f"{base(ds_id)}/backups", headers=admin.headers)
    assert resp.status_code == 202, resp.text
    wait_backup(client, admin, ds_id, resp.json()["data"]["backup"]["id"])


def test_invalid_input_is_422_naming_the_field(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    url = f"{base(sqlite_source['id'])}/backups"
    resp = client.post(url, headers=admin.headers, json={"type": "incremental"})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert "full" in error["message"] and "sqlite" in error["message"]
    assert error["details"][0]["loc"] == ["body", "type"]
    for bad in (
        {"retention_days": False},
        {"retention_days": "5"},
        {"retention_days": 0},
        {"name": 5},
        {"name": ""},
    ):
        resp = client.post(url, headers=admin.headers, json=bad)
        assert resp.status_code == 422, (bad, resp.text)
    assert client.get(f"{url}?status=done", headers=admin.headers).status_code == 422
    assert client.get(f"{url}?limit=501", headers=admin.headers).status_code == 422
    # "undefined" / "null" / "" query values mean "not given".
    loose = client.get(f"{url}?status=undefined&limit=null", headers=admin.headers)
    assert loose.status_code == 200


def test_conflicts_cancel_and_delete(
    client: TestClient, admin: Caller, worker: Worker, sqlite_source: dict[str, Any]
) -> None:
    ds_id = sqlite_source["id"]
    with worker.paused():
        queued = start_backup(client, admin, ds_id, {"name": "first"})
        again = client.post(f"{base(ds_id)}/backups", headers=admin.headers, json={})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "backup_in_progress"
        url = f"{base(ds_id)}/backups/{queued['id']}"
        busy = client.delete(url, headers=admin.headers)
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "backup_in_progress"
        for action in ("verify", "restore"):
            resp = client.post(f"{url}/{action}", headers=admin.headers, json={})
            assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_completed"
        cancelled = client.post(f"{url}/cancel", headers=admin.headers)
        assert cancelled.status_code == 200, cancelled.text
        row = cancelled.json()["data"]["backup"]
        assert row["status"] == "cancelled" and row["completed_at"] is not None
        twice = client.post(f"{url}/cancel", headers=admin.headers)
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_finished"
    # The queued job, delivered after the resume, finds the row cancelled and does nothing.
    later = backup_ok(client, admin, ds_id)
    assert get_backup(client, admin, ds_id, queued["id"])["status"] == "cancelled"
    assert get_backup(client, admin, ds_id, queued["id"])["location"] is None

    deleted = client.delete(f"{base(ds_id)}/backups/{later['id']}", headers=admin.headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True, "data": {"id": later["id"], "deleted": True}}
    assert not artifact_path(later["location"]).exists()
    gone = client.get(f"{base(ds_id)}/backups/{later['id']}", headers=admin.headers)
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == (
        f"Backup {later['id']} does not exist for data source {ds_id}"
    )


def test_list_status_stats_and_health(
    client: TestClient, admin: Caller, worker: Worker, sqlite_source: dict[str, Any]
) -> None:
    ds_id = sqlite_source["id"]
    first = backup_ok(
        client, admin, ds_id, {"name": "one", "retention_days": 7, "description": "kept a week"}
    )
    second = backup_ok(client, admin, ds_id, {"name": "two"})
    with worker.paused():
        third = start_backup(client, admin, ds_id, {"name": "three"})
        client.post(f"{base(ds_id)}/backups/{third['id']}/cancel", headers=admin.headers)
    listing = client.get(f"{base(ds_id)}/backups?limit=2", headers=admin.headers).json()["data"]
    assert listing["total"] == 3
    assert [b["id"] for b in listing["backups"]] == [third["id"], second["id"]]
    done = client.get(
        f"{base(ds_id)}/backups?status=completed&offset=1", headers=admin.headers
    ).json()["data"]
    assert done["total"] == 2 and [b["id"] for b in done["backups"]] == [first["id"]]
    assert first["description"] == "kept a week"
    assert _ts(first["expires_at"]) - _ts(first["created_at"]) == timedelta(days=7)

    status = client.get(f"{base(ds_id)}/backup-status", headers=admin.headers).json()["data"]
    assert set(status) == {
        "backups",
        "stats",
        "last_backup",
        "last_successful_backup",
        "next_backup_at",
        "backup_enabled",
        "health",
        "issues",
        "storage",
    }
    assert [b["id"] for b in status["backups"]] == [third["id"], second["id"], first["id"]]
    assert status["last_backup"]["id"] == third["id"]
    assert status["last_successful_backup"]["id"] == second["id"]
    assert status["next_backup_at"] is None and status["backup_enabled"] is True
    # A fresh backup but no schedule: a warning, said in words.
    assert status["health"] == "warning"
    assert any("schedule" in issue for issue in status["issues"])
    size = first["size_bytes"] + second["size_bytes"]
    assert status["storage"] == {"used_bytes": size, "backup_count": 2}
    assert status["stats"] == {
        "total_backups": 3,
        "successful_backups": 2,
        "failed_backups": 0,
        "total_size_bytes": size,
        "total_size_gb": round(size / 1024**3, 3),
        "success_rate": 100.0,
        "average_duration_seconds": status["stats"]["average_duration_seconds"],
    }

    # Another source's backup is not found under this source.
    other = register_source(
        client,
        admin,
        name=f"other-{secrets.token_hex(3)}",
        source_type="sqlite",
        database_name=sqlite_source["database_name"],
    )
    resp = client.get(f"{base(other['id'])}/backups/{first['id']}", headers=admin.headers)
    assert resp.status_code == 404


def test_no_successful_backup_for_two_days_is_critical(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    from sourcekeeper.core.db import session_scope, utcnow
    from sourcekeeper.datasources.models import DataSource

    ds_id = sqlite_source["id"]
    with session_scope() as db:
        ds = db.get(DataSource, ds_id)
        assert ds is not None
        ds.created_at = utcnow() - timedelta(days=3)
    status = client.get(f"{base(ds_id)}/backup-status", headers=admin.headers).json()["data"]
    assert status["health"] == "critical"
    assert any("No successful backup" in issue for issue in status["issues"])
    assert status["stats"]["success_rate"] == 0.0 and status["last_backup"] is None


def test_audit_metrics_and_download(
    client: TestClient, admin: Caller, worker: Worker, sqlite_source: dict[str, Any]
) -> None:
    ds_id = sqlite_source["id"]
    backup = backup_ok(client, admin, ds_id)
    url = f"{base(ds_id)}/backups/{backup['id']}/download"
    resp = client.get(url, headers=admin.headers)
    assert resp.status_code == 200
    assert resp.content == artifact_path(backup["location"]).read_bytes()
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-length"] == str(backup["size_bytes"])
    assert f"{backup['id']}.db.zst.age" in resp.headers["content-disposition"]
    assert resp.headers["etag"] == f'"{backup["checksum_sha256"]}"'

    events = client.get(
        f"/api/audit-log?data_source_id={ds_id}&limit=50", headers=admin.headers
    ).json()["data"]["events"]
    actions = {e["action"] for e in events}
    assert {"backup.started", "backup.completed", "backup.downloaded"} <= actions
    metrics = client.get("/metrics").text
    assert 'sourcekeeper_backups_total{engine="sqlite",outcome="completed"}' in metrics
    assert "sourcekeeper_backup_size_bytes_bucket" in metrics


def test_restore_needs_backup_restore_on_the_other_source(
    client: TestClient,
    admin: Caller,
    make_caller: Any,
    worker: Worker,
    sqlite_dir: Path,
    sqlite_source: dict[str, Any],
) -> None:
    ds_id = sqlite_source["id"]
    backup = backup_ok(client, admin, ds_id)
    steward = make_caller("data_steward")
    path = sqlite_dir / f"target-{secrets.token_hex(3)}.db"
    sqlite3.connect(path).close()
    target = register_source(
        client, admin, name=f"target-{path.stem}", source_type="sqlite", database_name=str(path)
    )
    grant = {"data_source_id": ds_id, "user_id": steward.id, "role": "admin"}
    assert (
        client.post(
            "/scan/data-sources/access-control", headers=admin.headers, json=grant
        ).status_code
        == 201
    )
    url = f"{base(ds_id)}/backups/{backup['id']}/restore"
    body = {"target_data_source_id": target["id"]}
    hidden = client.post(url, headers=steward.headers, json=body)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["message"] == f"Data source {target['id']} does not exist"
    grant.update(data_source_id=target["id"], role="read")
    assert (
        client.post(
            "/scan/data-sources/access-control", headers=admin.headers, json=grant
        ).status_code
        == 201
    )
    denied = client.post(url, headers=steward.headers, json=body)
    assert denied.status_code == 403 and "backup.restore" in denied.json()["error"]["message"]


def test_deleting_a_source_keeps_backups_unless_asked(
    client: TestClient, admin: Caller, worker: Worker, sqlite_source: dict[str, Any]
) -> None:
    ds_id = sqlite_source["id"]
    backup = backup_ok(client, admin, ds_id)
    with worker.paused():
        queued = start_backup(client, admin, ds_id)
        busy = client.delete(
            f"/api/data-sources/{ds_id}?delete_backups=true", headers=admin.headers
        )
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "backup_in_progress"
        client.post(f"{base(ds_id)}/backups/{queued['id']}/cancel", headers=admin.headers)
    kept = client.delete(f"/api/data-sources/{ds_id}", headers=admin.headers)
    assert kept.status_code == 409 and kept.json()["error"]["code"] == "has_backups"
    assert artifact_path(backup["location"]).exists()
    resp = client.delete(f"/api/data-sources/{ds_id}?delete_backups=true", headers=admin.headers)
    assert resp.status_code == 200 and resp.json()["data"] == {"id": ds_id, "deleted": True}
    assert not artifact_path(backup["location"]).exists()
    assert client.get(f"/api/data-sources/{ds_id}", headers=admin.headers).status_code == 404
