"""The huey instance, the task registry and enqueue-after-commit; all huey calls live here."""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import structlog
from huey import Huey, PostgresHuey, RedisHuey, SqliteHuey, crontab, signals
from huey.consumer import Consumer
from huey.serializer import SignedSerializer
from sqlalchemy.orm import Session

from sourcekeeper.core.config import Settings, get_settings
from sourcekeeper.core.crypto import master_key
from sourcekeeper.core.db import after_commit

log = structlog.get_logger("sourcekeeper.jobs")

TASKS: dict[str, Any] = {}


def build_huey(settings: Settings) -> Huey:
    """SQLite file by default; PostgreSQL or Redis when workers run on several machines."""
    url = settings.resolved_queue_url
    # Tasks travel signed: a shared queue must not let anyone who can write to it run pickles.
    secret = hmac.new(master_key(), b"sourcekeeper-queue", hashlib.sha256).hexdigest()
    serializer = SignedSerializer(secret=secret, salt="sourcekeeper")
    common: dict[str, Any] = {"name": "sourcekeeper", "serializer": serializer, "results": False}
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(filename=path, **common)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresHuey(dsn=url, **common)
    if url.startswith(("redis://", "rediss://")):
        return RedisHuey(url=url, **common)
    raise ValueError(f"unsupported SOURCEKEEPER_QUEUE_URL scheme: {urlparse(url).scheme!r}")


huey: Huey = build_huey(get_settings())


def task(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register a huey task under a stable `domain.verb` name."""

    def decorator(func: Callable[..., Any]) -> Any:
        wrapped = huey.task(name=name, **options)(func)
        TASKS[name] = wrapped
        return wrapped

    return decorator


def periodic(name: str, cron: crontab) -> Callable[[Callable[[], None]], Any]:
    def decorator(func: Callable[[], None]) -> Any:
        wrapped = huey.periodic_task(cron, name=name)(func)
        TASKS[name] = wrapped
        return wrapped

    return decorator


def every_minute() -> crontab:
    return crontab(minute="*")


def enqueue(name: str, **kwargs: Any) -> None:
    TASKS[name](**kwargs)


def enqueue_after_commit(db: Session, name: str, **kwargs: Any) -> None:
    """Queue the task only if the surrounding transaction commits (dropped on rollback)."""
    after_commit(db, lambda: enqueue(name, **kwargs))


def queue_depth() -> int:
    return int(huey.pending_count())


def check_queue() -> None:
    """Raises if the queue backend cannot be reached (used by /ready)."""
    huey.pending_count()


class EmbeddedConsumer(Consumer):  # type: ignore[misc]
    """A consumer that runs beside uvicorn: it must not install signal handlers of its own."""

    def _set_signal_handlers(self) -> None:
        return None


_consumer: EmbeddedConsumer | None = None
_lock = threading.Lock()


_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def _cap_allocator_arenas() -> None:
    """Worker threads each get a glibc malloc arena that keeps its memory after a job; two arenas
    keep a worker's footprint flat however many dumps it has streamed."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 2)


@huey.signal(signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR, signals.SIGNAL_CANCELED)
def _return_memory_after_job(signal: str, task: Any, *args: Any) -> None:
    """Give freed buffers (zstd, age, pipes) back to the OS once a job is over."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def start_embedded_consumer(workers: int) -> None:
    global _consumer
    with _lock:
        if _consumer is not None:
            return
        _cap_allocator_arenas()
        _consumer = EmbeddedConsumer(huey, workers=workers, worker_type="thread", periodic=True)
        _consumer.start()
        log.info("worker_started", mode="embedded", workers=workers)


def stop_embedded_consumer() -> None:
    global _consumer
    with _lock:
        if _consumer is None:
            return
        _consumer.stop(graceful=True)
        _consumer = None


def run_consumer(workers: int) -> None:
    """The `sourcekeeper worker` process: consumers only, with huey's own signal handling."""
    _cap_allocator_arenas()
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=True)
    consumer.run()
