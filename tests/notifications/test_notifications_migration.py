"""The notifications migration on SQLite and PostgreSQL, and the service's SQL on PostgreSQL
(upserts, UPDATE/DELETE … RETURNING, partial indexes) that the rest of the suite runs on SQLite."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from sourcekeeper.auth.models import DataSourceGrant, User
from sourcekeeper.core.db import make_engine, utcnow
from sourcekeeper.core.pagination import PageParams
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.migrations_config import alembic_config
from sourcekeeper.notifications import service as notifications_service
from sourcekeeper.notifications.models import NotificationCounter

REVISION = "0002_notifications"
COUNTER_COLUMNS = [
    getattr(NotificationCounter, name)
    for name in (
        "user_id",
        "data_source_id",
        "dimension",
        "value",
        "total",
        "unread",
        "unacknowledged",
    )
]
TABLES = {
    "notifications",
    "notification_counters",
    "notification_preferences",
    "notification_deliveries",
}


def upgrade_downgrade_upgrade(url: str) -> Engine:
    cfg = alembic_config(url)
    command.upgrade(cfg, REVISION)
    command.downgrade(cfg, "0001")
    engine = make_engine(url)
    try:
        assert not TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    command.upgrade(cfg, REVISION)
    engine = make_engine(url)
    names = {ix["name"] for ix in inspect(engine).get_indexes("notifications")}
    assert {
        "ix_notifications_user_unread",
        "ix_notifications_user_created",
        "ix_notifications_expires",
    } <= names
    return engine


def test_migration_round_trip_on_sqlite(tmp_path: Path) -> None:
    upgrade_downgrade_upgrade(f"sqlite:///{tmp_path / 'meta.db'}").dispose()


@pytest.fixture
def pg_engine(pg_server: Any) -> Iterator[Engine]:
    name = f"sk_notif_{secrets.token_hex(4)}"
    pg_server.create_database(name)
    engine = upgrade_downgrade_upgrade(pg_server.url(name))
    try:
        yield engine
    finally:
        engine.dispose()
        pg_server.drop_database(name)


@pytest.mark.integration
def test_service_on_postgresql(pg_engine: Engine) -> None:
    with Session(pg_engine) as db, db.begin():
        admin = User(username="admin", password_hash="-", role="admin", is_active=True)
        analyst = User(
            username="ana",
            email="ana@example.org",
            password_hash="-",
            role="data_analyst",
            is_active=True,
        )
        outsider = User(username="out", password_hash="-", role="viewer", is_active=True)
        db.add_all([admin, analyst, outsider])
        db.flush()
        ds = DataSource(
            name="sales-db", source_type="postgresql", host="h", port=5432, database_name="sales"
        )
        db.add(ds)
        db.flush()
        db.add(
            DataSourceGrant(user_id=analyst.id, data_source_id=ds.id, role="read", permissions=[])
        )
        db.flush()
        ids = {}
        for i, (kind, prio) in enumerate(
            [("error", "high"), ("success", "low"), ("warning", "critical")]
        ):
            rows = notifications_service.emit(
                db,
                event_type="backup.failed",
                category="backup",
                type=kind,
                priority=prio,
                title=f"n{i}",
                message="m",
                data_source_id=ds.id,
            )
            assert {r.user_id for r in rows} == {admin.id, analyst.id}
            assert rows[0].data_source_name == "sales-db"
            ids[i] = next(r.id for r in rows if r.user_id == analyst.id)
        expired = notifications_service.emit(
            db,
            event_type="x",
            category="system",
            type="info",
            priority="low",
            title="old",
            message="m",
            actor_user_id=analyst.id,
            expires_at=utcnow() - timedelta(seconds=1),
        )
        assert {r.user_id for r in expired} == {admin.id, analyst.id}

        items, total, unread = notifications_service.list_notifications(
            db,
            user_id=analyst.id,
            page=PageParams(limit=2),
            filters=notifications_service.Filters(unread_only=True),
        )
        assert [n.title for n in items] == ["n2", "n1"] and (total, unread) == (3, 3)
        notifications_service.mark_read(db, user_id=analyst.id, notification_id=ids[0])
        notifications_service.acknowledge(
            db, user_id=analyst.id, username="ana", notification_id=ids[1]
        )
        assert (
            notifications_service.mark_many_read(
                db, user_id=analyst.id, ids=[ids[0], ids[2], 10**6]
            )
            == 1
        )
        notifications_service.delete_own(db, user_id=analyst.id, notification_id=ids[2])
        stats = notifications_service.stats(db, user_id=analyst.id, data_source_id=ds.id)
        assert (stats["total"], stats["unread_count"], stats["unacknowledged_count"]) == (2, 0, 1)
        assert stats["by_priority"] == {"low": 1, "medium": 0, "high": 1, "critical": 0}
        assert notifications_service.mark_all_read(db, user_id=admin.id) == 3

        assert notifications_service.purge_expired(db, utcnow()) == 2
        before = {tuple(c) for c in db.execute(select(*COUNTER_COLUMNS))}
        notifications_service.rebuild_counters(db)
        after = {tuple(c) for c in db.execute(select(*COUNTER_COLUMNS))}
        assert {c for c in before if c[4:] != (0, 0, 0)} == after
