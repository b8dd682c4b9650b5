"""The in-process queue backend: the contract's reference implementation, for tests and for
programs that need a job queue only while they run (nothing survives the process).

Every state change happens between two awaits, so each method is atomic with respect to
the others without a lock. Time comes from ``clock`` (epoch seconds) for every run_at, lease
and due decision; ``wait`` sleeps on real time for at most what the clock says is left until
the next delayed job or lease falls due.

Indexes per queue: a heap of claimable jobs ordered (priority desc, run_at, enqueue order), a
heap of delayed jobs by run_at, and a heap of leases by expiry. Entries are invalidated
lazily: each record carries a generation that every state change bumps, and a popped entry
whose generation is stale is dropped. So a claim of N jobs costs O(N log n) and a heartbeat
touches no heap at all (an extended lease is pushed back when its old entry surfaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncworker.core import jsonvalue
from syncworker.queue.base import Job, JobState, NewJob, Outcome, check_new_job, encode_payload

_INF = float("inf")


@dataclass(slots=True)
class _Record:
    job: Job
    seq: int  # enqueue order
    gen: int = 0  # bumped on every state change; heap entries carry the one they saw


@dataclass(slots=True)
class _Queue:
    ready: list[tuple[int, float, int, int, str]] = field(default_factory=list)
    # (-priority, run_at, seq, gen, id)
    delayed: list[tuple[float, int, int, str]] = field(
        default_factory=list
    )  # (run_at, seq, gen, id)
    leases: list[tuple[float, int, str]] = field(default_factory=list)  # (lease_until, gen, id)
    wake: asyncio.Condition | None = None


class MemoryQueueBackend:
    """``QueueBackend`` in one process's memory. ``get``/``claim``/``list_jobs`` return
    copies: a caller changing a ``Job`` changes nothing stored."""

    kind = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._jobs: dict[str, _Record] = {}
        self._queues: dict[str, _Queue] = {}
        self._unique: dict[str, str] = {}  # unique key -> id of the job holding it
        self._cron: dict[str, float] = {}
        self._seq = 0

    async def open(self) -> None:
        """Nothing to connect; idempotent."""

    async def close(self) -> None:
        """Wakes every waiter; the jobs stay (another ``open`` sees them)."""
        for name in list(self._queues):
            await self._notify(name)

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[str]:
        """See ``QueueBackend.enqueue_many``; ``ValueError`` (nothing stored) for a job that
        cannot be stored."""
        if not jobs:
            return []
        encoded = [self._encode(job) for job in jobs]  # refuse before storing any
        now = self._clock()
        ids: list[str] = []
        woken: set[str] = set()
        for job, data in zip(jobs, encoded, strict=True):
            held = self._unique.get(job.unique_key) if job.unique_key is not None else None
            if held is not None:
                ids.append(held)
                continue
            ids.append(self._add(job, data, now))
            woken.add(job.queue)
        for name in woken:
            await self._notify(name)
        return ids

    @staticmethod
    def _encode(job: NewJob) -> bytes:
        check_new_job(job)
        try:
            return encode_payload(job)
        except TypeError as exc:  # jsonvalue.JSONValueError
            raise ValueError(f"job payload of task {job.task!r} is not JSON: {exc}") from exc

    def _add(self, new: NewJob, data: bytes, now: float) -> str:
        self._seq += 1
        job_id = str(self._seq)
        run_at = now if new.run_at is None else new.run_at
        job = Job(
            id=job_id,
            task=new.task,
            queue=new.queue,
            data=data,
            state=JobState.DELAYED if run_at > now else JobState.QUEUED,
            priority=new.priority,
            run_at=run_at,
            enqueued_at=now,
            attempts=0,
            max_attempts=new.max_attempts,
            unique_key=new.unique_key,
            timeout_s=new.timeout_s,
        )
        record = _Record(job, self._seq)
        self._jobs[job_id] = record
        if new.unique_key is not None:
            self._unique[new.unique_key] = job_id
        self._index(record)
        return job_id

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    def _index(self, record: _Record) -> None:
        """Put ``record`` in the heap its (new) state belongs to, after bumping its gen."""
        record.gen += 1
        job = record.job
        queue = self._queue(job.queue)
        if job.state is JobState.QUEUED:
            entry = (-job.priority, job.run_at, record.seq, record.gen, job.id)
            heapq.heappush(queue.ready, entry)
        elif job.state is JobState.DELAYED:
            heapq.heappush(queue.delayed, (job.run_at, record.seq, record.gen, job.id))
        elif job.state is JobState.ACTIVE:
            assert job.lease_until is not None
            heapq.heappush(queue.leases, (job.lease_until, record.gen, job.id))

    # -- claim -----------------------------------------------------------------------------

    async def claim(self, queue: str, limit: int, worker_id: str, lease_s: float) -> list[Job]:
        """See ``QueueBackend.claim``."""
        q = self._queues.get(queue)
        if q is None or limit <= 0:
            return []
        now = self._clock()
        self._promote(q, now)
        self._expire(q, now)
        claimed: list[Job] = []
        lease_until = now + lease_s
        while q.ready and len(claimed) < limit:
            *_, gen, job_id = heapq.heappop(q.ready)
            record = self._jobs.get(job_id)
            if record is None or record.gen != gen:
                continue
            job = record.job
            job.state = JobState.ACTIVE
            job.attempts += 1
            job.worker = worker_id
            job.lease_until = lease_until
            self._index(record)
            claimed.append(copy.copy(job))
        return claimed

    def _promote(self, q: _Queue, now: float) -> None:
        """Delayed jobs whose run_at has come become queued."""
        while q.delayed and q.delayed[0][0] <= now:
            _, _, gen, job_id = heapq.heappop(q.delayed)
            record = self._jobs.get(job_id)
            if record is None or record.gen != gen:
                continue
            record.job.state = JobState.QUEUED
            self._index(record)

    def _expire(self, q: _Queue, now: float) -> None:
        """Active jobs whose lease ran out become claimable again (their attempt counted),
        or dead when that attempt was their last."""
        while q.leases and q.leases[0][0] <= now:
            _, gen, job_id = heapq.heappop(q.leases)
            record = self._jobs.get(job_id)
            if record is None or record.gen != gen:
                continue
            job = record.job
            assert job.lease_until is not None
            if job.lease_until > now:  # extended by a heartbeat since this entry was pushed
                heapq.heappush(q.leases, (job.lease_until, gen, job_id))
                continue
            job.worker = None
            job.lease_until = None
            if job.attempts >= job.max_attempts:
                self._to_dead(record, f"lease expired after {job.attempts} attempts", None, now)
            else:
                job.state = JobState.QUEUED
                self._index(record)

    def _to_dead(self, record: _Record, error: str | None, stack: str | None, now: float) -> None:
        job = record.job
        job.state = JobState.DEAD
        job.error = error
        job.stack = stack
        job.finished_at = now
        job.worker = None
        job.lease_until = None
        self._free_key(job)
        self._index(record)

    def _free_key(self, job: Job) -> None:
        if job.unique_key is not None and self._unique.get(job.unique_key) == job.id:
            del self._unique[job.unique_key]

    def _held(self, job_id: str, attempt: int, worker_id: str) -> _Record | None:
        record = self._jobs.get(job_id)
        if record is None:
            return None
        job = record.job
        if job.state is not JobState.ACTIVE or job.worker != worker_id or job.attempts != attempt:
            return None
        return record

    # -- while running -----------------------------------------------------------------------

    async def heartbeat(
        self, tokens: Sequence[tuple[str, int]], worker_id: str, lease_s: float
    ) -> list[str]:
        """See ``QueueBackend.heartbeat``."""
        lease_until = self._clock() + lease_s
        lost: list[str] = []
        for job_id, attempt in tokens:
            record = self._held(job_id, attempt, worker_id)
            if record is None:
                lost.append(job_id)
            else:
                record.job.lease_until = lease_until
        return lost

    async def set_progress(self, token: tuple[str, int], worker_id: str, progress: Any) -> bool:
        """See ``QueueBackend.set_progress``."""
        record = self._held(token[0], token[1], worker_id)
        if record is None:
            return False
        record.job.progress = _exact_copy(progress)
        return True

    async def finish(self, outcomes: Sequence[Outcome], worker_id: str) -> list[str]:
        """See ``QueueBackend.finish``."""
        now = self._clock()
        results = [_exact_copy(o.result) for o in outcomes]  # refuse before applying any
        stale: list[str] = []
        woken: set[str] = set()
        for outcome, result in zip(outcomes, results, strict=True):
            record = self._held(outcome.job_id, outcome.attempt, worker_id)
            if record is None:
                stale.append(outcome.job_id)
                continue
            job = record.job
            if outcome.kind == "completed":
                job.state = JobState.COMPLETED
                job.result = result
                job.finished_at = now
                job.worker = None
                job.lease_until = None
                self._free_key(job)
                self._index(record)
            elif outcome.kind == "retry":
                job.run_at = now if outcome.run_at is None else outcome.run_at
                job.state = JobState.DELAYED if job.run_at > now else JobState.QUEUED
                job.error = outcome.error
                job.stack = outcome.stack
                job.worker = None
                job.lease_until = None
                self._index(record)
                woken.add(job.queue)
            else:
                self._to_dead(record, outcome.error, outcome.stack, now)
        for name in woken:
            await self._notify(name)
        return stale

    async def release(self, tokens: Sequence[tuple[str, int]], worker_id: str) -> int:
        """See ``QueueBackend.release``."""
        released = 0
        woken: set[str] = set()
        for job_id, attempt in tokens:
            record = self._held(job_id, attempt, worker_id)
            if record is None:
                continue
            job = record.job
            job.state = JobState.QUEUED
            job.attempts -= 1
            job.worker = None
            job.lease_until = None
            self._index(record)
            released += 1
            woken.add(job.queue)
        for name in woken:
            await self._notify(name)
        return released

    # -- waiting -----------------------------------------------------------------------------

    async def wait(self, queue: str, timeout_s: float) -> None:
        """See ``QueueBackend.wait``: an enqueue, retry or release in this process wakes it at
        once; a delayed job or a lease falling due ends the wait when the clock says so."""
        q = self._queue(queue)
        now = self._clock()
        self._promote(q, now)
        if self._claimable(q):
            return
        due_s = min(q.delayed[0][0] if q.delayed else _INF, q.leases[0][0] if q.leases else _INF)
        timeout_s = min(timeout_s, max(0.0, due_s - now))
        if timeout_s <= 0:
            return
        if q.wake is None:
            q.wake = asyncio.Condition()
        async with q.wake:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.wake.wait(), timeout_s)

    def _claimable(self, q: _Queue) -> bool:
        while q.ready:
            *_, gen, job_id = q.ready[0]
            record = self._jobs.get(job_id)
            if record is not None and record.gen == gen:
                return True
            heapq.heappop(q.ready)
        return False

    async def _notify(self, name: str) -> None:
        wake = self._queue(name).wake
        if wake is not None:
            async with wake:  # free between awaits, so this never suspends
                wake.notify_all()

    # -- inspection and maintenance ------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """See ``QueueBackend.get``."""
        record = self._jobs.get(job_id)
        return None if record is None else copy.copy(record.job)

    async def list_jobs(
        self, *, queue: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]:
        """See ``QueueBackend.list_jobs``."""
        found: list[Job] = []
        for record in reversed(self._jobs.values()):  # insertion order = enqueue order
            job = record.job
            if (queue is None or job.queue == queue) and (state is None or job.state is state):
                found.append(copy.copy(job))
                if len(found) >= limit:
                    break
        return found

    async def counts(self) -> dict[str, dict[JobState, int]]:
        """See ``QueueBackend.counts``."""
        now = self._clock()
        for q in self._queues.values():
            self._promote(q, now)
        result: dict[str, dict[JobState, int]] = {}
        for record in self._jobs.values():
            job = record.job
            per_state = result.get(job.queue)
            if per_state is None:
                per_state = result[job.queue] = dict.fromkeys(JobState, 0)
            per_state[job.state] += 1
        return result

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """See ``QueueBackend.requeue``; a job whose unique key another job now holds is
        skipped."""
        requeued = 0
        woken: set[str] = set()
        for job_id in job_ids:
            record = self._jobs.get(job_id)
            if record is None or record.job.state is not JobState.DEAD:
                continue
            job = record.job
            if job.unique_key is not None:
                if self._unique.get(job.unique_key, job.id) != job.id:
                    continue
                self._unique[job.unique_key] = job.id
            job.state = JobState.QUEUED
            job.attempts = 0
            job.finished_at = None
            self._index(record)
            requeued += 1
            woken.add(job.queue)
        for name in woken:
            await self._notify(name)
        return requeued

    async def prune(self, state: JobState, older_than_s: float) -> int:
        """See ``QueueBackend.prune``; ``ValueError`` for a state other than completed/dead."""
        if state not in (JobState.COMPLETED, JobState.DEAD):
            raise ValueError(f"prune takes completed or dead, not {state.value}")
        cutoff = self._clock() - older_than_s
        doomed = [
            job_id
            for job_id, record in self._jobs.items()
            if record.job.state is state
            and record.job.finished_at is not None
            and record.job.finished_at < cutoff
        ]
        for job_id in doomed:
            del self._jobs[job_id]
        return len(doomed)

    async def enqueue_cron(self, name: str, slot: float, job: NewJob) -> str | None:
        """See ``QueueBackend.enqueue_cron``."""
        if slot <= self._cron.get(name, -_INF):
            return None
        self._encode(job)  # refuse before storing the slot
        self._cron[name] = slot
        return (await self.enqueue_many([job]))[0]

    async def cron_state(self) -> dict[str, float]:
        """See ``QueueBackend.cron_state``."""
        return dict(self._cron)


def _exact_copy(value: Any) -> Any:
    """A detached copy of a JSON value (a deep copy: a Decimal keeps its exponent, as a
    NUMERIC column would); ``ValueError`` for a value with no exact JSON form."""
    if value is None or isinstance(value, bool | int | str):
        return value
    try:
        jsonvalue.dumps(value)
    except TypeError as exc:
        raise ValueError(f"not a JSON value: {exc}") from exc
    return copy.deepcopy(value)
