"""Job-queue sources: ``job_queue`` reads the jobs of some queues from any queue backend
(SQLite, PostgreSQL, Redis) as records, finishing them once the sinks wrote them. Needs the
extra of its backend (``postgres`` or ``redis``), none for SQLite.

Its conformance harness is in ``tests/conformance/sources_jobs.py``.
"""

CONNECTORS = {
    "source:job_queue": "syncworker.connectors.queue.source:JobQueueSource",
}
