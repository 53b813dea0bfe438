"""`notifications.deliver` (email and webhooks, with retries) and the tick step purging expiry."""

from __future__ import annotations

from typing import Any

from sourcekeeper.core.db import session_scope
from sourcekeeper.jobs import tick
from sourcekeeper.jobs.queue import task
from sourcekeeper.notifications import service as notifications_service


@task("notifications.deliver")
def deliver(
    notification_ids: list[int], attempt: int = 1, only: list[list[Any]] | None = None
) -> None:
    """One attempt per target. No session is held while sending, and a failure is retried by
    re-queueing only the failed targets with a growing delay, so a dead receiver never ties up
    a worker thread or makes the working channels send twice."""
    retry = run_delivery(notification_ids, attempt=attempt, only=only)
    if retry:
        schedule_retry(
            {
                "notification_ids": sorted({nid for nid, _ in retry}),
                "attempt": attempt + 1,
                "only": [[nid, key] for nid, key in retry],
            },
            delay=notifications_service.retry_delay(attempt),
        )


def run_delivery(
    notification_ids: list[int], *, attempt: int = 1, only: list[list[Any]] | None = None
) -> list[tuple[int, str]]:
    """Plan (short transaction), send (none), log (short transaction); returns what to retry."""
    pairs = {(int(nid), str(key)) for nid, key in only} if only is not None else None
    with session_scope() as db:
        plan = notifications_service.plan_delivery(
            db, notification_ids=notification_ids, only=pairs
        )
    outcomes = notifications_service.send(plan)
    with session_scope() as db:
        return notifications_service.record_deliveries(db, outcomes, attempt=attempt)


def schedule_retry(kwargs: dict[str, Any], *, delay: int) -> None:
    deliver.schedule(kwargs=kwargs, delay=delay)


tick.register_step("notifications.purge_expired", notifications_service.purge_expired)
