"""GET/POST/PUT/DELETE /api/data-sources/{id}/backup-schedules, as API.md §3 describes them."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from support import Caller

from sourcekeeper.backups import schedules as schedules_service
from sourcekeeper.backups.schedule_schemas import BackupScheduleCreate, BackupScheduleUpdate
from sourcekeeper.core.db import session_scope
from sourcekeeper.datasources.models import DataSource


def url(source: dict[str, Any], schedule_id: int | None = None) -> str:
    base = f"/api/data-sources/{source['id']}/backup-schedules"
    return base if schedule_id is None else f"{base}/{schedule_id}"


def parse(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def create(client: TestClient, admin: Caller, source: dict[str, Any], **body: Any) -> Any:
    resp = client.post(url(source), headers=admin.headers, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]["schedule"]


def test_create_with_every_optional_field_null_uses_the_defaults(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    before = datetime.now(UTC)
    body = {
        "cron_expression": "0 2 * * *",
        "name": None,
        "backup_type": None,
        "timezone": None,
        "retention_days": None,
        "enabled": None,
        "description": None,
    }
    resp = client.post(url(sqlite_source), headers=admin.headers, json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["success"] is True
    schedule = resp.json()["data"]["schedule"]
    assert set(schedule) == {
        "id",
        "data_source_id",
        "name",
        "backup_type",
        "cron_expression",
        "timezone",
        "enabled",
        "retention_days",
        "next_run",
        "last_run",
        "last_status",
        "last_backup_id",
        "description",
        "created_at",
        "updated_at",
    }
    assert schedule["data_source_id"] == sqlite_source["id"]
    assert schedule["timezone"] == "UTC"
    assert schedule["backup_type"] == "full"
    assert schedule["enabled"] is True
    assert schedule["retention_days"] == 30
    assert schedule["name"]
    assert schedule["last_run"] is schedule["last_status"] is schedule["last_backup_id"] is None
    next_run = parse(schedule["next_run"])
    assert (next_run.hour, next_run.minute, next_run.second) == (2, 0, 0)
    assert before < next_run <= before + timedelta(days=1)


def test_next_run_is_computed_in_the_schedules_time_zone(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    schedule = create(
        client,
        admin,
        sqlite_source,
        cron_expression="0 2 * * *",
        timezone="Europe/Paris",
        name="nightly",
        retention_days=7,
        description="keep a week",
        backup_type="full",
    )
    next_run = parse(schedule["next_run"])
    local = next_run.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (2, 0)
    # 01:00Z in winter (CET), 00:00Z in summer (CEST)
    assert next_run.hour == (1 if local.utcoffset() == timedelta(hours=1) else 0)
    assert schedule["name"] == "nightly"
    assert schedule["retention_days"] == 7
    assert schedule["description"] == "keep a week"


def test_service_winter_example_0200_paris_is_0100z(sqlite_source: dict[str, Any]) -> None:
    with session_scope() as db:
        ds = db.get(DataSource, sqlite_source["id"])
        assert ds is not None
        schedule = schedules_service.create(
            db,
            data_source=ds,
            actor="test",
            data=BackupScheduleCreate(cron_expression="0 2 * * *", timezone="Europe/Paris"),
            now=datetime(2026, 1, 15, 12, tzinfo=UTC),
        )
        assert schedule.next_run == datetime(2026, 1, 16, 1, tzinfo=UTC)
        schedules_service.update_schedule(
            db,
            schedule=schedule,
            data_source=ds,
            actor="test",
            data=BackupScheduleUpdate(timezone="America/New_York"),
            now=datetime(2026, 1, 15, 12, tzinfo=UTC),
        )
        assert schedule.next_run == datetime(2026, 1, 16, 7, tzinfo=UTC)


def test_camel_case_fields_and_canonical_timezone(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    schedule = create(
        client,
        admin,
        sqlite_source,
        cronExpression="@daily",
        retentionDays=3,
        backupType="full",
        timezone="asia/tokyo",
    )
    assert schedule["cron_expression"] == "@daily"
    assert schedule["retention_days"] == 3
    assert schedule["timezone"] == "Asia/Tokyo"
    local = parse(schedule["next_run"]).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (0, 0)


def test_list_update_and_delete(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    first = create(client, admin, sqlite_source, cron_expression="0 2 * * *")
    second = create(client, admin, sqlite_source, cron_expression="30 4 * * 1", name="weekly")
    resp = client.get(url(sqlite_source), headers=admin.headers)
    assert resp.status_code == 200
    listed = resp.json()["data"]["schedules"]
    assert [s["id"] for s in listed] == [first["id"], second["id"]]
    assert set(resp.json()["data"]) == {"schedules"}

    resp = client.put(
        url(sqlite_source, first["id"]),
        headers=admin.headers,
        json={"cron_expression": "15 */6 * * *", "timezone": "Europe/Paris", "name": None},
    )
    assert resp.status_code == 200, resp.text
    changed = resp.json()["data"]["schedule"]
    assert changed["cron_expression"] == "15 */6 * * *"
    assert changed["timezone"] == "Europe/Paris"
    assert changed["name"] == first["name"]  # null leaves it as it was
    next_run = parse(changed["next_run"])
    assert next_run.minute == 15
    assert next_run - datetime.now(UTC) <= timedelta(hours=6)
    assert parse(changed["updated_at"]) >= parse(first["updated_at"])

    resp = client.put(
        url(sqlite_source, first["id"]), headers=admin.headers, json={"enabled": False}
    )
    assert resp.json()["data"]["schedule"]["enabled"] is False
    assert resp.json()["data"]["schedule"]["next_run"] is None  # a disabled schedule never runs
    resp = client.put(
        url(sqlite_source, first["id"]), headers=admin.headers, json={"enabled": True}
    )
    assert parse(resp.json()["data"]["schedule"]["next_run"]) > datetime.now(UTC)

    resp = client.delete(url(sqlite_source, second["id"]), headers=admin.headers)
    assert resp.status_code == 200
    assert resp.json() == {"success": True, "data": {"id": second["id"], "deleted": True}}
    listed = client.get(url(sqlite_source), headers=admin.headers).json()["data"]["schedules"]
    assert [s["id"] for s in listed] == [first["id"]]
    for method in ("PUT", "DELETE"):
        resp = client.request(
            method,
            url(sqlite_source, second["id"]),
            headers=admin.headers,
            json={} if method == "PUT" else None,
        )
        assert resp.status_code == 404
        assert resp.json()["error"]["message"] == (
            f"Backup schedule {second['id']} does not exist for data source {sqlite_source['id']}"
        )

    events = client.get(
        "/api/audit-log",
        headers=admin.headers,
        params={"data_source_id": sqlite_source["id"], "limit": 50},
    ).json()
    actions = {e["action"] for e in events["data"]["events"]}
    assert {
        "backup_schedule.created",
        "backup_schedule.updated",
        "backup_schedule.deleted",
    } <= actions


def another_source(client: TestClient, admin: Caller, sqlite_dir: Path) -> dict[str, Any]:
    path = sqlite_dir / f"other-{secrets.token_hex(4)}.db"
    sqlite3.connect(path).close()
    resp = client.post(
        "/api/data-sources",
        headers=admin.headers,
        json={"name": path.stem, "source_type": "sqlite", "database_name": str(path)},
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["data"]["data_source"])


def test_a_schedule_of_another_source_is_not_found(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any], sqlite_dir: Path
) -> None:
    schedule = create(client, admin, sqlite_source, cron_expression="0 2 * * *")
    other = another_source(client, admin, sqlite_dir)
    for method in ("PUT", "DELETE"):
        resp = client.request(
            method,
            url(other, schedule["id"]),
            headers=admin.headers,
            json={} if method == "PUT" else None,
        )
        assert resp.status_code == 404, resp.text


def _field_error(resp: Any, field: str) -> None:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["success"] is False
    assert body["error"]["code"] == "validation_error"
    assert any(d["loc"][-1] == field for d in body["error"]["details"]), body
    assert field in body["error"]["message"]


@pytest.mark.parametrize(
    "cron", ["not cron", "61 * * * *", "0 2 * * * *", "", "0 0 30 2 *", "H 2 * * *"]
)
def test_invalid_cron_is_422_naming_the_field(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any], cron: str
) -> None:
    _field_error(
        client.post(url(sqlite_source), headers=admin.headers, json={"cron_expression": cron}),
        "cron_expression",
    )


@pytest.mark.parametrize("tz", ["Mars/Olympus", "UTC+2", "../../../etc/passwd", ""])
def test_invalid_timezone_is_422_naming_the_field(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any], tz: str
) -> None:
    _field_error(
        client.post(
            url(sqlite_source),
            headers=admin.headers,
            json={"cron_expression": "0 2 * * *", "timezone": tz},
        ),
        "timezone",
    )


def test_put_validates_like_post(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    schedule = create(client, admin, sqlite_source, cron_expression="0 2 * * *")
    target = url(sqlite_source, schedule["id"])
    _field_error(
        client.put(target, headers=admin.headers, json={"cron_expression": "x"}), "cron_expression"
    )
    _field_error(
        client.put(target, headers=admin.headers, json={"timezone": "Nowhere/City"}), "timezone"
    )
    _field_error(
        client.put(target, headers=admin.headers, json={"retention_days": 0}), "retention_days"
    )
    unchanged = client.get(url(sqlite_source), headers=admin.headers).json()["data"]["schedules"]
    assert unchanged[0]["cron_expression"] == "0 2 * * *"
    assert unchanged[0]["timezone"] == "UTC"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "cron_expression"),
        ({"cron_expression": None}, "cron_expression"),
        ({"cron_expression": 5}, "cron_expression"),
        ({"cron_expression": "0 2 * * *", "retention_days": "7"}, "retention_days"),
        ({"cron_expression": "0 2 * * *", "retention_days": False}, "retention_days"),
        ({"cron_expression": "0 2 * * *", "enabled": 1}, "enabled"),
        ({"cron_expression": "0 2 * * *", "backup_type": "incremental"}, "backup_type"),
    ],
)
def test_malformed_bodies_are_422(
    client: TestClient,
    admin: Caller,
    sqlite_source: dict[str, Any],
    body: dict[str, Any],
    field: str,
) -> None:
    _field_error(client.post(url(sqlite_source), headers=admin.headers, json=body), field)


def test_viewers_read_and_only_schedulers_write(
    client: TestClient,
    admin: Caller,
    sqlite_source: dict[str, Any],
    make_caller: Any,
) -> None:
    schedule = create(client, admin, sqlite_source, cron_expression="0 2 * * *")
    viewer = make_caller("viewer")
    resp = client.get(url(sqlite_source), headers=viewer.headers)
    assert resp.status_code == 404  # no grant: the source's existence stays hidden
    grant = client.post(
        "/scan/data-sources/access-control",
        headers=admin.headers,
        json={"data_source_id": sqlite_source["id"], "user_id": viewer.id, "role": "read"},
    )
    assert grant.status_code == 201, grant.text
    resp = client.get(url(sqlite_source), headers=viewer.headers)
    assert resp.status_code == 200
    assert [s["id"] for s in resp.json()["data"]["schedules"]] == [schedule["id"]]
    for method, target in (
        ("POST", url(sqlite_source)),
        ("PUT", url(sqlite_source, schedule["id"])),
        ("DELETE", url(sqlite_source, schedule["id"])),
    ):
        resp = client.request(
            method,
            target,
            headers=viewer.headers,
            json={"cron_expression": "0 3 * * *"} if method != "DELETE" else None,
        )
        assert resp.status_code == 403, resp.text
        assert "backup.schedule" in resp.json()["error"]["message"]
