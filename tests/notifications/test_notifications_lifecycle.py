"""emit() recipients and transaction behaviour, expiry and purge, counters that match the rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from notification_helpers import emit, grant
from sqlalchemy import func, select

from sourcekeeper.core.db import session_scope, utcnow
from sourcekeeper.core.metrics import NOTIFICATIONS_CREATED
from sourcekeeper.jobs import queue, tick
from sourcekeeper.notifications import service as notifications_service
from sourcekeeper.notifications.models import Notification, NotificationCounter

URL = "/api/notifications"


def counters(user_id: int) -> dict[tuple[Any, ...], tuple[int, int, int]]:
    with session_scope() as db:
        rows = db.execute(select(NotificationCounter).where(NotificationCounter.user_id == user_id))
        return {
            (c.data_source_id, c.dimension, c.value): (c.total, c.unread, c.unacknowledged)
            for (c,) in rows
            if (c.total, c.unread, c.unacknowledged) != (0, 0, 0)
        }


def assert_counters_match_rows(user_id: int) -> None:
    kept = counters(user_id)
    with session_scope() as db:
        notifications_service.rebuild_counters(db, user_id=user_id)
    assert counters(user_id) == kept


class TestRecipients:
    def test_admins_grant_holders_and_the_actor(
        self,
        client: TestClient,
        admin: Any,
        make_caller: Callable[[str], Any],
        new_source: Callable[[], dict[str, Any]],
    ) -> None:
        holder, outsider, actor = (
            make_caller("viewer"),
            make_caller("viewer"),
            make_caller("data_steward"),
        )
        src = new_source()
        grant(client, admin.headers, src["id"], holder.id)
        copies = emit(data_source_id=src["id"], actor_user_id=actor.id)
        assert holder.id in copies and admin.id in copies and actor.id in copies
        assert outsider.id not in copies
        # Without a source: the admins, plus the actor.
        system = emit(category="system", type="info", actor_user_id=holder.id)
        assert admin.id in system and holder.id in system and outsider.id not in system

    def test_revoked_grant_gets_nothing_new(
        self,
        client: TestClient,
        admin: Any,
        make_caller: Callable[[str], Any],
        new_source: Callable[[], dict[str, Any]],
    ) -> None:
        user, src = make_caller("viewer"), new_source()
        grant(client, admin.headers, src["id"], user.id)
        acl = client.get(
            f"/scan/data-sources/{src['id']}/access-control", headers=admin.headers
        ).json()["data"]
        grant_id = next(g["id"] for g in acl if g["user_id"] == user.id)
        client.delete(f"/scan/data-sources/access-control/{grant_id}", headers=admin.headers)
        assert user.id not in emit(data_source_id=src["id"])

    def test_unknown_vocabulary_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="'urgent'"):
            emit(priority="urgent")

    def test_metric_counts_copies_per_category(self, admin: Any) -> None:
        metric = NOTIFICATIONS_CREATED.labels(category="maintenance")
        before = metric._value.get()
        copies = emit(category="maintenance", type="info")
        assert metric._value.get() == before + len(copies)


class TestTransaction:
    def test_rollback_drops_copies_and_delivery(
        self,
        monkeypatch: pytest.MonkeyPatch,
        client: TestClient,
        admin: Any,
        make_caller: Callable[[str], Any],
        new_source: Callable[[], dict[str, Any]],
    ) -> None:
        wants, quiet, src = make_caller("viewer"), make_caller("viewer"), new_source()
        grant(client, admin.headers, src["id"], wants.id)
        grant(client, admin.headers, src["id"], quiet.id)
        client.put(
            f"{URL}/preferences",
            headers=wants.headers,
            json={"webhooks": [{"url": "http://127.0.0.1:9/never"}]},
        )
        queued: list[tuple[str, dict[str, Any]]] = []
        monkeypatch.setattr(queue, "enqueue", lambda name, **kw: queued.append((name, kw)))

        with pytest.raises(RuntimeError), session_scope() as db:
            notifications_service.emit(
                db,
                event_type="x.y",
                category="system",
                type="info",
                priority="low",
                title="Rolled back",
                message="-",
                data_source_id=src["id"],
            )
            raise RuntimeError("the caller's transaction fails after emitting")
        assert queued == []
        with session_scope() as db:
            assert (
                db.scalar(
                    select(func.count())
                    .select_from(Notification)
                    .where(Notification.title == "Rolled back")
                )
                == 0
            )

        copies = emit(data_source_id=src["id"], title="Committed")
        assert [name for name, _ in queued] == ["notifications.deliver"]
        # Only copies whose owner set up a channel are queued for delivery.
        ids = queued[0][1]["notification_ids"]
        assert copies[wants.id] in ids and copies[quiet.id] not in ids
        assert_counters_match_rows(wants.id)


class TestExpiry:
    def test_expired_disappear_then_are_purged(
        self,
        client: TestClient,
        admin: Any,
        make_caller: Callable[[str], Any],
        new_source: Callable[[], dict[str, Any]],
    ) -> None:
        user, src = make_caller("data_analyst"), new_source()
        grant(client, admin.headers, src["id"], user.id)
        now = utcnow()
        gone = emit(
            data_source_id=src["id"], title="expired", expires_at=now - timedelta(seconds=1)
        )[user.id]
        kept = emit(
            data_source_id=src["id"], title="expires later", expires_at=now + timedelta(days=1)
        )[user.id]
        emit(data_source_id=src["id"], title="never expires")

        body = client.get(URL, headers=user.headers).json()
        assert [n["title"] for n in body["notifications"]] == ["never expires", "expires later"]
        assert (body["total"], body["unread_count"]) == (2, 2)
        assert body["notifications"][1]["expires_at"].endswith("Z")
        stats = client.get(f"{URL}/stats", headers=user.headers).json()
        assert (stats["total"], stats["unread_count"], stats["last_24h"]) == (2, 2, 2)
        for method, path in (
            ("GET", ""),
            ("POST", "/read"),
            ("POST", "/acknowledge"),
            ("DELETE", ""),
        ):
            assert (
                client.request(method, f"{URL}/{gone}{path}", headers=user.headers).status_code
                == 404
            )
        marked = client.post(
            f"{URL}/mark-read", headers=user.headers, json={"notification_ids": [gone, kept]}
        )
        assert marked.json()["updated"] == 1

        assert ("notifications.purge_expired", notifications_service.purge_expired) in tick.STEPS
        with session_scope() as db:
            assert notifications_service.purge_expired(db, utcnow()) >= 1
            assert db.get(Notification, gone) is None
            assert db.get(Notification, kept) is not None
        after = client.get(f"{URL}/stats", headers=user.headers).json()
        assert (after["total"], after["unread_count"]) == (2, 1)
        assert_counters_match_rows(user.id)

    def test_tick_runs_the_purge(self, make_caller: Callable[[str], Any]) -> None:
        from sourcekeeper.jobs.tasks import run_tick_once

        user = make_caller("viewer")
        nid = emit(
            category="system",
            type="info",
            actor_user_id=user.id,
            expires_at=utcnow() - timedelta(minutes=5),
        )[user.id]
        run_tick_once()
        with session_scope() as db:
            assert db.get(Notification, nid) is None
        assert_counters_match_rows(user.id)


def test_counters_follow_every_change(
    client: TestClient,
    admin: Any,
    make_caller: Callable[[str], Any],
    new_source: Callable[[], dict[str, Any]],
) -> None:
    """After a mix of every write, the counters equal a recount from the rows."""
    user, a, b = make_caller("data_analyst"), new_source(), new_source()
    grant(client, admin.headers, a["id"], user.id)
    grant(client, admin.headers, b["id"], user.id)
    ids = [
        emit(data_source_id=src["id"], type=kind, priority=prio, category=cat)[user.id]
        for src, kind, prio, cat in (
            (a, "error", "high", "connectivity"),
            (a, "success", "low", "backup"),
            (b, "warning", "critical", "security"),
            (b, "error", "high", "backup"),
            (a, "info", "medium", "maintenance"),
            (b, "info", "low", "system"),
        )
    ]
    ids.append(emit(category="system", type="info", actor_user_id=user.id)[user.id])
    h = user.headers
    client.post(f"{URL}/{ids[0]}/read", headers=h)
    client.post(f"{URL}/{ids[0]}/read", headers=h)
    client.post(f"{URL}/{ids[1]}/acknowledge", headers=h)
    client.post(f"{URL}/{ids[2]}/acknowledge", headers=h)
    client.delete(f"{URL}/{ids[2]}", headers=h)
    client.delete(f"{URL}/{ids[3]}", headers=h)
    client.post(f"{URL}/mark-read", headers=h, json={"notification_ids": [ids[4], ids[0]]})
    client.post(f"{URL}/mark-read", headers=h, json={"all": True, "data_source_id": b["id"]})
    assert_counters_match_rows(user.id)

    stats = client.get(f"{URL}/stats", headers=h).json()
    with session_scope() as db:
        rows = list(db.scalars(select(Notification).where(Notification.user_id == user.id)))
    assert stats["total"] == len(rows) == 5
    assert stats["unread_count"] == sum(r.read_at is None for r in rows) == 1
    assert stats["unacknowledged_count"] == sum(r.acknowledged_at is None for r in rows) == 4
