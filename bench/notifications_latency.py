"""Notification latency at scale: list (first page, unread only), stats and mark-all-read for one
user, at 10,000 rows and at --rows (default 1,000,000) spread over 100 users.

    .venv/bin/python bench/notifications_latency.py [--rows 1000000] [--db sqlite|postgresql]

Calls go through the service layer, each in its own transaction as a request would run. Rows are
created over the last 90 days (so "last 24 h" holds about 1/90 of them), ~70 % read, ~50 %
acknowledged, ~10 % without a data source, ~5 % with a future expiry. Mark-all-read is timed on
20 unread notifications re-created before each call (untimed), so both sizes do the same work.
For PostgreSQL a throwaway server is started (tests/servers_plugin.py) and stopped at the end.
Targets: p95 < 30 ms for list and stats at 1M rows, and a 1M/10k ratio under 2.
"""

from __future__ import annotations

# ruff: noqa: T201 - a command-line benchmark reports on stdout
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
# Settings are read once per process; the data dir must be fixed before sourcekeeper is imported.
_DATA_DIR = Path(tempfile.mkdtemp(prefix="sk-bench-notif-"))
os.environ["SOURCEKEEPER_DATA_DIR"] = str(_DATA_DIR)

from alembic import command  # noqa: E402
from sqlalchemy import insert, select, text, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from sourcekeeper.auth.models import User  # noqa: E402
from sourcekeeper.core.config import get_settings  # noqa: E402
from sourcekeeper.core.db import get_engine, make_engine, reset_engine, session_scope  # noqa: E402
from sourcekeeper.core.pagination import PageParams  # noqa: E402
from sourcekeeper.migrations_config import alembic_config  # noqa: E402
from sourcekeeper.notifications import service  # noqa: E402
from sourcekeeper.notifications.models import (  # noqa: E402
    Category,
    Notification,
    NotificationType,
    Priority,
)

USERS = 100
SOURCES = 20
BATCH = 20_000
MARK_BATCH = 20


def use_database(url: str) -> None:
    """Point the app's engine at `url` and bring it to the newest schema."""
    os.environ["SOURCEKEEPER_DATABASE_URL"] = url
    get_settings.cache_clear()
    reset_engine()
    command.upgrade(alembic_config(url), "heads")
    get_engine()


