"""The periodic tick: reaper first, then each registered domain step, each in its own
transaction.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from sourcekeeper.core.config import get_settings
from sourcekeeper.core.db import session_scope, utcnow
from sourcekeeper.jobs import tick
from sourcekeeper.jobs.queue import every_minute, periodic

log = structlog.get_logger("sourcekeeper.tick")


@periodic("jobs.tick", every_minute())
def run_tick() -> None:
    run_tick_once()


def run_tick_once() -> None:
    """One pass; a failing step is logged and does not stop the others."""
    now = utcnow()
    stale = timedelta(seconds=get_settings().heartbeat_stale_seconds)
    with session_scope() as db:
        tick.reap_stale_jobs(db, now, stale)
    for name, step in tick.STEPS:
        try:
            with session_scope() as db:
                step(db, now)
        except Exception:
            log.exception("tick_step_failed", step=name)
