"""/api/notifications over HTTP: isolation between users, filters, pagination, mark-read, stats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from notification_helpers import emit, grant

Caller = Any  # tests/conftest.py's Caller: .id, .username, .headers
URL = "/api/notifications"
NOTIFICATION_KEYS = {
    "id",
    "title",
    "message",
    "type",
    "priority",
    "category",
    "source",
    "data_source_id",
    "data_source_name",
    "action_url",
    "tags",
    "metadata",
    "created_at",
    "read_at",
    "acknowledged_at",
    "acknowledged_by",
    "expires_at",
}


def listing(client: TestClient, who: Caller, **params: Any) -> dict[str, Any]:
    resp = client.get(URL, headers=who.headers, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def titles(body: dict[str, Any]) -> list[str]:
    return [n["title"] for n in body["notifications"]]


@pytest.fixture
def pair(
    client: TestClient,
    admin: Caller,
    make_caller: Callable[[str], Caller],
    new_source: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Two analysts: u1 granted on source a, u2 on source b, both on shared source c."""
    u1, u2 = make_caller("data_analyst"), make_caller("data_analyst")
    a, b, c = new_source(), new_source(), new_source()
    grant(client, admin.headers, a["id"], u1.id)
    grant(client, admin.headers, b["id"], u2.id)
    grant(client, admin.headers, c["id"], u1.id)
    grant(client, admin.headers, c["id"], u2.id, role="write")
    return {"u1": u1, "u2": u2, "a": a, "b": b, "c": c}


class TestIsolation:
    def test_each_user_sees_only_sources_they_may_see(
        self, client: TestClient, admin: Caller, pair: dict[str, Any]
    ) -> None:
        u1, u2, a, b = pair["u1"], pair["u2"], pair["a"], pair["b"]
        emit(data_source_id=a["id"], title="About A")
        emit(data_source_id=b["id"], title="About B")

        body1 = listing(client, u1)
        assert set(body1) == {"success", "notifications", "total", "unread_count"}
        assert body1["success"] is True
        assert titles(body1) == ["About A"]
        assert (body1["total"], body1["unread_count"]) == (1, 1)
        note = body1["notifications"][0]
        assert set(note) == NOTIFICATION_KEYS
        assert note["data_source_id"] == a["id"]
        assert note["data_source_name"] == a["name"]
        assert note["source"] == "backup.completed"
        assert note["created_at"].endswith("Z")
        assert titles(listing(client, u2)) == ["About B"]
        # Admins see every source's events.
        assert titles(listing(client, admin, data_source_id=a["id"])) == ["About A"]
        assert titles(listing(client, admin, data_source_id=b["id"])) == ["About B"]

    def test_read_ack_delete_touch_only_the_callers_copy(
        self, client: TestClient, pair: dict[str, Any]
    ) -> None:
        u1, u2, c = pair["u1"], pair["u2"], pair["c"]
        copies = emit(data_source_id=c["id"], title="Shared event", priority="high")
        mine, theirs = copies[u1.id], copies[u2.id]
        assert mine != theirs

        assert client.post(f"{URL}/{mine}/read", headers=u1.headers).status_code == 200
        acked = client.post(f"{URL}/{mine}/acknowledge", headers=u1.headers).json()["notification"]
        assert acked["acknowledged_by"] == u1.username
        other = client.get(f"{URL}/{theirs}", headers=u2.headers).json()["notification"]
        assert other["read_at"] is None and other["acknowledged_at"] is None

        resp = client.delete(f"{URL}/{mine}", headers=u1.headers)
        assert resp.status_code == 200
        assert resp.json() == {"success": True, "id": mine, "deleted": True}
        assert client.get(f"{URL}/{mine}", headers=u1.headers).status_code == 404
        assert client.get(f"{URL}/{theirs}", headers=u2.headers).status_code == 200
        assert listing(client, u2, data_source_id=c["id"])["unread_count"] == 1

    def test_someone_elses_id_is_404_for_every_action(
        self, client: TestClient, pair: dict[str, Any]
    ) -> None:
        u1, u2, a = pair["u1"], pair["u2"], pair["a"]
        nid = emit(data_source_id=a["id"])[u1.id]
        for method, path in (
            ("GET", ""),
            ("POST", "/read"),
            ("POST", "/acknowledge"),
            ("GET", "/deliveries"),
            ("DELETE", ""),
        ):
            resp = client.request(method, f"{URL}/{nid}{path}", headers=u2.headers)
            assert resp.status_code == 404, (method, path, resp.text)
            assert resp.json()["error"]["code"] == "not_found"
        mark = client.post(f"{URL}/mark-read", headers=u2.headers, json={"notification_ids": [nid]})
        assert mark.json() == {"success": True, "updated": 0}
        untouched = client.get(f"{URL}/{nid}", headers=u1.headers).json()["notification"]
        assert untouched["read_at"] is None and untouched["acknowledged_at"] is None

    def test_ids_are_validated_as_integers(self, client: TestClient, admin: Caller) -> None:
        for bad in ("abc", "0", "-3", str(2**31), "1.5"):
            assert client.get(f"{URL}/{bad}", headers=admin.headers).status_code == 422, bad
        assert client.get(f"{URL}/{2**31 - 1}", headers=admin.headers).status_code == 404


