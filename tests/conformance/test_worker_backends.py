"""Issue 12's worker acceptance on every queue backend: a real ``Worker`` over memory, SQLite,
PostgreSQL and Redis, each case asserting from the job rows (``backend.get``).

Priorities, delays, unique keys, retries with the seed's backoff (5 s, 10 s, 20 s with jitter,
observed as the scheduled ``run_at`` of each retry, the clock jumped instead of waited), dead
letters with error and stack and requeue, timeouts, progress and results, the shutdown phases
and per-queue concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from syncworker.jobs import Backoff, JobContext, Jobs, QueueSettings, TaskRegistry, Worker
from syncworker.queue.base import JobState, NewJob
from tests.conformance.conftest import Logs
from tests.conformance.queues import BACKENDS
from tests.conformance.workers import (
    FailingHeartbeats,
    Tracker,
    WorkerHarness,
    job_in,
    spin_until_killed,
)
from tests.integration.conftest import pg_url, redis_prefix
from tests.waiting import eventually

__all__ = ["pg_url", "redis_prefix"]

pytestmark = pytest.mark.integration

SEED_BACKOFF = Backoff(base_s=5, factor=2, max_s=3600, jitter=0.1)


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkerHarness]:
    built = WorkerHarness(request.param, request, tmp_path)
    try:
        yield built
    finally:
        await built.close()


async def test_a_worker_runs_higher_priorities_first_within_a_queue(
    harness: WorkerHarness,
) -> None:
    registry, order = TaskRegistry(), []

    @registry.task("notify", queue="notification")
    async def notify(payload: Any) -> None:
        order.append(payload["name"])

    backend = await harness.new()
    # The seed's priorities: push 3 over email and SMS 1; enqueued lowest first.
    specs = [("sms-1", 1), ("email-1", 1), ("push-1", 3), ("other", 0), ("push-2", 3)]
    ids = await backend.enqueue_many(
        [NewJob("notify", {"name": n}, queue="notification", priority=p) for n, p in specs]
    )
    await harness.start(registry, {"notification": QueueSettings(concurrency=1)})
    for job_id in ids:
        await eventually(lambda j=job_id: job_in(backend, j, JobState.COMPLETED), "completed")
    assert order == ["push-1", "push-2", "sms-1", "email-1", "other"]


async def test_a_delayed_job_does_not_start_before_its_run_at(harness: WorkerHarness) -> None:
    registry, started = TaskRegistry(), {}

    @registry.task("later")
    async def later(payload: Any, ctx: JobContext) -> None:
        started[payload["name"]] = harness.clock()

    backend = await harness.new()
    jobs = Jobs(backend, registry, clock=harness.clock)
    delayed = await jobs.enqueue("later", {"name": "delayed"}, delay_s=0.6)
    now = await jobs.enqueue("later", {"name": "now"})
    await harness.start(registry)
    await eventually(lambda: job_in(backend, now, JobState.COMPLETED), "the due job done")
    done = await eventually(lambda: job_in(backend, delayed, JobState.COMPLETED), "delayed done")
    assert started["delayed"] >= done.run_at


async def test_a_unique_key_dedupes_while_queued_and_running_and_frees_on_completion(
    harness: WorkerHarness,
) -> None:
    registry, go, runs = TaskRegistry(), asyncio.Event(), []

    @registry.task("order")
    async def order(payload: Any) -> None:
        runs.append(payload["n"])
        await go.wait()

    backend = await harness.new()
    jobs = Jobs(backend, registry)
    first = await jobs.enqueue("order", {"n": 1}, unique_key="order-42")
    assert await jobs.enqueue("order", {"n": 2}, unique_key="order-42") == first  # queued
    await harness.start(registry)
    await eventually(lambda: job_in(backend, first, JobState.ACTIVE), "the job running")
    assert await jobs.enqueue("order", {"n": 3}, unique_key="order-42") == first  # running
    go.set()
    await eventually(lambda: job_in(backend, first, JobState.COMPLETED), "the job done")
    fresh = await jobs.enqueue("order", {"n": 4}, unique_key="order-42")
    assert fresh != first
    await eventually(lambda: job_in(backend, fresh, JobState.COMPLETED), "the new job done")
    assert runs == [1, 4]


async def test_retries_follow_the_seeds_backoff_then_the_job_is_dead_with_error_and_stack(
    harness: WorkerHarness,
) -> None:
    """The seed: 3 retries after 5 s, 10 s and 20 s (jitter 10 %). Each retry's delay is read
    from the job row (``run_at`` of the next claim minus the failure time) and the clock is
    jumped to it, so the case waits for nothing."""
    registry, failed_at, claimed_run_at = TaskRegistry(), [], []

    @registry.task("send", retries=3, backoff=SEED_BACKOFF)
    async def send(payload: Any, ctx: JobContext) -> None:
        claimed_run_at.append(ctx.job.run_at)
        failed_at.append(harness.clock())
        raise ConnectionError(f"smtp down (attempt {ctx.attempt})")

    backend = await harness.new()
    job_id = await Jobs(backend, registry, clock=harness.clock).enqueue("send", {"to": "a@b"})
    await harness.start(registry)
    for attempt, nominal_s in ((1, 5), (2, 10), (3, 20)):
        job = await eventually(lambda: job_in(backend, job_id, JobState.DELAYED), "a retry")
        assert job.attempts == attempt
        assert job.error == f"ConnectionError: smtp down (attempt {attempt})"
        assert "Traceback" in (job.stack or "") and job.worker is None
        delay_s = job.run_at - failed_at[-1]
        assert nominal_s * 0.9 <= delay_s <= nominal_s * 1.1 + 0.5, (attempt, delay_s)
        assert await backend.claim("default", 1, "thief", 30) == []  # not due before run_at
        harness.clock.advance(job.run_at - harness.clock() + 0.01)
        await eventually(lambda a=attempt: len(failed_at) > a, "the retry to run")
    dead = await eventually(lambda: job_in(backend, job_id, JobState.DEAD), "the job dead")
    assert dead.attempts == 4 and dead.error == "ConnectionError: smtp down (attempt 4)"
    assert "Traceback" in (dead.stack or "") and "smtp down" in (dead.stack or "")
    # What each retry's claim carried is the run_at the row held: the same schedule.
    delays = [r - f for r, f in zip(claimed_run_at[1:], failed_at, strict=False)]
    assert len(delays) == 3
    assert all(n * 0.9 <= d <= n * 1.1 + 0.5 for d, n in zip(delays, (5, 10, 20), strict=True))
    assert (await backend.counts())["default"][JobState.DEAD] == 1


async def test_requeue_brings_a_dead_job_back_and_the_worker_runs_it(
    harness: WorkerHarness,
) -> None:
    registry, healthy = TaskRegistry(), asyncio.Event()

    @registry.task("push", retries=0)
    async def push(payload: Any) -> dict[str, Any]:
        if not healthy.is_set():
            raise RuntimeError("fcm unavailable")
        return {"sent": payload["user"]}

    backend = await harness.new()
    job_id = await Jobs(backend, registry).enqueue("push", {"user": 7})
    worker, _, _ = await harness.start(registry)
    dead = await eventually(lambda: job_in(backend, job_id, JobState.DEAD), "the job dead")
    assert dead.error == "RuntimeError: fcm unavailable" and "Traceback" in (dead.stack or "")
    assert [j.id for j in await backend.list_jobs(state=JobState.DEAD)] == [job_id]
    healthy.set()
    assert await backend.requeue([job_id]) == 1
    done = await eventually(lambda: job_in(backend, job_id, JobState.COMPLETED), "requeued done")
    assert done.result == {"sent": 7} and done.attempts == 1
    assert worker.stats()["default"]["dead"] == 1 and worker.stats()["default"]["completed"] == 1


async def test_a_task_timeout_cancels_the_job_and_counts_as_a_failed_attempt(
    harness: WorkerHarness,
) -> None:
    registry, cancelled = TaskRegistry(), []

    @registry.task("video", queue="media", timeout_s=0.3, retries=1, backoff=Backoff(0, jitter=0))
    async def video(payload: Any, ctx: JobContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            raise

    backend = await harness.new()
    job_id = await Jobs(backend, registry).enqueue("video", {"key": "a.mp4"})
    worker, _, _ = await harness.start(registry, {"media": QueueSettings(concurrency=2)})
    dead = await eventually(lambda: job_in(backend, job_id, JobState.DEAD), "the job dead")
    assert dead.attempts == 2 and dead.error == "timed out after 0.3 s"
    assert cancelled == [1, 2]
    stats = worker.stats()["media"]
    assert stats["failed_attempts"] == 2 and stats["retried"] == 1 and stats["dead"] == 1
    assert stats["running"] == 0


async def test_progress_is_visible_while_running_and_the_result_is_stored(
    harness: WorkerHarness,
) -> None:
    registry, go = TaskRegistry(), asyncio.Event()

    @registry.task("transcode")
    async def transcode(payload: Any, ctx: JobContext) -> dict[str, Any]:
        assert await ctx.progress({"percent": 50, "stage": "encode"})
        await go.wait()
        return {"url": "s3://b/out.mp4", "frames": 2**40}

    backend = await harness.new()
    job_id = await Jobs(backend, registry).enqueue("transcode", {})
    await harness.start(registry)

    async def reported() -> Any:
        job = await job_in(backend, job_id, JobState.ACTIVE)
        return job is not None and job.progress == {"percent": 50, "stage": "encode"}

    await eventually(reported, "the progress on the running job")
    go.set()
    done = await eventually(lambda: job_in(backend, job_id, JobState.COMPLETED), "the job done")
    assert done.result == {"url": "s3://b/out.mp4", "frames": 2**40}
    assert done.progress == {"percent": 50, "stage": "encode"}


async def test_shutdown_stops_fetching_lets_a_short_job_finish_and_hands_a_long_one_back(
    harness: WorkerHarness,
) -> None:
    """Worker A (lease 300 s) is stopped while a short and a long job run: it claims nothing
    more, the short one finishes within the grace, the long one is cancelled and released, and
    worker B takes it at once (long before the 300 s lease) and finishes everything."""
    registry, finish_short, runs, cancelled = TaskRegistry(), asyncio.Event(), [], []

    @registry.task("short")
    async def short(payload: Any) -> None:
        runs.append(("short", payload["n"]))
        await finish_short.wait()

    @registry.task("long")
    async def long(payload: Any, ctx: JobContext) -> str:
        runs.append(("long", ctx.worker_id))
        if len([r for r in runs if r[0] == "long"]) == 1:
            try:
                await asyncio.Event().wait()  # the first run never ends by itself
            except asyncio.CancelledError:
                cancelled.append(ctx.worker_id)
                raise
        return ctx.worker_id

    backend = await harness.new()
    jobs = Jobs(backend, registry)
    short_id = await jobs.enqueue("short", {"n": 1})
    long_id = await jobs.enqueue("long", {})
    a, stop_a, run_a = await harness.start(
        registry, {"default": QueueSettings(concurrency=2)}, lease_s=300, shutdown_grace_s=3
    )
    await eventually(lambda: len(runs) == 2, "both jobs running on A")
    stop_a.set()
    late_id = await jobs.enqueue("short", {"n": 2})  # after stop: A must not fetch it
    finish_short.set()
    await run_a
    assert (await backend.get(short_id)).state is JobState.COMPLETED  # type: ignore[union-attr]
    back = await backend.get(long_id)
    assert back is not None and back.state is JobState.QUEUED and back.attempts == 0
    late = await backend.get(late_id)
    assert late is not None and late.state is JobState.QUEUED and late.attempts == 0
    assert cancelled == [a.worker_id] and ("short", 2) not in runs
    assert a.stats()["default"]["released"] == 1 and a.stats()["default"]["completed"] == 1
    b, _, _ = await harness.start(registry, lease_s=300)
    done = await eventually(lambda: job_in(backend, long_id, JobState.COMPLETED), "B runs it")
    assert done.result == b.worker_id and done.attempts == 1
    await eventually(lambda: job_in(backend, late_id, JobState.COMPLETED), "the late job done")
    counts = (await backend.counts())["default"]
    assert counts[JobState.COMPLETED] == 3 and sum(counts.values()) == 3


async def test_per_queue_concurrency_is_never_exceeded(harness: WorkerHarness) -> None:
    """The seed's shares: media 2, notification 5, clean-up 1, all in one worker."""
    registry, tracker = TaskRegistry(), Tracker()
    limits = {"media": 2, "notification": 5, "cleanup": 1}

    async def handler(payload: Any, ctx: JobContext) -> None:
        tracker.enter(ctx.job.queue)
        try:
            # Overlap is the point: each handler yields long enough for others to start.
            await asyncio.sleep(0.02)
        finally:
            tracker.leave(ctx.job.queue)

    for queue in limits:
        registry.task(f"{queue}-task", queue=queue)(handler)
    backend = await harness.new()
    ids = await Jobs(backend, registry).enqueue_many(
        [(f"{queue}-task", {"i": i}) for i in range(15) for queue in limits]
    )
    worker, _, _ = await harness.start(
        registry, {q: QueueSettings(concurrency=n) for q, n in limits.items()}
    )

    async def all_done() -> bool:
        counts = await backend.counts()
        return sum(counts[q][JobState.COMPLETED] for q in limits) == len(ids)

    await eventually(all_done, "every job completed")
    assert tracker.most == limits  # reached, and never more
    assert all(worker.stats()[q]["completed"] == 15 for q in limits)


