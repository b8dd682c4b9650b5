"""Job-queue connectors: the ``jobs`` sink enqueues each record as a job on any queue backend
(SQLite, PostgreSQL, Redis), so a pipeline (the RabbitMQ bridge: ``amqp`` source -> ``jobs``
sink) feeds the workers. Needs the extra of its backend (``postgres`` or ``redis``), none
for SQLite.

Its conformance harnesses are in ``tests/conformance/jobs_sink.py`` (SQLite and PostgreSQL).
"""

CONNECTORS = {
    "sink:jobs": "syncworker.connectors.jobs.sink:JobsSink",
}
