"""The task registry: imports every domain's tasks so the API and the consumers know the same
names.
"""

from sourcekeeper.backups import schedule_tasks as backup_schedule_tasks
from sourcekeeper.backups import tasks as backups_tasks
from sourcekeeper.jobs import tasks as jobs_tasks
from sourcekeeper.jobs.queue import huey
from sourcekeeper.notifications import tasks as notifications_tasks

__all__ = ["backup_schedule_tasks", "backups_tasks", "huey", "jobs_tasks", "notifications_tasks"]