async def test_a_plain_handler_still_in_its_thread_is_never_handed_to_another_worker(
    harness: WorkerHarness, logs: Logs
) -> None:
    """A plain (sync) handler runs in a thread, which no cancel stops. At shutdown the worker
    keeps the job held until the thread returns and reports what it returned; another worker
    never starts it meanwhile."""
    registry, release, runs = TaskRegistry(), threading.Event(), []

    @registry.task("resize")
    def resize(payload: Any) -> str:
        runs.append(payload["n"])
        release.wait(30)
        return "done"

    backend = await harness.new()
    job_id = await Jobs(backend, registry).enqueue("resize", {"n": 1})
    _, stop_a, run_a = await harness.start(registry, lease_s=30, shutdown_grace_s=0.2)
    await eventually(lambda: runs == [1], "the handler running on A")
    await harness.start(registry, lease_s=30)  # B: would take the job if A handed it back
    stop_a.set()
    await eventually(
        lambda: "job_thread_still_running" in logs.text or len(runs) > 1,
        "A to cancel the job it cannot stop (or to hand it back)",
    )
    assert await backend.claim("default", 5, "thief", 30) == []  # still A's
    release.set()
    await run_a
    done = await eventually(lambda: job_in(backend, job_id, JobState.COMPLETED), "A's outcome")
    assert done.result == "done" and done.attempts == 1
    assert runs == [1]


