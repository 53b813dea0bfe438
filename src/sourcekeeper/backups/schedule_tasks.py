"""Tick steps of the backups domain: fire due schedules, then apply retention.

They are steps of the one periodic `jobs.tick` rather than huey periodic tasks of their own, so
every worker runs them in the same order and each in its own transaction (see jobs.tasks).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from sourcekeeper.backups import retention
from sourcekeeper.backups import schedules as schedules_service
from sourcekeeper.jobs import tick


def fire_due_schedules(db: Session, now: datetime) -> None:
    schedules_service.fire_due(db, now=now)


def apply_retention(db: Session, now: datetime) -> None:
    retention.apply_retention(db, now=now)


tick.register_step("backups.schedules", fire_due_schedules)
tick.register_step("backups.retention", apply_retention)
