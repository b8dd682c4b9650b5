"""``job_queue``: a source that reads the jobs of some queues from any queue backend.

Each claimed job is one record (``key``: the job id, or ``data[key_field]`` when configured;
``data``: the payload; ``stream``: the queue), claimed with the backend's lease. Once every
sink wrote the batch its jobs are finished as completed; a batch handed back (``nack``) is
released: its jobs are queued again at once, at their place, the attempt not counted (the
pipeline's retry policy decides how often a record is tried, then dead-letters it). A worker
that dies leaves its jobs leased; the backend hands them out again once the lease expires,
counting that attempt, so a job's ``max_attempts`` bounds how many crashes it survives.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import structlog
from pydantic import Field, field_validator

from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig
from syncworker.core.record import Batch, Record, decode, decoded_key, log_wrapped
from syncworker.errors import ConnectionClosed
from syncworker.queue.base import Job, JobState, Outcome, QueueBackend
from syncworker.queue.config import QueueBackendConfig, validate_backend

log = structlog.get_logger(__name__)


class JobQueueSourceConfig(ConnectorConfig):
    """Settings of the ``job_queue`` source."""

    type: Literal["job_queue"] = Field(
        "job_queue", description="Connector type: the jobs of some queues as records."
    )
    backend: QueueBackendConfig = Field(
        description="The queue backend, by type: sqlite (path, table), postgres (url, schema, "
        "pool_size), redis (url, prefix) or memory (this process only); the same settings as "
        "jobs.backend."
    )
    queues: list[str] = Field(
        min_length=1, description="Queues whose jobs become records, e.g. [media, cleanup]."
    )
    key_field: str | None = Field(
        None,
        description="Field of the JSON payload used as the record key (e.g. 'id'); when absent "
        "the key is a hash of the payload. Null: the key is the job id.",
    )
    lease: DurationS = Field(
        60.0,
        description="How long a claimed job stays with this worker before another may claim "
        "it again (e.g. 60s). Must exceed the time a batch takes to write.",
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        return validate_backend(value)

    @field_validator("queues")
    @classmethod
    def _queues(cls, value: list[str]) -> list[str]:
        if any(not queue for queue in value):
            raise ValueError("a queue name is empty")
        return list(dict.fromkeys(value))

    @field_validator("lease")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a duration greater than 0")
        return value


class JobQueueSource:
    """Claims jobs of ``queues`` as batches (see the module docstring).

    Records: ``meta`` has ``job_id``, ``task``, ``attempts``, ``priority`` and ``received_at``
    (enqueue time, epoch seconds). A payload that is not a JSON object is wrapped
    (``core.record.wrap``), its bytes kept.
    """

    config_model: ClassVar[type[JobQueueSourceConfig]] = JobQueueSourceConfig

    def __init__(
        self,
        config: JobQueueSourceConfig | dict[str, Any],
        *,
        name: str,
        backend: QueueBackend | None = None,
    ) -> None:
        if not isinstance(config, JobQueueSourceConfig):
            config = JobQueueSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self.worker_id = ""
        self._given = backend
        self._backend: QueueBackend | None = None
        self._queues = tuple(config.queues)
        self._next_queue = 0  # the queue a claim starts with, in turn: none starves the rest
        self._label = f"job_queue {name!r} ({config.backend.type})"

    async def open(self) -> None:
        """Open the backend (creating its tables). Idempotent; a closed source opens again.
        Raises what the backend raises when it is unavailable (``ConnectionFailed``)."""
        if self._backend is not None:
            return
        backend = self._given if self._given is not None else self.config.backend.build()
        await backend.open()
        self._backend = backend
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def _open_backend(self) -> QueueBackend:
        if self._backend is None:
            raise ConnectionClosed(f"{self._label}: not open")
        return self._backend

    async def claim(self, limit: int) -> Batch | None:
        """Claim up to ``limit`` due jobs, queue by queue in priority order; ``None`` when no
        job is due. Raises what the backend raises (``ConnectorError``): nothing claimed."""
        backend = self._open_backend()
        if limit <= 0:
            return None
        jobs: list[Job] = []
        start = self._next_queue
        self._next_queue = (start + 1) % len(self._queues)
        for queue in self._queues[start:] + self._queues[:start]:
            jobs += await backend.claim(queue, limit - len(jobs), self.worker_id, self.config.lease)
            if len(jobs) >= limit:
                break
        if not jobs:
            return None
        return Batch([self._record(job) for job in jobs], token=[job.token for job in jobs])

    def _record(self, job: Job) -> Record:
        decoded = decode(job.data, job.enqueued_at)
        key_field = self.config.key_field
        key = job.id if key_field is None else decoded_key(decoded, job.data, key_field)
        meta = {
            "job_id": job.id,
            "task": job.task,
            "attempts": job.attempts,
            "priority": job.priority,
            "received_at": job.enqueued_at,
        }
        record = Record(key, decoded.data, job.queue, "upsert", meta)
        if decoded.reason is not None:
            log_wrapped(decoded, record, self.name, job_id=job.id)
        return record

    async def wait(self, timeout_s: float) -> None:
        """Return when a job may be due on one of the queues, or after ``timeout_s`` (the
        backend's wake-up: NOTIFY, BLPOP, a commit seen; its polling otherwise)."""
        backend = self._open_backend()
        if len(self._queues) == 1:
            await backend.wait(self._queues[0], timeout_s)
            return
        waits = [
            asyncio.create_task(backend.wait(queue, timeout_s), name=f"{self.name}:wait:{queue}")
            for queue in self._queues
        ]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a backend failure is the caller's to see
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def ack(self, batch: Batch) -> None:
        """Finish the batch's jobs as completed (one round trip). Raises ``ConnectorError``
        when the backend fails; the runtime retries the ack."""
        tokens = _tokens(batch)
        if not tokens:
            return
        outcomes = [Outcome(job_id, attempt, "completed") for job_id, attempt in tokens]
        lost = await self._open_backend().finish(outcomes, self.worker_id)
        if lost:
            # The lease ran out and another worker took the jobs; it writes them again
            # (idempotently). A longer lease avoids this.
            log.warning(
                "job_queue_ack_lease_lost",
                source=self.name,
                jobs=len(lost),
                lease_s=self.config.lease,
            )

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Release the batch's jobs: queued again at once, at their place."""
        tokens = _tokens(batch)
        if tokens:
            await self._open_backend().release(tokens, self.worker_id)

    async def backlog(self) -> int:
        """Jobs of the queues claimable now (the backend's ``counts``)."""
        counts = await self._open_backend().counts()
        return sum(counts.get(queue, {}).get(JobState.QUEUED, 0) for queue in self._queues)

    async def close(self) -> None:
        """Close the backend; claimed jobs keep their leases (they expire, or are claimed
        again by this worker's successor after the lease)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.close()


def _tokens(batch: Batch) -> Sequence[tuple[str, int]]:
    token = batch.token
    return list(token) if token else []
