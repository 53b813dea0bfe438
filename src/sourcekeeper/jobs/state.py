"""Columns every long-running job row shares, so the client polls one row and the reaper scans
all.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column


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
