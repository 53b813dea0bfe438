"""Engine, declarative base and the one unit of work shared by the API and the workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from sourcekeeper.core.config import get_settings

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


_engine: Engine | None = None
SessionLocal = sessionmaker(expire_on_commit=False)


def make_engine(url: str) -> Engine:
    """SQLite gets WAL and a busy timeout so API threads and workers can share the file."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def get_engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine(get_settings().resolved_database_url)
        SessionLocal.configure(bind=_engine)
    return _engine


def reset_engine() -> None:
    """Forget the engine (tests and CLI switch databases through settings)."""
    global _engine
    if _engine is not None:
        _engine.dispose()
    _engine = None


AfterCommit = Callable[[], None]


def after_commit(db: Session, action: AfterCommit) -> None:
    """Run `action` only once the current transaction has committed (e.g. enqueue a job)."""
    db.info.setdefault("after_commit", []).append(action)


def after_close(db: Session, action: AfterCommit) -> None:
    """Run `action` once the transaction has ended, committed or rolled back (e.g. record a denial
    that must survive the request's rollback; on SQLite it cannot be written while we hold the
    lock)."""
    db.info.setdefault("after_close", []).append(action)


@contextmanager
def session_scope() -> Iterator[Session]:
    """Commit on success, roll back on error; then run what was queued for after the commit."""
    get_engine()
    actions: list[AfterCommit] = []
    always: list[AfterCommit] = []
    try:
        with SessionLocal() as db:
            try:
                with db.begin():
                    yield db
                actions = db.info.pop("after_commit", [])
            finally:
                always = db.info.pop("after_close", [])
    finally:
        for action in always:
            action()
    for action in actions:
        action()
