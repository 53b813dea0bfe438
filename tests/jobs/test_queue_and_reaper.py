"""Jobs: every queue backend delivers tasks; the reaper fails jobs whose worker died."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from servers_plugin import DbServer, RedisServer
from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from sourcekeeper.core.config import Settings
from sourcekeeper.core.db import utcnow
from sourcekeeper.jobs import queue, tick
from sourcekeeper.jobs.state import JobState, JobStatus


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    if request.param == "postgresql":
        pg: DbServer = request.getfixturevalue("pg_server")
        name = f"queue_{tmp_path.name[-8:].lower()}".replace("-", "_")
        pg.create_database(name)
        request.addfinalizer(lambda: pg.drop_database(name))
        return pg.url(name)
    redis: RedisServer = request.getfixturevalue("redis_server")
    return redis.url


def test_queue_backend_delivers_tasks_to_a_consumer(queue_url: str, tmp_path: Path) -> None:
    """Scale-out mode: the same task code over SQLite, PostgreSQL or Redis."""
    huey = queue.build_huey(Settings(data_dir=tmp_path, queue_url=queue_url))
    done = threading.Event()
    seen: list[int] = []

    @huey.task(name="test.record")
    def record(n: int) -> None:
        seen.append(n)
        if len(seen) == 3:
            done.set()

    consumer = queue.EmbeddedConsumer(huey, workers=2, worker_type="thread", periodic=False)
    consumer.start()
    try:
        for n in range(3):
            record(n)
        assert done.wait(15), f"only {seen} delivered"
    finally:
        consumer.stop(graceful=True)
    assert sorted(seen) == [0, 1, 2]


def test_signed_queue_rejects_tampered_messages(tmp_path: Path) -> None:
    huey = queue.build_huey(Settings(data_dir=tmp_path))
    data = huey.serializer.serialize({"x": 1})
    with pytest.raises(Exception, match="(?i)signature|invalid"):
        huey.serializer.deserialize(data[:-1] + bytes([data[-1] ^ 1]))


def test_reaper_fails_jobs_with_stale_heartbeat() -> None:
    from sourcekeeper.core.db import Base, get_engine, session_scope

    class ProbeJob(JobState, Base):
        __tablename__ = "probe_jobs_for_reaper"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        label: Mapped[str] = mapped_column(String(20))

    ProbeJob.__table__.create(get_engine())  # type: ignore[attr-defined]
    reaped: list[int] = []
    tick.register_job_model(ProbeJob, on_reaped=lambda db, row: reaped.append(row.id))
    try:
        now = utcnow()
        with session_scope() as db:
            db.add_all(
                [
                    ProbeJob(
                        label="dead",
                        status=JobStatus.IN_PROGRESS,
                        started_at=now,
                        heartbeat_at=now - timedelta(minutes=10),
                    ),
                    ProbeJob(
                        label="alive",
                        status=JobStatus.IN_PROGRESS,
                        started_at=now,
                        heartbeat_at=now - timedelta(seconds=5),
                    ),
                    ProbeJob(
                        label="never-beat",
                        status=JobStatus.IN_PROGRESS,
                        started_at=now - timedelta(minutes=10),
                    ),
                    ProbeJob(
                        label="done",
                        status=JobStatus.COMPLETED,
                        heartbeat_at=now - timedelta(hours=1),
                    ),
                ]
            )
        with session_scope() as db:
            assert tick.reap_stale_jobs(db, utcnow(), timedelta(minutes=2)) == 2
        with session_scope() as db:
            rows = {j.label: j for j in db.query(ProbeJob)}
        assert rows["dead"].status == rows["never-beat"].status == JobStatus.FAILED
        assert "stopped responding" in (rows["dead"].error_message or "")
        assert rows["alive"].status == JobStatus.IN_PROGRESS
        assert rows["done"].status == JobStatus.COMPLETED
        assert len(reaped) == 2
    finally:
        tick.JOB_MODELS.remove(ProbeJob)
        tick.REAP_HOOKS.pop(ProbeJob, None)
        ProbeJob.__table__.drop(get_engine())  # type: ignore[attr-defined]
        Base.metadata.remove(ProbeJob.__table__)  # type: ignore[attr-defined]


def test_tick_runs_registered_steps_and_survives_a_failing_one() -> None:
    from sourcekeeper.jobs.tasks import run_tick_once

    calls: list[str] = []

    def failing(db: object, now: object) -> None:
        raise RuntimeError("step broke")

    tick.register_step("test.failing", failing)
    tick.register_step("test.ok", lambda db, now: calls.append("ok"))
    try:
        run_tick_once()
    finally:
        tick.STEPS[:] = [s for s in tick.STEPS if not s[0].startswith("test.")]
    assert calls == ["ok"]


def test_embedded_consumer_does_not_touch_signal_handlers() -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    queue.start_embedded_consumer(1)
    try:
        time.sleep(0.2)
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        queue.stop_embedded_consumer()