class TestPermissions:
    def test_requires_authentication(self, client: TestClient) -> None:
        anonymous = TestClient(client.app)  # the shared client keeps the last login's cookie
        for method, path in (
            ("GET", ""),
            ("GET", "/stats"),
            ("POST", "/mark-read"),
            ("GET", "/1"),
            ("DELETE", "/1"),
            ("GET", "/preferences"),
        ):
            assert anonymous.request(method, f"{URL}{path}").status_code == 401

    def test_viewer_may_read_but_not_delete(
        self,
        client: TestClient,
        admin: Caller,
        make_caller: Callable[[str], Caller],
        new_source: Callable[[], dict[str, Any]],
    ) -> None:
        viewer, src = make_caller("viewer"), new_source()
        grant(client, admin.headers, src["id"], viewer.id)
        nid = emit(data_source_id=src["id"])[viewer.id]
        assert client.post(f"{URL}/{nid}/read", headers=viewer.headers).status_code == 200
        assert client.post(f"{URL}/{nid}/acknowledge", headers=viewer.headers).status_code == 200
        resp = client.delete(f"{URL}/{nid}", headers=viewer.headers)
        assert resp.status_code == 403
        assert "notification.delete" in resp.json()["error"]["message"]
        assert client.get(f"{URL}/{nid}", headers=viewer.headers).status_code == 200


