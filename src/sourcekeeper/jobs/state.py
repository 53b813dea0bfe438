"""Columns every long-running job row shares, so the client polls one row and the reaper scans
all.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, String, Text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from sourcekeeper.core.db import utcnow


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.SCHEDULED, JobStatus.IN_PROGRESS)
FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobState:
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.SCHEDULED, index=True)
    progress: Mapped[float | None]
    bytes_processed: Mapped[int] = mapped_column(BigInteger, default=0)  # dumps pass 2 GiB
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    task_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)


def beat(
    db: Session, model: type[JobState], job_id: int, *, bytes_processed: int, progress: float | None
) -> bool:
    """Store a running job's progress and heartbeat.

    True when the job must stop: it was cancelled, or the reaper already failed it.
    """
    result = db.execute(
        update(model)
        .where(
            model.id == job_id,  # type: ignore[attr-defined]
            model.status == JobStatus.IN_PROGRESS,
            model.cancel_requested.is_(False),
        )
        .values(heartbeat_at=utcnow(), bytes_processed=bytes_processed, progress=progress)
    )
    return getattr(result, "rowcount", 1) == 0
