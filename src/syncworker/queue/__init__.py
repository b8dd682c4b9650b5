"""Job queue backends (SQLite, PostgreSQL, Redis) behind one contract (``base.QueueBackend``)."""

from syncworker.queue.base import Job, JobState, NewJob, Outcome, QueueBackend

__all__ = ["Job", "JobState", "NewJob", "Outcome", "QueueBackend"]