async def test_a_timed_out_plain_handler_is_retried_only_once_its_thread_returned(
    harness: WorkerHarness, logs: Logs
) -> None:
    registry, release, running = TaskRegistry(), threading.Event(), Tracker()

    @registry.task("resize", timeout_s=0.2, retries=1, backoff=Backoff(0, jitter=0))
    def resize(payload: Any) -> str:
        running.enter("resize")
        try:
            release.wait(30)
            return "done"
        finally:
            running.leave("resize")

    backend = await harness.new()
    job_id = await Jobs(backend, registry).enqueue("resize", {})
    await harness.start(registry, {"default": QueueSettings(concurrency=4)})
    await eventually(
        lambda: "job_thread_still_running" in logs.text or running.now.get("resize") == 2,
        "the timeout to fire (and the retry to wait, or to run at once)",
    )
    release.set()
    job = await eventually(lambda: job_in(backend, job_id, JobState.COMPLETED), "the retry done")
    assert job.attempts == 2 and job.result == "done"
    assert running.most == {"resize": 1}  # never two threads on the one job


@pytest.mark.parametrize("fault", ["failing", "hanging"])
async def test_a_worker_whose_heartbeats_fail_stops_the_job_before_another_can_take_it(
    harness: WorkerHarness, fault: str
) -> None:
    """While A cannot renew its lease (heartbeat calls fail), the job is claimable again once
    the lease ran out; A must have stopped its run before that, never two runs at once."""
    registry, events = TaskRegistry(), []

    @registry.task("send", retries=1)
    async def send(payload: Any, ctx: JobContext) -> str:
        events.append(("start", ctx.worker_id))
        if len(events) == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                events.append(("cancelled", ctx.worker_id))
                raise
        return ctx.worker_id

    flaky = FailingHeartbeats(await harness.new())
    job_id = await Jobs(flaky, registry).enqueue("send", {})
    a = Worker(flaky, registry, lease_s=1.0, heartbeat_s=0.1, clock=harness.clock)  # type: ignore[arg-type]
    stop_a = asyncio.Event()
    run_a = asyncio.create_task(a.run(stop_a))
    try:
        await eventually(lambda: events == [("start", a.worker_id)], "A running the job")
        setattr(flaky, fault, True)
        await harness.start(registry, lease_s=30)
        done = await eventually(lambda: job_in(flaky, job_id, JobState.COMPLETED), "a rerun")
        # A's claims still work: the rerun is B's or A's own, but only after A stopped.
        assert events[:2] == [("start", a.worker_id), ("cancelled", a.worker_id)]
        assert len(events) == 3 and events[2] == ("start", done.result)
        assert done.attempts == 2
        assert a.stats()["default"]["lease_lost"] == 1
    finally:
        stop_a.set()
        await run_a


async def test_a_cpu_job_that_lost_its_lease_stops_computing_in_its_process(
    harness: WorkerHarness, tmp_path: Path
) -> None:
    registry = TaskRegistry()
    registry.task("spin", cpu=True, retries=1)(spin_until_killed)
    flaky = FailingHeartbeats(await harness.new())
    pid_file = tmp_path / "pid"
    await Jobs(flaky, registry).enqueue("spin", {"pid_file": str(pid_file), "spin_s": 60})
    a = Worker(flaky, registry, lease_s=1.0, heartbeat_s=0.1, clock=harness.clock)  # type: ignore[arg-type]
    stop_a = asyncio.Event()
    run_a = asyncio.create_task(a.run(stop_a))
    try:
        await eventually(pid_file.exists, "the job computing in the pool", timeout_s=60)
        pid = int(pid_file.read_text())
        flaky.failing = True
        await eventually(lambda: a.stats()["default"]["lease_lost"] == 1, "the lease lost")
        await eventually(lambda: not _alive(pid), "the computing process gone")
    finally:
        stop_a.set()
        await run_a


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until its parent reaps it: not computing any more.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
