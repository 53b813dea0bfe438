"""Backup, restore and verify jobs: each opens short transactions around a session-free run."""

from __future__ import annotations

from collections.abc import Callable

from sourcekeeper.backups import restore_run, run, verify
from sourcekeeper.backups.models import Backup, Restore
from sourcekeeper.backups.pipeline import Counters
from sourcekeeper.core.db import session_scope
from sourcekeeper.jobs.queue import task
from sourcekeeper.jobs.state import JobStatus
from sourcekeeper.jobs.tick import register_job_model

register_job_model(Backup, on_reaped=run.on_reaped)
register_job_model(Restore, on_reaped=restore_run.on_reaped)


def perform_backup(
    backup_id: int, *, also: Callable[[], bool] | None = None
) -> tuple[str, str | None] | None:
    """Run one backup to its end; return its final (status, error), None if it did not run.

    `also` is polled with every heartbeat and may ask the backup to stop (a restore waiting on
    its safety backup keeps its own heartbeat going through it, and passes on its cancel).
    """
    with session_scope() as db:
        plan = run.begin_run(db, backup_id=backup_id)
        if plan is None:
            row = db.get(Backup, backup_id)
            return (row.status, row.error_message) if row is not None else None

    def tick(counters: Counters) -> bool:
        with session_scope() as db:
            stop = run.record_heartbeat(db, plan=plan, counters=counters)
        if also is not None and also():
            stop = True
        return stop

    outcome = run.execute(plan, tick=tick)
    with session_scope() as db:
        row = run.finish_run(db, plan=plan, outcome=outcome)
        return (row.status, row.error_message) if row is not None else None


@task("backups.run")
def run_backup(backup_id: int) -> None:
    perform_backup(backup_id)


@task("backups.restore")
def run_restore(restore_id: int) -> None:
    with session_scope() as db:
        plan = restore_run.begin_run(db, restore_id=restore_id)
    if plan is None:
        return
    idle = Counters()

    def tick(counters: Counters) -> bool:
        with session_scope() as db:
            return restore_run.record_heartbeat(db, plan=plan, counters=counters)

    if plan.safety_backup_id is not None:
        result = perform_backup(plan.safety_backup_id, also=lambda: tick(idle))
        if result is None or result[0] != JobStatus.COMPLETED:
            with session_scope() as db:
                restore_run.fail_before_restore(
                    db, plan=plan, message=(result[1] if result else None) or "did not run"
                )
            return
    outcome = restore_run.execute(plan, tick=tick)
    with session_scope() as db:
        restore_run.finish_run(db, plan=plan, outcome=outcome)


@task("backups.verify")
def run_verify(backup_id: int, actor: str = "System") -> None:
    with session_scope() as db:
        plan = verify.begin(db, backup_id=backup_id, actor=actor)
    if plan is None:
        return
    outcome = verify.execute(plan)
    with session_scope() as db:
        verify.finish(db, plan=plan, outcome=outcome)
