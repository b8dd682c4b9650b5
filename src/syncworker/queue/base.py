"""The job-queue contract: what every backend (SQLite, PostgreSQL, Redis) does the same way.

A job moves through these states::

    delayed --(run_at reached)--> queued --(claim)--> active --(finish)--> completed
                                     ^                  |  \\--(retry)--> delayed (backoff)
                                     |                  |   \\--(dead)--> dead --(requeue)--> queued
                                     \\--(release, lease expired)--/

Guarantees every backend keeps (``tests/conformance/test_queue_backends.py`` checks them):

- A claim is atomic: two workers never hold the same job at once. Claimed jobs carry a lease
  (``lease_until``); a job whose lease expires is claimable again (its attempt counted), a
  live worker extends its leases with ``heartbeat`` and never loses them.
- Order: due jobs of one queue are claimed highest ``priority`` first, then earliest
  ``run_at``, then enqueue order.
- A ``unique_key`` is held while its job is delayed, queued or active: enqueueing the same key
  again returns the existing job's id and adds nothing. Once the job is completed or dead,
  the key is free.
- ``finish`` is fenced: an outcome applies only while the reporting worker still holds the job
  at that attempt (``Job.token``); a stale outcome (the lease expired and another worker took
  the job) is ignored and reported back, never applied over the new holder.
- Payloads and results round-trip exactly (``core.jsonvalue``: big integers and Decimals keep
  their digits).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from syncworker.core import jsonvalue


class JobState(enum.StrEnum):
    """Where a job is; ``counts`` reports every queue by these."""

    DELAYED = "delayed"  # run_at in the future: new with a delay, or waiting out a retry backoff
    QUEUED = "queued"  # due, waiting for a worker
    ACTIVE = "active"  # claimed, under a lease
    COMPLETED = "completed"  # finished; kept as a row until pruned
    DEAD = "dead"  # attempts exhausted or failed permanently; kept until requeued or pruned


@dataclass(slots=True)
class NewJob:
    """A job to enqueue. ``run_at`` is epoch seconds (None: now)."""

    task: str
    payload: dict[str, Any] | bytes = field(default_factory=dict)
    # A mapping is stored as exact JSON (core.jsonvalue); bytes are stored as given (a
    # pipeline's raw message). Either way the backend keeps the bytes, never re-encodes them.
    queue: str = "default"
    priority: int = 0  # higher first; -1000..1000
    run_at: float | None = None
    unique_key: str | None = None
    max_attempts: int = 1  # runs in all, the first included (the seed's 3 attempts = 3)
    timeout_s: float | None = None  # None: the worker's queue default


@dataclass(slots=True)
class Job:
    """A job as a backend holds it."""

    id: str
    task: str
    queue: str
    data: bytes  # the payload exactly as stored
    state: JobState
    priority: int
    run_at: float
    enqueued_at: float
    attempts: int  # attempts started, the current one included
    max_attempts: int
    unique_key: str | None = None
    timeout_s: float | None = None
    worker: str | None = None  # the holder while active
    lease_until: float | None = None
    progress: Any = None
    result: Any = None
    error: str | None = None  # the last failure's one-line reason
    stack: str | None = None  # the last failure's traceback
    finished_at: float | None = None

    @property
    def payload(self) -> Any:
        """The payload decoded as exact JSON; ``ValueError`` when the bytes are not JSON."""
        return jsonvalue.loads(self.data)

    @property
    def token(self) -> tuple[str, int]:
        """What fences an outcome: the job at this attempt."""
        return (self.id, self.attempts)

    def describe(self, *, whole: bool = False) -> dict[str, Any]:
        """The job for people and the API (times as epoch seconds; a payload that is not
        JSON, a pipeline's raw message, as text); ``whole`` adds the stack and timeout.
        Not redacted: the caller redacts for its output."""
        try:
            payload: Any = self.payload
        except ValueError:
            payload = self.data.decode("utf-8", "replace")
        body: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "state": self.state.value,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": self.run_at,
            "enqueued_at": self.enqueued_at,
            "finished_at": self.finished_at,
            "unique_key": self.unique_key,
            "worker": self.worker,
            "lease_until": self.lease_until,
            "payload": payload,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
        }
        if whole:
            body["stack"] = self.stack
            body["timeout_s"] = self.timeout_s
        return body


@dataclass(slots=True)
class Outcome:
    """What a worker reports for one job it holds.

    ``completed``: done (``result`` kept). ``retry``: the attempt failed, run again at
    ``run_at`` (state delayed). ``dead``: failed for good (attempts exhausted or permanent).
    ``error``/``stack`` are kept on the job for ``retry`` and ``dead``.
    """

    job_id: str
    attempt: int  # Job.attempts of the claim being finished (the fence)
    kind: Literal["completed", "retry", "dead"]
    result: Any = None
    run_at: float | None = None  # for retry
    error: str | None = None
    stack: str | None = None


@runtime_checkable
class QueueBackend(Protocol):
    """One technology's job store. All methods are coroutines safe to call concurrently.

    Errors: a backend raises ``ConnectionFailed``/``ConnectorError`` (``syncworker.errors``)
    when its server is unreachable or fails; the worker backs off and retries, logging the
    reason each time. ``ValueError`` for a job that cannot be stored (payload not JSON).
    """

    kind: str  # "sqlite" | "postgres" | "redis"

    async def open(self) -> None:
        """Connect and create the schema (tables, indexes, scripts) if missing. Idempotent."""

    async def close(self) -> None:
        """Release connections. Active jobs keep their leases (they expire or are released)."""

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[str]:
        """Store ``jobs`` atomically in one round trip; returns their ids in order.

        A job whose ``unique_key`` is held (delayed, queued or active job) is not added: its
        slot in the result is the existing job's id. Wakes waiting workers of those queues.
        """

    async def claim(self, queue: str, limit: int, worker_id: str, lease_s: float) -> list[Job]:
        """Claim up to ``limit`` due jobs of ``queue`` (never waits), in priority order.

        Due delayed jobs are promoted first; jobs whose lease expired are claimable again.
        Each claimed job comes back ACTIVE with ``attempts`` incremented, ``worker`` set and
        ``lease_until = now + lease_s``. A job claimed after its lease expired and that has
        used all its attempts is moved to dead instead (error "lease expired"), not returned.
        """

    async def heartbeat(
        self, tokens: Sequence[tuple[str, int]], worker_id: str, lease_s: float
    ) -> list[str]:
        """Extend the leases of jobs this worker holds; returns the ids it no longer holds."""

    async def finish(self, outcomes: Sequence[Outcome], worker_id: str) -> list[str]:
        """Apply outcomes (one round trip for the batch); returns ids whose fence failed.

        ``completed`` jobs free their unique key and keep ``result``; ``retry`` jobs become
        delayed until ``run_at``; ``dead`` jobs keep ``error``/``stack``. An outcome whose job
        is no longer held by ``worker_id`` at ``attempt`` changes nothing and its id is
        returned.
        """

    async def release(self, tokens: Sequence[tuple[str, int]], worker_id: str) -> int:
        """Hand back held jobs unfinished (shutdown): queued again at once, the attempt not
        counted (``attempts`` decremented). Returns how many were released."""

    async def set_progress(self, token: tuple[str, int], worker_id: str, progress: Any) -> bool:
        """Record a running job's progress (JSON value); False when the worker lost the job."""

    async def wait(self, queue: str, timeout_s: float) -> None:
        """Return as soon as a job may be claimable on ``queue`` (an enqueue, a release, a
        delayed job falling due) or after ``timeout_s``. Spurious returns are allowed; a
        missed wake-up is not (polling is the fallback, never the only wake)."""

    async def get(self, job_id: str) -> Job | None:
        """One job by id, any state (None when unknown or pruned)."""

    async def list_jobs(
        self, *, queue: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs filtered by queue and state, newest first, at most ``limit``."""

    async def counts(self) -> dict[str, dict[JobState, int]]:
        """Per queue, how many jobs are in each state (every JobState key present)."""

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """Dead jobs back to queued with attempts reset to 0, error kept. Returns how many;
        ids that are not dead are skipped."""

    async def prune(self, state: JobState, older_than_s: float) -> int:
        """Delete completed or dead jobs finished more than ``older_than_s`` ago."""

    async def enqueue_cron(self, name: str, slot: float, job: NewJob) -> str | None:
        """Enqueue ``job`` for cron entry ``name``'s slot ``slot`` (epoch s) exactly once.

        Atomically: when ``slot`` is later than the entry's stored last slot, store it and
        enqueue ``job`` (returns its id); otherwise change nothing and return None. However
        many workers call this for one slot, one job is enqueued.
        """

    async def cron_state(self) -> dict[str, float]:
        """Per cron entry name, the last slot enqueued (epoch s)."""


def check_new_job(job: NewJob) -> None:
    """Refuse what no backend stores; ``ValueError`` names the field."""
    if not job.task:
        raise ValueError("job task is empty")
    if not job.queue:
        raise ValueError("job queue is empty")
    if not -1000 <= job.priority <= 1000:
        raise ValueError(f"job priority {job.priority} is outside -1000..1000")
    if job.max_attempts < 1:
        raise ValueError(f"job max_attempts {job.max_attempts} must be at least 1")
    if not isinstance(job.payload, dict | bytes):
        raise ValueError(
            f"job payload must be a mapping or bytes, got {type(job.payload).__name__}"
        )


def encode_payload(job: NewJob) -> bytes:
    """The stored bytes of a job's payload."""
    if isinstance(job.payload, bytes):
        return job.payload
    return jsonvalue.dumps(job.payload)