def seed(rows: int, rng: random.Random) -> list[int]:
    """Insert users and `rows` notifications (bulk executemany, or COPY on PostgreSQL)."""
    now = datetime.now(UTC)
    users_t = User.__table__
    with session_scope() as db:
        db.execute(
            insert(users_t),
            [
                {
                    "username": f"bench-{i}",
                    "email": f"bench-{i}@example.org",
                    "password_hash": "-",
                    "role": "admin" if i == 0 else "data_analyst",
                    "is_active": True,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(USERS)
            ],
        )
        user_ids = list(db.scalars(select(users_t.c.id).order_by(users_t.c.id)))
    types, prios, cats = list(NotificationType), list(Priority), list(Category)
    span = timedelta(days=90).total_seconds()
    start = now - timedelta(days=90)

    def row(i: int) -> dict[str, Any]:
        created = start + timedelta(seconds=span * i / rows)
        read = rng.random() < 0.7
        source = rng.randint(1, SOURCES) if rng.random() < 0.9 else None
        return {
            "user_id": user_ids[i % USERS],
            "event_type": "backup.completed",
            "type": rng.choice(types).value,
            "priority": rng.choice(prios).value,
            "category": rng.choice(cats).value,
            "title": f"Backup of 'src-{source}' completed",
            "message": "The nightly backup finished in 42 s (1.2 GB).",
            "data_source_id": source,
            "data_source_name": f"src-{source}" if source else None,
            "action_url": f"/data-sources/{source}" if source else None,
            "tags": [],
            "metadata": {},
            "created_at": created,
            "read_at": created + timedelta(hours=1) if read else None,
            "acknowledged_at": created + timedelta(hours=2)
            if read and rng.random() < 0.7
            else None,
            "acknowledged_by": None,
            "expires_at": now + timedelta(days=30) if rng.random() < 0.05 else None,
        }

    table = Notification.__table__
    started = time.perf_counter()
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        _copy_rows(engine, table, (row(i) for i in range(rows)))
    else:
        for lo in range(0, rows, BATCH):
            with session_scope() as db:
                db.execute(insert(table), [row(i) for i in range(lo, min(rows, lo + BATCH))])
    with session_scope() as db:
        service.rebuild_counters(db)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    print(f"  seeded {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    return user_ids


def _copy_rows(engine: Any, table: Any, rows: Iterator[dict[str, Any]]) -> None:
    """COPY is PostgreSQL's bulk path (several times faster than multi-row INSERTs)."""
    import json

    cols = [c.name for c in table.columns if c.name != "id"]
    raw = engine.raw_connection()
    try:
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY notifications ({', '.join(cols)}) FROM STDIN") as copy,
        ):
            for r in rows:
                copy.write_row(
                    [json.dumps(r[c]) if c in ("tags", "metadata") else r[c] for c in cols]
                )
        raw.commit()
    finally:
        raw.close()


class Target:
    """One seeded database and the user whose calls are timed; sessions as `session_scope` makes
    them (one transaction per call), on an engine of its own so both sizes can be timed in turn."""

    def __init__(self, size: int, url: str, user_id: int) -> None:
        self.size, self.user_id = size, user_id
        self.engine = make_engine(url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine) as db, db.begin():
            yield db

    def list_first_page(self) -> None:
        with self.session() as db:
            items, total, _ = service.list_notifications(
                db,
                user_id=self.user_id,
                page=PageParams(limit=50),
                filters=service.Filters(unread_only=True),
            )
            assert items and total

    def stats(self) -> None:
        with self.session() as db:
            service.stats(db, user_id=self.user_id)

    def mark_all_read(self) -> None:
        with self.session() as db:
            assert service.mark_all_read(db, user_id=self.user_id) == MARK_BATCH

    def make_unread(self) -> None:
        """Untimed: the newest MARK_BATCH of the user's rows become unread again."""
        with self.session() as db:
            newest = (
                select(Notification.id)
                .where(Notification.user_id == self.user_id)
                .order_by(Notification.created_at.desc())
                .limit(MARK_BATCH)
                .scalar_subquery()
            )
            db.execute(
                update(Notification)
                .where(Notification.id.in_(newest))
                .values(read_at=None)
                .execution_options(synchronize_session=False)
            )
            service.rebuild_counters(db, user_id=self.user_id)


OPERATIONS: dict[str, tuple[str, str | None]] = {
    "list (unread, first page)": ("list_first_page", None),
    "stats": ("stats", None),
    f"mark-all-read ({MARK_BATCH} unread)": ("mark_all_read", "make_unread"),
}


def measure(targets: list[Target], repeat: int) -> dict[int, dict[str, list[float]]]:
    """Time every operation on every target in turn, call after call, so a busy machine slows
    both sizes alike and the ratio stays meaningful."""
    samples: dict[int, dict[str, list[float]]] = {
        t.size: {op: [] for op in OPERATIONS} for t in targets
    }
    for t in targets:  # warm caches and connections; unread rows left for the list
        for _ in range(10):
            t.list_first_page()
            t.stats()
    for op, (method, before) in OPERATIONS.items():
        if before:
            for t in targets:
                with t.session() as db:
                    service.mark_all_read(db, user_id=t.user_id)
        for i in range(repeat + 5):
            for t in targets:
                if before:
                    getattr(t, before)()
                t0 = time.perf_counter()
                getattr(t, method)()
                if i >= 5:
                    samples[t.size][op].append((time.perf_counter() - t0) * 1000)
    return samples


def explain(user_id: int) -> None:
    """Print the plans of the hot queries, to check they use the intended indexes."""
    engine = get_engine()
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    now = datetime.now(UTC)
    queries = {
        "unread page": "SELECT * FROM notifications WHERE user_id = :u AND read_at IS NULL AND "
        "(expires_at IS NULL OR expires_at > :now) "
        "ORDER BY created_at DESC, id DESC LIMIT 50",
        "expired rows of a user": "SELECT count(*) FROM notifications WHERE user_id = :u AND "
        "expires_at IS NOT NULL AND expires_at <= :now",
        "last 24 h": "SELECT count(*) FROM notifications "
        "WHERE user_id = :u AND created_at >= :day_ago",
    }
    with engine.connect() as conn:
        for name, sql in queries.items():
            plan = conn.execute(
                text(prefix + sql),
                {
                    "u": user_id,
                    "now": now.isoformat(sep=" "),
                    "day_ago": (now - timedelta(hours=24)).isoformat(sep=" "),
                },
            ).all()
            print(f"  plan[{name}]: " + " | ".join(str(r[-1]) for r in plan))


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def run(
    db_kind: str, sizes: list[int], repeat: int, show_plans: bool
) -> dict[int, dict[str, list[float]]]:
    targets: list[Target] = []
    server = None
    if db_kind == "postgresql":
        from servers_plugin import start_postgres

        server = start_postgres()
        print(f"PostgreSQL 15 on 127.0.0.1:{server.port}", flush=True)
    try:
        for size in sizes:
            print(f"{size:,} rows:", flush=True)
            if server is not None:
                name = f"bench_{size}"
                server.create_database(name)
                url = server.url(name)
            else:
                url = f"sqlite:///{_DATA_DIR / f'bench-{size}.db'}"
            use_database(url)
            users = seed(size, random.Random(size))
            if show_plans:
                explain(users[USERS // 2])
            reset_engine()
            targets.append(Target(size, url, users[USERS // 2]))
        return measure(targets, repeat)
    finally:
        for t in targets:
            t.engine.dispose()
        if server is not None:
            from servers_plugin import _reaper

            _reaper.stop(server.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    args = parser.parse_args()

    results = run(args.db, [args.baseline, args.rows], args.repeat, args.explain)
    small, big = results[args.baseline], results[args.rows]
    print(f"\n{args.db}: {args.repeat} calls each, milliseconds, one user of {USERS}")
    print(
        f"{'operation':30} {'p50@10k':>9} {'p95@10k':>9} {'p50@big':>9} {'p95@big':>9} "
        f"{'ratio p50':>9} {'ratio p95':>9}"
    )
    for op in small:
        s50, s95, b50, b95 = (
            pct(small[op], 50),
            pct(small[op], 95),
            pct(big[op], 50),
            pct(big[op], 95),
        )
        print(
            f"{op:30} {s50:9.2f} {s95:9.2f} {b50:9.2f} {b95:9.2f} {b50 / s50:9.2f} {b95 / s95:9.2f}"
        )
    print(f"(big = {args.rows:,} rows; 10k = {args.baseline:,} rows)")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil

        reset_engine()
        shutil.rmtree(_DATA_DIR, ignore_errors=True)
