"""The worker: claims jobs of its queues, runs their handlers, reports outcomes in batches.

Per queue, one claim loop asks the backend for exactly the free capacity (concurrency minus
running), in one call. Each claimed job runs in its own named task; its outcome joins a
buffer that one flush loop sends with ``finish`` (while one flush is in flight the next
batch gathers, so a busy worker sends hundreds of outcomes per round trip and an idle one
sends each at once). One heartbeat loop extends every lease the worker holds; cpu tasks run
in a process pool so a CPU-heavy handler never holds up the event loop that runs it.

A job stays "held" (heartbeat extends it) until its outcome is applied or it is released.
Backend errors never end the worker: each is logged with its reason and the call is retried
after a backoff.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import functools
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from syncworker.core import jsonvalue
from syncworker.errors import PermanentError, RetryableError
from syncworker.jobs.backoff import Backoff
from syncworker.jobs.context import JobContext
from syncworker.jobs.pool import PoolRecycled, ProcessPool
from syncworker.jobs.tasks import Task, TaskRegistry
from syncworker.queue.base import Job, Outcome, QueueBackend

log = structlog.get_logger("syncworker.jobs")

DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
FLUSH_MAX_OUTCOMES = 1000
"""Outcomes per ``finish`` call at most (a larger buffer goes out in several calls)."""
MAX_PENDING_OUTCOMES = 2000
"""Claiming pauses while this many outcomes wait for ``finish`` (backpressure: a backend
slower to finish than the handlers run would otherwise let held jobs pile up)."""
BACKEND_BACKOFF = Backoff(base_s=0.05, factor=2, max_s=5.0, jitter=0.2)
"""Delay before retrying a backend call that failed (claim, finish, heartbeat, release)."""


@dataclass(slots=True)
class QueueSettings:
    """One queue's share of the worker: ``concurrency`` jobs at once; ``timeout_s`` for
    jobs whose task and enqueue set none (None: no limit)."""

    concurrency: int = 1
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"queue concurrency {self.concurrency} must be >= 1")


@dataclass(slots=True)
class _Running:
    job: Job
    started_s: float
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None  # "lease_lost" | "shutdown" once cancelled by us
    # A plain handler's thread: no cancel stops it, so the job stays held until it returns.
    thread: asyncio.Future[Any] | None = None
    timed_out: Outcome | None = None  # the timeout's outcome, reported once the thread ends


@dataclass(slots=True)
class _Counts:
    completed: int = 0
    retried: int = 0
    dead: int = 0
    failed_attempts: int = 0
    released: int = 0
    lease_lost: int = 0
    duration_count: int = 0
    duration_sum_s: float = 0.0
    duration_buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))

    def observe(self, duration_s: float) -> None:
        self.duration_count += 1
        self.duration_sum_s += duration_s
        index = bisect.bisect_left(DURATION_BUCKETS_S, duration_s)
        if index < len(self.duration_buckets):
            self.duration_buckets[index] += 1

    def as_dict(self) -> dict[str, Any]:
        cumulative, total = [], 0
        for count in self.duration_buckets:
            total += count
            cumulative.append(total)
        return {
            "completed": self.completed,
            "retried": self.retried,
            "dead": self.dead,
            "failed_attempts": self.failed_attempts,
            "released": self.released,
            "lease_lost": self.lease_lost,
            "duration": {
                "count": self.duration_count,
                "sum_s": self.duration_sum_s,
                "buckets_s": dict(zip(DURATION_BUCKETS_S, cumulative, strict=True)),
            },
        }


@dataclass(slots=True)
class _QueueState:
    name: str
    settings: QueueSettings
    running: dict[str, _Running] = field(default_factory=dict)
    capacity: asyncio.Event = field(default_factory=asyncio.Event)
    counts: _Counts = field(default_factory=_Counts)


class Worker:
    """Runs the jobs of ``queues`` from ``backend`` with the handlers of ``registry``.

    ``run(stop)`` works until ``stop`` is set, then shuts down in phases: stop claiming;
    wait up to ``shutdown_grace_s`` for running jobs; cancel the rest and ``release`` them
    (another worker takes them at once); flush pending outcomes; close the process pool.
    The backend is opened by ``run`` (idempotent) and left open for its owner to close.
    """

    def __init__(
        self,
        backend: QueueBackend,
        registry: TaskRegistry,
        queues: dict[str, QueueSettings] | None = None,
        *,
        worker_id: str | None = None,
        lease_s: float = 30.0,
        heartbeat_s: float | None = None,
        poll_interval_s: float = 1.0,
        shutdown_grace_s: float = 10.0,
        process_workers: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s {lease_s} must be > 0")
        self.backend = backend
        self.registry = registry
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else lease_s / 3
        self.poll_interval_s = poll_interval_s
        self.shutdown_grace_s = shutdown_grace_s
        self._clock = clock
        self._queues = {
            name: _QueueState(name, settings)
            for name, settings in (queues or {"default": QueueSettings()}).items()
        }
        self._pool = ProcessPool(process_workers)
        self._held: dict[str, int] = {}  # job id -> attempt, until applied or released
        # job id -> when (monotonic) the call that last set its lease was sent: a lease not
        # renewed for lease_s has run out, whatever the backend says later.
        self._renewed: dict[str, float] = {}
        self._running: dict[str, _Running] = {}  # every queue's, by job id
        self._pending: list[Outcome] = []
        self._flush_wake = asyncio.Event()
        self._to_release: list[tuple[str, int]] = []
        self._threads: list[_Running] = []  # cancelled at shutdown, their thread still running
        self._by_task: dict[tuple[str, str], _Counts] = {}
        self._stop = asyncio.Event()
        self.started = asyncio.Event()  # set once the claim loops run

    # -- the life cycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then shut down in phases (see the class)."""
        self._stop = stop
        await self._open()
        if stop.is_set():
            return
        loops = [
            asyncio.create_task(self._claim_loop(state), name=f"jobs-claim:{state.name}")
            for state in self._queues.values()
        ]
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="jobs-heartbeat")
        flusher = asyncio.create_task(self._flush_loop(), name="jobs-flush")
        log.info("worker_started", worker=self.worker_id, queues=sorted(self._queues))
        self.started.set()
        try:
            await stop.wait()
        finally:
            await self._shutdown(loops, heartbeat, flusher)

    async def _open(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await self.backend.open()
                return
            except Exception as exc:
                failures += 1
                self._backend_error("open", exc, failures)
                await self._pause(BACKEND_BACKOFF.delay_s(failures))

    async def _shutdown(
        self, loops: list[asyncio.Task[None]], heartbeat: asyncio.Task[None], flusher: Any
    ) -> None:
        log.info("worker_stopping", worker=self.worker_id, running=len(self._running))
        for state in self._queues.values():
            state.capacity.set()
        await asyncio.gather(*loops, return_exceptions=True)  # phase 1: no more claims
        running = [r.task for r in self._running.values() if r.task is not None]
        if running:  # phase 2: grace
            await asyncio.wait(running, timeout=self.shutdown_grace_s)
        left = list(self._running.values())
        for record in left:  # phase 3: cancel
            record.cancel_reason = "shutdown"
            if record.task is not None:
                record.task.cancel()
        await asyncio.gather(*(r.task for r in left if r.task), return_exceptions=True)
        if any(r.job.task in self._cpu_tasks() for r in left):
            self._pool.recycle()
        await self._settle_threads()
        await self._release_all()  # phase 4: hand back
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await self._flush_all()  # phase 5: outcomes
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        self._pool.close()  # phase 6
        log.info("worker_stopped", worker=self.worker_id, released=len(left))

    def _cpu_tasks(self) -> set[str]:
        return {task.name for task in self.registry if task.cpu}

    async def _settle_threads(self) -> None:
        """Plain handlers cancelled at shutdown whose thread still runs: another worker must
        not start them meanwhile, so they stay held (heartbeat) for up to one more grace, and
        their outcome is reported when the thread returns. A thread still running after that
        keeps its job unreleased: its lease expires, never while the thread is known to run."""
        records, self._threads = self._threads, []
        threads = [r.thread for r in records if r.thread is not None]
        if threads:
            await asyncio.wait(threads, timeout=self.shutdown_grace_s)
        for record in records:
            job, thread = record.job, record.thread
            assert thread is not None
            if not thread.done():
                log.error("job_thread_abandoned", job_id=job.id, task=job.task)
                continue
            task = self.registry.get(job.task)
            assert task is not None
            outcome = record.timed_out or self._thread_outcome(task, job, thread)
            state = self._queues[job.queue]
            self._report(state, self._task_counts(job), outcome)

    async def _release_all(self) -> None:
        for failures in range(1, 6):
            tokens, self._to_release = self._to_release, []
            if not tokens:
                return
            try:
                await self.backend.release(tokens, self.worker_id)
            except Exception as exc:
                self._to_release = tokens + self._to_release
                self._backend_error("release", exc, failures)
                await asyncio.sleep(BACKEND_BACKOFF.delay_s(failures))
                continue
            for job_id, _ in tokens:
                self._held.pop(job_id, None)
            log.info("jobs_released", worker=self.worker_id, count=len(tokens))
        if self._to_release:
            log.error("jobs_release_failed", worker=self.worker_id, count=len(self._to_release))

    async def _flush_all(self) -> None:
        failures = 0
        while self._pending and failures < 5:
            if await self._flush_once():
                failures = 0
            else:
                failures += 1
                await asyncio.sleep(BACKEND_BACKOFF.delay_s(failures))
        if self._pending:
            # Their leases expire and the jobs run again elsewhere: logged, never silent.
            log.error("job_outcomes_lost", worker=self.worker_id, count=len(self._pending))

    async def _pause(self, delay_s: float) -> None:
        """Sleep ``delay_s`` or until stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay_s)

    def _backend_error(self, call: str, exc: BaseException, failures: int) -> None:
        log.warning(
            "queue_backend_failed",
            call=call,
            backend=self.backend.kind,
            worker=self.worker_id,
            error=f"{type(exc).__name__}: {exc}",
            failures=failures,
        )

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self, state: _QueueState) -> None:
        failures = 0
        stop_wait = asyncio.create_task(self._stop.wait(), name=f"jobs-stop:{state.name}")
        try:
            while not self._stop.is_set():
                free = state.settings.concurrency - len(state.running)
                if free <= 0 or len(self._pending) >= MAX_PENDING_OUTCOMES:
                    state.capacity.clear()
                    await state.capacity.wait()
                    continue
                asked = time.monotonic()
                try:
                    jobs = await self.backend.claim(state.name, free, self.worker_id, self.lease_s)
                except Exception as exc:
                    failures += 1
                    self._backend_error("claim", exc, failures)
                    await self._pause(BACKEND_BACKOFF.delay_s(failures))
                    continue
                failures = 0
                for job in jobs:
                    self._renewed[job.id] = asked
                    self._start(state, job)
                if len(jobs) < free and not self._stop.is_set():
                    await self._wait_for_jobs(state, stop_wait)
        finally:
            stop_wait.cancel()

    async def _wait_for_jobs(self, state: _QueueState, stop_wait: asyncio.Task[Any]) -> None:
        """The queue looked drained: wait for the backend's wake, the poll interval or stop."""
        waiting = asyncio.ensure_future(self.backend.wait(state.name, self.poll_interval_s))
        try:
            await asyncio.wait({waiting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiting
        if waiting.done() and not waiting.cancelled() and waiting.exception() is not None:
            exc = waiting.exception()
            assert exc is not None
            self._backend_error("wait", exc, 1)
            await self._pause(self.poll_interval_s)

    def _start(self, state: _QueueState, job: Job) -> None:
        record = _Running(job, time.monotonic())
        self._held[job.id] = job.attempts
        state.running[job.id] = record
        self._running[job.id] = record
        record.task = asyncio.get_running_loop().create_task(
            self._execute(state, record), name=f"job:{job.id}"
        )

    # -- running ----------------------------------------------------------------------------

    async def _execute(self, state: _QueueState, record: _Running) -> None:
        job = record.job
        outcome: Outcome | None = None
        try:
            outcome = await self._outcome(state, job)
        except asyncio.CancelledError:
            if record.cancel_reason is None:
                raise
        except PoolRecycled:
            record.cancel_reason = "pool_recycled"
        finally:
            state.running.pop(job.id, None)
            self._running.pop(job.id, None)
            state.capacity.set()
        counts = self._task_counts(job)
        if outcome is not None:
            duration_s = time.monotonic() - record.started_s
            state.counts.observe(duration_s)
            counts.observe(duration_s)
            self._report(state, counts, outcome)
        elif record.cancel_reason == "lease_lost":
            state.counts.lease_lost += 1
            counts.lease_lost += 1
            if job.task in self._cpu_tasks():
                # Its process computes on otherwise, beside the run of the job's new holder;
                # the other cpu jobs of the pool are handed back (PoolRecycled).
                self._pool.recycle()
        elif record.thread is not None and (record.timed_out or not record.thread.done()):
            log.warning("job_thread_still_running", job_id=job.id, task=job.task)
            self._threads.append(record)  # shutdown: see _settle_threads
        else:  # shutdown or a recycled pool: hand the job back, its attempt not counted
            self._to_release.append(job.token)
            state.counts.released += 1
            counts.released += 1
            if not self._stop.is_set():
                asyncio.get_running_loop().create_task(self._release_all(), name="jobs-release")

    async def _outcome(self, state: _QueueState, job: Job) -> Outcome:
        task = self.registry.get(job.task)
        if task is None:
            return Outcome(job.id, job.attempts, "dead", error=f"unknown task {job.task!r}")
        try:
            argument = task.parse(_payload(job))
        except ValueError as exc:
            return Outcome(job.id, job.attempts, "dead", error=str(exc))
        timeout_s = job.timeout_s or task.timeout_s or state.settings.timeout_s
        return await self._attempt(task, job, argument, timeout_s)

    async def _attempt(
        self, task: Task, job: Job, argument: Any, timeout_s: float | None
    ) -> Outcome:
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                result = await self._call(task, job, argument)
        except TimeoutError as exc:
            if not deadline.expired():
                return self._failed(task, job, exc)
            if task.cpu:
                self._pool.recycle()  # the child keeps running otherwise
            log.warning("job_timed_out", job_id=job.id, task=job.task, timeout_s=timeout_s)
            outcome = self._failed(task, job, None, f"timed out after {timeout_s} s")
            await self._thread_end(job, outcome)
            return outcome
        except (PoolRecycled, asyncio.CancelledError):
            raise
        except Exception as exc:
            return self._failed(task, job, exc)
        if result is not None and not jsonvalue.encodable(result):
            error = f"result of type {type(result).__name__} is not JSON"
            return Outcome(job.id, job.attempts, "dead", error=error)
        return Outcome(job.id, job.attempts, "completed", result=result)

    async def _thread_end(self, job: Job, outcome: Outcome) -> None:
        """A timed-out plain handler's thread runs on (no cancel stops it): its retry must not
        start elsewhere meanwhile, so the job stays held, its slot taken, until it returns."""
        record = self._running.get(job.id)
        if record is None or record.thread is None or record.thread.done():
            return
        record.timed_out = outcome
        log.warning("job_thread_still_running", job_id=job.id, task=job.task)
        with contextlib.suppress(Exception):
            await asyncio.shield(record.thread)

    def _thread_outcome(self, task: Task, job: Job, thread: asyncio.Future[Any]) -> Outcome:
        exc = thread.exception()
        if exc is not None:
            return self._failed(task, job, exc)
        result = thread.result()
        if result is not None and not jsonvalue.encodable(result):
            error = f"result of type {type(result).__name__} is not JSON"
            return Outcome(job.id, job.attempts, "dead", error=error)
        return Outcome(job.id, job.attempts, "completed", result=result)

    async def _in_thread(self, job: Job, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a thread (as ``asyncio.to_thread``), remembered on the job's
        record: a cancel ends the wait, not the thread."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        thread = asyncio.get_running_loop().run_in_executor(None, call)
        # Retrieved here too: a cancelled wait (lost lease) leaves no unretrieved exception.
        thread.add_done_callback(lambda done: done.cancelled() or done.exception())
        record = self._running.get(job.id)
        if record is not None:
            record.thread = thread
        return await asyncio.shield(thread)

    async def _call(self, task: Task, job: Job, argument: Any) -> Any:
        if task.cpu:
            if task.takes_ctx:
                return await self._pool.run(task.fn, argument, JobContext(job, self.worker_id))
            return await self._pool.run(task.fn, argument)
        if task.is_async:
            if task.takes_ctx:
                return await task.fn(argument, JobContext(job, self.worker_id, self.backend))
            return await task.fn(argument)
        if task.takes_ctx:
            ctx = JobContext(job, self.worker_id, self.backend)
            return await self._in_thread(job, task.fn, argument, ctx)
        return await self._in_thread(job, task.fn, argument)

    def _failed(
        self, task: Task, job: Job, exc: BaseException | None, reason: str | None = None
    ) -> Outcome:
        error = reason or f"{type(exc).__name__}: {exc}"
        stack = "".join(traceback.format_exception(exc)) if exc is not None else None
        if isinstance(exc, PermanentError) or job.attempts >= job.max_attempts:
            log.warning(
                "job_dead", job_id=job.id, task=job.task, attempts=job.attempts, error=error
            )
            return Outcome(job.id, job.attempts, "dead", error=error, stack=stack)
        delay_s = exc.delay_s if isinstance(exc, RetryableError) else None
        if delay_s is None:
            delay_s = task.backoff.delay_s(job.attempts)
        log.info("job_retry", job_id=job.id, task=job.task, attempt=job.attempts, delay_s=delay_s)
        run_at = self._clock() + delay_s
        return Outcome(job.id, job.attempts, "retry", run_at=run_at, error=error, stack=stack)

    def _task_counts(self, job: Job) -> _Counts:
        key = (job.queue, job.task)
        counts = self._by_task.get(key)
        if counts is None:
            counts = self._by_task[key] = _Counts()
        return counts

    # -- outcomes ---------------------------------------------------------------------------

    def _report(self, state: _QueueState, counts: _Counts, outcome: Outcome) -> None:
        if outcome.kind == "completed":
            state.counts.completed += 1
            counts.completed += 1
        elif outcome.kind == "retry":
            state.counts.retried += 1
            state.counts.failed_attempts += 1
            counts.retried += 1
            counts.failed_attempts += 1
        else:
            state.counts.dead += 1
            counts.dead += 1
            if outcome.error and (outcome.stack or "timed out" in outcome.error):
                state.counts.failed_attempts += 1
                counts.failed_attempts += 1
        self._pending.append(outcome)
        self._flush_wake.set()

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            if await self._flush_once():
                failures = 0
            else:
                failures += 1
                await asyncio.sleep(BACKEND_BACKOFF.delay_s(failures))
                self._flush_wake.set()

    async def _flush_once(self) -> bool:
        """Send up to ``FLUSH_MAX_OUTCOMES`` pending outcomes; False when the backend failed
        (they stay pending)."""
        batch = self._pending[:FLUSH_MAX_OUTCOMES]
        del self._pending[: len(batch)]
        if self._pending:
            self._flush_wake.set()
        try:
            stale = await self.backend.finish(batch, self.worker_id)
        except Exception as exc:
            self._pending[:0] = batch
            self._backend_error("finish", exc, 1)
            return False
        for outcome in batch:
            if self._held.get(outcome.job_id) == outcome.attempt:
                del self._held[outcome.job_id]
        for state in self._queues.values():
            state.capacity.set()  # a claim loop may wait for the backlog of outcomes
        if stale:
            log.warning("job_outcome_stale", worker=self.worker_id, job_ids=stale[:20])
        return True

    # -- leases -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        failures = 0
        while True:
            delay_s = self.heartbeat_s if not failures else BACKEND_BACKOFF.delay_s(failures)
            await asyncio.sleep(min(delay_s, self.heartbeat_s))
            tokens = list(self._held.items())
            for job_id in [j for j in self._renewed if j not in self._held]:
                del self._renewed[job_id]
            if not tokens:
                continue
            sent = time.monotonic()
            try:
                # A call that hangs (a connection dropped without a reset) is cut when the
                # oldest lease it renews is about to run out, so the jobs stop in time.
                async with asyncio.timeout(self._renewal_left_s(tokens, sent)):
                    lost = await self.backend.heartbeat(tokens, self.worker_id, self.lease_s)
            except Exception as exc:
                failures += 1
                self._backend_error("heartbeat", exc, failures)
                self._drop_unrenewed()
                continue
            failures = 0
            for job_id, _ in tokens:
                self._renewed[job_id] = sent
            for job_id in lost:
                self._lose(job_id, dict(tokens).get(job_id))

    def _renewal_margin_s(self) -> float:
        return min(self.heartbeat_s, self.lease_s / 4)

    def _renewal_left_s(self, tokens: list[tuple[str, int]], now: float) -> float:
        oldest = min((self._renewed.get(job_id, now) for job_id, _ in tokens), default=now)
        left_s = oldest + self.lease_s - self._renewal_margin_s() - now
        return max(self.heartbeat_s, left_s)

    def _drop_unrenewed(self) -> None:
        """Heartbeats are failing: a job whose lease is about to run out unrenewed may go to
        another worker, so it stops here first (never two runs at once)."""
        margin_s = self._renewal_margin_s()
        now = time.monotonic()
        for job_id, renewed in list(self._renewed.items()):
            if now - renewed >= self.lease_s - margin_s and job_id in self._held:
                log.warning("job_lease_unrenewed", job_id=job_id, worker=self.worker_id)
                self._lose(job_id, self._held[job_id])

    def _lose(self, job_id: str, attempt: int | None) -> None:
        """Another worker may hold the job now: stop running it here."""
        if self._held.get(job_id) == attempt:
            del self._held[job_id]
        record = self._running.get(job_id)
        if record is None or record.job.attempts != attempt or record.task is None:
            return
        log.warning("job_lease_lost", job_id=job_id, task=record.job.task, worker=self.worker_id)
        record.cancel_reason = "lease_lost"
        record.task.cancel()

    # -- inspection -------------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per queue: running now, concurrency, and the counters since start (completed,
        retried, dead, failed_attempts, released, lease_lost, duration histogram)."""
        return {
            name: {
                "running": len(state.running),
                "concurrency": state.settings.concurrency,
                **state.counts.as_dict(),
            }
            for name, state in self._queues.items()
        }

    def task_stats(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The same counters per (queue, task) (the Prometheus series)."""
        return {key: counts.as_dict() for key, counts in self._by_task.items()}

    def running_jobs(self) -> list[Job]:
        """The jobs running now (copies of the claims)."""
        return [record.job for record in self._running.values()]


def _payload(job: Job) -> Any:
    """The decoded payload, or the raw bytes when they are not JSON (a pipeline message)."""
    try:
        return job.payload
    except ValueError:
        return job.data