@pytest.fixture
def mixed(
    client: TestClient,
    admin: Caller,
    make_caller: Callable[[str], Caller],
    new_source: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """One analyst with four notifications of different kinds, in a known order."""
    user = make_caller("data_analyst")
    a, b = new_source(), new_source()
    grant(client, admin.headers, a["id"], user.id)
    grant(client, admin.headers, b["id"], user.id)
    emit(data_source_id=a["id"], title="n1", type="error", priority="high", category="connectivity")
    emit(data_source_id=a["id"], title="n2", type="success", priority="low", category="backup")
    emit(
        data_source_id=b["id"],
        title="n3",
        type="warning",
        priority="critical",
        category="security",
        tags=["pii"],
        metadata={"finding": "PG-AUTH-001"},
    )
    # No source: admins and the actor get it.
    emit(
        title="n4",
        type="info",
        priority="medium",
        category="system",
        actor_user_id=user.id,
        event_type="system.notice",
    )
    body = listing(client, user)
    assert titles(body) == ["n4", "n3", "n2", "n1"]
    created = {n["title"]: n["created_at"] for n in body["notifications"]}
    return {"user": user, "a": a, "b": b, "created": created}


class TestFilters:
    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"type": "error"}, ["n1"]),
            ({"priority": "critical"}, ["n3"]),
            ({"category": "backup"}, ["n2"]),
            ({"category": "system"}, ["n4"]),
            ({"data_source_id": "a"}, ["n2", "n1"]),
            ({"data_source_id": "b"}, ["n3"]),
            ({"data_source_id": "a", "type": "success"}, ["n2"]),
            ({"data_source_id": "a", "priority": "critical"}, []),
            (
                {
                    "data_source_id": "b",
                    "category": "security",
                    "priority": "critical",
                    "type": "warning",
                },
                ["n3"],
            ),
        ],
    )
    def test_each_filter_and_combinations(
        self, client: TestClient, mixed: dict[str, Any], params: dict[str, str], expected: list[str]
    ) -> None:
        if "data_source_id" in params:
            params = params | {"data_source_id": mixed[params["data_source_id"]]["id"]}
        body = listing(client, mixed["user"], **params)
        assert titles(body) == expected
        assert body["total"] == len(expected)
        assert body["unread_count"] == len(expected)

    def test_unread_only_and_unread_count(self, client: TestClient, mixed: dict[str, Any]) -> None:
        user = mixed["user"]
        first = listing(client, user, category="connectivity")["notifications"][0]
        client.post(f"{URL}/{first['id']}/read", headers=user.headers)
        body = listing(client, user, unread_only="true")
        assert titles(body) == ["n4", "n3", "n2"]
        assert (body["total"], body["unread_count"]) == (3, 3)
        everything = listing(client, user)
        assert (everything["total"], everything["unread_count"]) == (4, 3)
        scoped = listing(client, user, unread_only="true", data_source_id=mixed["a"]["id"])
        assert titles(scoped) == ["n2"]
        assert (scoped["total"], scoped["unread_count"]) == (1, 1)

    def test_since_and_before(self, client: TestClient, mixed: dict[str, Any]) -> None:
        user, created = mixed["user"], mixed["created"]
        assert titles(listing(client, user, since=created["n3"])) == ["n4", "n3"]
        assert titles(listing(client, user, before=created["n3"])) == ["n2", "n1"]
        window = listing(client, user, since=created["n2"], before=created["n4"])
        assert titles(window) == ["n3", "n2"]
        assert (window["total"], window["unread_count"]) == (2, 2)
        combined = listing(client, user, since=created["n2"], unread_only="true", type="warning")
        assert titles(combined) == ["n3"]
        naive = created["n3"].removesuffix("Z")  # no zone means UTC
        assert titles(listing(client, user, since=naive)) == ["n4", "n3"]
        assert listing(client, user, since=created["n4"], before=created["n1"])["total"] == 0

    def test_undefined_null_and_empty_mean_not_given(
        self, client: TestClient, mixed: dict[str, Any]
    ) -> None:
        user = mixed["user"]
        params = {
            "type": "undefined",
            "priority": "null",
            "category": "",
            "data_source_id": "undefined",
            "unread_only": "null",
            "since": "undefined",
            "before": "",
            "limit": "undefined",
            "offset": "null",
        }
        body = listing(client, user, **params)
        assert titles(body) == ["n4", "n3", "n2", "n1"]
        stats = client.get(
            f"{URL}/stats", headers=user.headers, params={"data_source_id": "undefined"}
        )
        assert stats.status_code == 200 and stats.json()["total"] == 4

    @pytest.mark.parametrize(
        "params",
        [
            {"type": "bogus"},
            {"priority": "urgent"},
            {"category": "misc"},
            {"data_source_id": "abc"},
            {"data_source_id": "0"},
            {"since": "yesterday"},
            {"before": "2026-13-01"},
            {"unread_only": "maybe"},
        ],
    )
    def test_bad_values_are_422(
        self, client: TestClient, admin: Caller, params: dict[str, str]
    ) -> None:
        resp = client.get(URL, headers=admin.headers, params=params)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["details"][0]["loc"][-1] == next(iter(params))


class TestPagination:
    def test_pages_newest_first_with_total(
        self,
        client: TestClient,
        admin: Caller,
        make_caller: Callable[[str], Caller],
        new_source: Callable[[], dict[str, Any]],
    ) -> None:
        user, src = make_caller("viewer"), new_source()
        grant(client, admin.headers, src["id"], user.id)
        for i in range(5):
            emit(data_source_id=src["id"], title=f"p{i}")
        assert titles(listing(client, user, limit=2)) == ["p4", "p3"]
        assert titles(listing(client, user, limit=2, offset=2)) == ["p2", "p1"]
        last = listing(client, user, limit=2, offset=4)
        assert (titles(last), last["total"]) == (["p0"], 5)
        past = listing(client, user, limit=2, offset=10)
        assert (past["notifications"], past["total"], past["unread_count"]) == ([], 5, 5)
        assert len(listing(client, user, limit=500)["notifications"]) == 5
        assert listing(client, user)["total"] == 5  # default limit 50

    @pytest.mark.parametrize(
        "params", [{"limit": 0}, {"limit": 501}, {"limit": -1}, {"offset": -1}, {"limit": "ten"}]
    )
    def test_out_of_range_is_422(
        self, client: TestClient, admin: Caller, params: dict[str, Any]
    ) -> None:
        resp = client.get(URL, headers=admin.headers, params=params)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "validation_error"


