"""The task registry: imports every domain's tasks so the API and the consumers know the same names."""

from sourcekeeper.jobs import tasks as jobs_tasks
from sourcekeeper.jobs.queue import huey

__all__ = ["huey", "jobs_tasks"]
