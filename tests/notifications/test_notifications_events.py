"""Events wired from other domains, through the real API path."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from servers_plugin import free_port


def test_unreachable_source_is_announced_once_per_outage(
    client: TestClient, admin: Any, make_caller: Callable[[str], Any]
) -> None:
    steward = make_caller("data_steward")  # creates the source, so holds an admin grant on it
    outsider = make_caller("data_steward")
    name = f"sales-db-{secrets.token_hex(3)}"
    port = free_port()  # nothing listens there
    created = client.post(
        "/api/data-sources",
        headers=steward.headers,
        json={
            "name": name,
            "source_type": "postgresql",
            "host": "127.0.0.1",
            "port": port,
            "database_name": "sales",
            "username": "backup",
            "password": "not-used-Zq",
        },
    )
    assert created.status_code == 201, created.text
    ds_id = created.json()["data"]["data_source"]["id"]

    def unreachable(who: Any) -> list[dict[str, Any]]:
        body = client.get(
            "/api/notifications",
            headers=who.headers,
            params={"data_source_id": ds_id, "category": "connectivity"},
        ).json()
        return body["notifications"]

    first = client.post(f"/api/data-sources/{ds_id}/test-connection", headers=steward.headers)
    assert first.status_code == 200
    assert first.json()["data"]["ok"] is False
    notes = unreachable(steward)
    assert len(notes) == 1
    note = notes[0]
    assert note["title"] == f"Data source '{name}' is unreachable"
    assert note["message"].startswith(f"Data source '{name}' is unreachable: ")
    assert f"127.0.0.1:{port}" in note["message"] and "refused" in note["message"]
    assert (note["type"], note["priority"], note["category"]) == ("error", "high", "connectivity")
    assert note["action_url"] == f"/data-sources/{ds_id}"
    assert note["source"] == "datasource.unreachable"
    assert note["data_source_name"] == name
    assert len(unreachable(admin)) == 1  # admins hear about every source
    assert unreachable(outsider) == []  # no grant, no notification

    again = client.post(f"/api/data-sources/{ds_id}/test-connection", headers=steward.headers)
    assert again.json()["data"]["ok"] is False
    assert len(unreachable(steward)) == 1  # still the same outage: nothing new
    assert len(unreachable(admin)) == 1