class TestMarkRead:
    @pytest.fixture
    def setup(self, client: TestClient, pair: dict[str, Any]) -> dict[str, Any]:
        u1, a, c = pair["u1"], pair["a"], pair["c"]
        mine = [emit(data_source_id=a["id"], title=f"m{i}")[u1.id] for i in range(3)]
        shared = emit(data_source_id=c["id"], title="shared")
        return pair | {"mine": mine, "shared": shared}

    def post(self, client: TestClient, who: Caller, body: Any) -> Any:
        return client.post(f"{URL}/mark-read", headers=who.headers, json=body)

    def test_ids_as_numbers_and_digit_strings(
        self, client: TestClient, setup: dict[str, Any]
    ) -> None:
        u1, mine = setup["u1"], setup["mine"]
        resp = self.post(client, u1, {"notification_ids": [mine[0], str(mine[1])]})
        assert resp.status_code == 200
        assert resp.json() == {"success": True, "updated": 2}
        # Already read ones and duplicates are not counted again.
        again = self.post(client, u1, {"notification_ids": [mine[0], mine[0], str(mine[2])]})
        assert again.json()["updated"] == 1
        assert listing(client, u1, data_source_id=setup["a"]["id"])["unread_count"] == 0

    def test_others_ids_are_ignored_and_not_counted(
        self, client: TestClient, setup: dict[str, Any]
    ) -> None:
        u1, u2, shared = setup["u1"], setup["u2"], setup["shared"]
        resp = self.post(
            client, u1, {"notification_ids": [shared[u2.id], shared[u1.id], 2**31 - 1]}
        )
        assert resp.json()["updated"] == 1
        theirs = client.get(f"{URL}/{shared[u2.id]}", headers=u2.headers).json()["notification"]
        assert theirs["read_at"] is None

    def test_empty_list_updates_nothing(self, client: TestClient, setup: dict[str, Any]) -> None:
        u1 = setup["u1"]
        before = listing(client, u1)["unread_count"]
        assert self.post(client, u1, {"notification_ids": []}).json() == {
            "success": True,
            "updated": 0,
        }
        assert listing(client, u1)["unread_count"] == before

    def test_camel_case_key(self, client: TestClient, setup: dict[str, Any]) -> None:
        resp = self.post(client, setup["u1"], {"notificationIds": [str(setup["mine"][0])]})
        assert resp.json()["updated"] == 1

    @pytest.mark.parametrize(
        "body",
        [
            {"notification_ids": [True]},
            {"notification_ids": ["abc"]},
            {"notification_ids": ["1a"]},
            {"notification_ids": [1.5]},
            {"notification_ids": ["-2"]},
            {"notification_ids": [0]},
            {"notification_ids": [" 5"]},
            {"notification_ids": [2**31]},
            {"notification_ids": "5"},
            {"notification_ids": [None]},
            {},
            {"all": False},
            {"all": "yes"},
            {"all": 1},
            {"all": True, "notification_ids": [1]},
            {"all": True, "data_source_id": "x"},
            {"notification_ids": list(range(1, 1002))},
        ],
    )
    def test_bad_bodies_are_422(self, client: TestClient, admin: Caller, body: Any) -> None:
        resp = self.post(client, admin, body)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "validation_error"

    def test_all_and_all_per_source(self, client: TestClient, setup: dict[str, Any]) -> None:
        u1, u2, a, c = setup["u1"], setup["u2"], setup["a"], setup["c"]
        scoped = self.post(client, u1, {"all": True, "data_source_id": c["id"]})
        assert scoped.json()["updated"] == 1
        assert listing(client, u1)["unread_count"] == 3
        everything = self.post(client, u1, {"all": True, "notification_ids": []})
        assert everything.json()["updated"] == 3
        assert listing(client, u1)["unread_count"] == 0
        assert self.post(client, u1, {"all": True}).json()["updated"] == 0
        # The other recipient's copy of the shared event is still unread.
        assert listing(client, u2, data_source_id=c["id"])["unread_count"] == 1
        assert listing(client, u1, data_source_id=a["id"], unread_only=True)["total"] == 0


