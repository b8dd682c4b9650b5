"""Background jobs: tasks, enqueueing, the worker and cron, over any ``QueueBackend``."""

from syncworker.jobs.backoff import Backoff
from syncworker.jobs.context import JobContext
from syncworker.jobs.cron import CronEntry, CronScheduler
from syncworker.jobs.enqueue import Jobs
from syncworker.jobs.tasks import Task, TaskRegistry
from syncworker.jobs.worker import QueueSettings, Worker

__all__ = [
    "Backoff",
    "CronEntry",
    "CronScheduler",
    "JobContext",
    "Jobs",
    "QueueSettings",
    "Task",
    "TaskRegistry",
    "Worker",
]
