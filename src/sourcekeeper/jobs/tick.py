"""The once-a-minute tick: domains register steps (schedules, retention, purges); the reaper is
ours.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from sourcekeeper.core.metrics import JOBS_REAPED
from sourcekeeper.jobs.state import JobState, JobStatus

log = structlog.get_logger("sourcekeeper.tick")

TickStep = Callable[[Session, datetime], None]
STEPS: list[tuple[str, TickStep]] = []
JOB_MODELS: list[type[JobState]] = []
# Called with (db, row) for each reaped row so its domain can notify; registered by the domain.
REAP_HOOKS: dict[type, Callable[[Session, JobState], None]] = {}


def register_step(name: str, step: TickStep) -> None:
    STEPS.append((name, step))


def register_job_model(
    model: type[JobState], on_reaped: Callable[[Session, JobState], None] | None = None
) -> None:
    JOB_MODELS.append(model)
    if on_reaped is not None:
        REAP_HOOKS[model] = on_reaped


def reap_stale_jobs(db: Session, now: datetime, stale_after: timedelta) -> int:
    """Mark jobs failed whose worker stopped sending heartbeats (it died or was killed)."""
    cutoff = now - stale_after
    reaped = 0
    for model in JOB_MODELS:
        rows = db.scalars(
            select(model)  # type: ignore[call-overload]
            .where(model.status == JobStatus.IN_PROGRESS)
            .where(
                or_(
                    model.heartbeat_at < cutoff,
                    (model.heartbeat_at.is_(None)) & (model.started_at < cutoff),
                )
            )
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            row.status = JobStatus.FAILED
            row.completed_at = now
            row.error_message = (
                "The worker running this job stopped responding (no heartbeat for "
                f"{int(stale_after.total_seconds())} s); it was marked failed."
            )
            JOBS_REAPED.labels(kind=model.__tablename__).inc()  # type: ignore[attr-defined]
            log.warning("job_reaped", kind=model.__tablename__, id=row.id)  # type: ignore[attr-defined]
            if hook := REAP_HOOKS.get(model):
                hook(db, row)
            reaped += 1
    return reaped