class TestSingleActions:
    def test_read_is_idempotent(self, client: TestClient, pair: dict[str, Any]) -> None:
        u1 = pair["u1"]
        nid = emit(data_source_id=pair["a"]["id"])[u1.id]
        first = client.post(f"{URL}/{nid}/read", headers=u1.headers)
        assert set(first.json()) == {"success", "notification"}
        read_at = first.json()["notification"]["read_at"]
        assert read_at is not None
        again = client.post(f"{URL}/{nid}/read", headers=u1.headers).json()["notification"]
        assert again["read_at"] == read_at
        assert listing(client, u1, data_source_id=pair["a"]["id"])["unread_count"] == 0

    def test_acknowledge_sets_who_when_and_read(
        self, client: TestClient, pair: dict[str, Any]
    ) -> None:
        u1 = pair["u1"]
        nid = emit(data_source_id=pair["a"]["id"], priority="critical", type="error")[u1.id]
        note = client.post(f"{URL}/{nid}/acknowledge", headers=u1.headers).json()["notification"]
        assert note["acknowledged_by"] == u1.username
        assert note["acknowledged_at"] is not None and note["read_at"] is not None
        again = client.post(f"{URL}/{nid}/acknowledge", headers=u1.headers).json()["notification"]
        assert again["acknowledged_at"] == note["acknowledged_at"]
        stats = client.get(f"{URL}/stats", headers=u1.headers).json()
        assert stats["unacknowledged_count"] == stats["total"] - 1

    def test_delete_twice(self, client: TestClient, pair: dict[str, Any]) -> None:
        u1 = pair["u1"]
        nid = emit(data_source_id=pair["a"]["id"])[u1.id]
        assert client.delete(f"{URL}/{nid}", headers=u1.headers).status_code == 200
        again = client.delete(f"{URL}/{nid}", headers=u1.headers)
        assert again.status_code == 404
        assert listing(client, u1)["total"] == 0


class TestStats:
    def test_counts_and_breakdowns(self, client: TestClient, mixed: dict[str, Any]) -> None:
        user = mixed["user"]
        resp = client.get(f"{URL}/stats", headers=user.headers)
        assert resp.status_code == 200
        stats = resp.json()
        assert set(stats) == {
            "success",
            "total",
            "unread_count",
            "unacknowledged_count",
            "by_type",
            "by_priority",
            "by_category",
            "last_24h",
        }
        assert (stats["total"], stats["unread_count"], stats["unacknowledged_count"]) == (4, 4, 4)
        assert stats["by_type"] == {"info": 1, "success": 1, "warning": 1, "error": 1}
        assert stats["by_priority"] == {"low": 1, "medium": 1, "high": 1, "critical": 1}
        assert stats["by_category"] == {
            "system": 1,
            "performance": 0,
            "security": 1,
            "backup": 1,
            "connectivity": 1,
            "compliance": 0,
            "maintenance": 0,
        }
        assert stats["last_24h"] == 4

        notes = listing(client, user)["notifications"]
        client.post(f"{URL}/{notes[0]['id']}/acknowledge", headers=user.headers)
        client.post(f"{URL}/{notes[1]['id']}/read", headers=user.headers)
        client.delete(f"{URL}/{notes[2]['id']}", headers=user.headers)
        after = client.get(f"{URL}/stats", headers=user.headers).json()
        assert (after["total"], after["unread_count"], after["unacknowledged_count"]) == (3, 1, 2)

        scoped = client.get(
            f"{URL}/stats", headers=user.headers, params={"data_source_id": mixed["a"]["id"]}
        ).json()
        assert scoped["by_category"]["connectivity"] == 1
        assert scoped["last_24h"] == scoped["total"] == 1  # n2 was deleted

    def test_fixed_segments_are_not_ids(self, client: TestClient, admin: Caller) -> None:
        assert client.get(f"{URL}/stats", headers=admin.headers).status_code == 200
        assert client.get(f"{URL}/preferences", headers=admin.headers).status_code == 200
        resp = client.post(f"{URL}/mark-read", headers=admin.headers, json={"notification_ids": []})
        assert resp.status_code == 200

    def test_openapi_lists_every_route(self, client: TestClient) -> None:
        paths = client.get("/openapi.json").json()["paths"]
        assert {"get", "put"} <= set(paths[f"{URL}/preferences"])
        assert "post" in paths[f"{URL}/mark-read"]
        assert "get" in paths[f"{URL}/stats"]
        assert {"get", "delete"} <= set(paths[f"{URL}/{{notification_id}}"])
        assert "post" in paths[f"{URL}/{{notification_id}}/acknowledge"]
