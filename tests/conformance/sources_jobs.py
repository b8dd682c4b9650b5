"""The harness of the ``job_queue`` source, on the SQLite job-queue backend (embedded: the
backends themselves go through ``test_queue_backends.py``, each against its real service)."""

from __future__ import annotations

from typing import Any, ClassVar

from syncworker.queue.base import NewJob
from syncworker.queue.sqlite import SqliteQueueBackend
from tests.conformance.exact import Payload
from tests.conformance.harness import Expected, SourceHarness
from tests.conformance.sources import byte_expectations

QUEUE = "in"
TASK = "deliver"
MAX_ATTEMPTS = 5  # a crashed worker's claim counts an attempt: a job survives a few crashes


class JobQueueHarness(SourceHarness):
    type_name = "job_queue"
    reasons: ClassVar[dict[str, str]] = {
        "deletes": "a queue carries jobs, not changes: every record is an upsert",
        "restart": "on the embedded backend (a SQLite file): no server to restart",
        "credentials": "a local file: nothing to log in with",
    }
    crash_settings: ClassVar[dict[str, Any]] = {"lease": "1s"}

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or str(self.ctx.tmp_path / "jobs.db")
        backend = SqliteQueueBackend(self.target)
        await backend.open()
        await backend.close()

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "job_queue",
            "backend": {"type": "sqlite", "path": self.target},
            "queues": [QUEUE],
            "key_field": "id",
            **overrides,
        }

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        backend = SqliteQueueBackend(self.target)
        await backend.open()
        try:
            await backend.enqueue_many(
                [NewJob(TASK, p.raw, queue=QUEUE, max_attempts=MAX_ATTEMPTS) for p in payloads]
            )
        finally:
            await backend.close()
        return byte_expectations(payloads)
