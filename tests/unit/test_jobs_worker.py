"""The jobs layer on the in-process backend: tasks, enqueue, worker outcomes, cron."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
from tests.waiting import eventually

from syncworker.errors import ConfigError, PermanentError
from syncworker.jobs import (
    Backoff,
    CronEntry,
    CronScheduler,
    JobContext,
    Jobs,
    QueueSettings,
    Task,
    TaskRegistry,
    Worker,
)
from syncworker.queue.base import JobState, NewJob
from syncworker.queue.memory import MemoryQueueBackend


class Image(pydantic.BaseModel):
    url: str
    width: int = 100


def test_backoff_is_the_seeds_5_10_20_seconds_within_the_jitter() -> None:
    backoff = Backoff(base_s=5, factor=2, max_s=3600, jitter=0.1)
    assert [backoff.nominal_s(n) for n in (1, 2, 3)] == [5, 10, 20]
    for n, nominal in ((1, 5), (2, 10), (3, 20)):
        assert nominal * 0.9 <= backoff.delay_s(n) <= nominal * 1.1
    assert Backoff(base_s=5, max_s=30).nominal_s(50) == 30


def test_task_defaults_and_from_path() -> None:
    registry = TaskRegistry()

    @registry.task("resize", queue="media", priority=2, retries=3)
    async def resize(payload: Any, ctx: JobContext) -> None: ...

    task = registry.get("resize")
    assert task is not None and task.max_attempts == 4 and task.queue == "media"
    assert task.takes_ctx and task.is_async
    assert registry.names() == ["resize"]
    loaded = Task.from_path("json:dumps", name="dump")
    assert loaded.name == "dump" and not loaded.is_async
    with pytest.raises(ConfigError, match="no 'nope'"):
        Task.from_path("json:nope")
    with pytest.raises(ConfigError, match="cpu=True"):
        Task(name="x", fn=resize, cpu=True)


@pytest.fixture
def backend() -> MemoryQueueBackend:
    return MemoryQueueBackend()


async def test_enqueue_applies_defaults_and_validates_the_model(
    backend: MemoryQueueBackend,
) -> None:
    registry = TaskRegistry()
    registry.add(Task("img", fn=lambda p: None, queue="media", priority=2, retries=3, model=Image))
    jobs = Jobs(backend, registry)
    job_id = await jobs.enqueue("img", {"url": "a"}, delay_s=60)
    job = await backend.get(job_id)
    assert job is not None
    assert (job.queue, job.priority, job.max_attempts, job.state) == (
        "media",
        2,
        4,
        JobState.DELAYED,
    )
    with pytest.raises(ValueError, match="url"):
        await jobs.enqueue("img", {"width": 3})
    with pytest.raises(ConfigError, match="unknown task"):
        await jobs.enqueue("nope", {})
    with pytest.raises(ConfigError, match="memory"):
        await jobs.enqueue("img", {"url": "a"}, conn=object())
    ids = await jobs.enqueue_many([("img", {"url": "b"}), NewJob("img", {"url": "c"})])
    assert len(ids) == 2


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Any]]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(worker: Worker) -> Worker:
        stop = asyncio.Event()
        stops.append((stop, asyncio.create_task(worker.run(stop))))
        await eventually(worker.started.is_set, "the worker to start")
        return worker

    yield start
    for stop, task in stops:
        stop.set()
        await task


async def _state(backend: MemoryQueueBackend, job_id: str) -> JobState | None:
    job = await backend.get(job_id)
    return None if job is None else job.state


async def test_outcomes_completed_retry_dead_permanent_unknown_and_bad_payload(
    backend: MemoryQueueBackend, running: Callable[..., Any]
) -> None:
    registry = TaskRegistry()
    calls: dict[str, int] = {}

    @registry.task("ok")
    async def ok(payload: Any, ctx: JobContext) -> Any:
        assert await ctx.progress({"step": 1})
        return {"n": payload["n"] * 2}

    @registry.task("flaky", retries=2, backoff=Backoff(base_s=0.01, jitter=0))
    def flaky(payload: Any) -> None:
        calls["flaky"] = calls.get("flaky", 0) + 1
        raise RuntimeError("boom")

    @registry.task("perm", retries=5)
    async def perm(payload: Any) -> None:
        raise PermanentError("never")

    registry.add(Task("typed", fn=ok, model=Image))
    jobs = Jobs(backend, registry)
    ok_id = await jobs.enqueue("ok", {"n": 21})
    flaky_id = await jobs.enqueue("flaky", {})
    perm_id = await jobs.enqueue("perm", {})
    [unknown_id, bad_id] = await backend.enqueue_many(
        [NewJob("ghost", {}), NewJob("typed", {"width": "x"})]
    )
    worker = await running(Worker(backend, registry, {"default": QueueSettings(concurrency=4)}))
    for job_id, state in (
        (ok_id, JobState.COMPLETED),
        (flaky_id, JobState.DEAD),
        (perm_id, JobState.DEAD),
        (unknown_id, JobState.DEAD),
        (bad_id, JobState.DEAD),
    ):
        await eventually(lambda j=job_id, s=state: _is(backend, j, s), f"{job_id} {state}")
    done = await backend.get(ok_id)
    assert done is not None and done.result == {"n": 42} and done.progress == {"step": 1}
    dead = await backend.get(flaky_id)
    assert dead is not None and dead.attempts == 3 and calls["flaky"] == 3
    assert dead.error == "RuntimeError: boom" and "Traceback" in (dead.stack or "")
    perm_job = await backend.get(perm_id)
    assert perm_job is not None and perm_job.attempts == 1
    unknown = await backend.get(unknown_id)
    assert unknown is not None and "unknown task" in (unknown.error or "")
    bad = await backend.get(bad_id)
    assert bad is not None and "invalid payload" in (bad.error or "")
    stats = worker.stats()["default"]
    assert stats["completed"] == 1 and stats["retried"] == 2 and stats["dead"] == 4


async def _is(backend: MemoryQueueBackend, job_id: str, state: JobState) -> bool:
    return await _state(backend, job_id) is state


async def test_a_timeout_cancels_the_handler_and_counts_as_a_failed_attempt(
    backend: MemoryQueueBackend, running: Callable[..., Any]
) -> None:
    registry = TaskRegistry()
    cancelled = asyncio.Event()

    @registry.task("slow", timeout_s=0.05, retries=1, backoff=Backoff(base_s=0, jitter=0))
    async def slow(payload: Any) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    job_id = await Jobs(backend, registry).enqueue("slow", {})
    await running(Worker(backend, registry))
    await eventually(lambda: _is(backend, job_id, JobState.DEAD), "the job dead")
    job = await backend.get(job_id)
    assert job is not None and job.attempts == 2 and "timed out" in (job.error or "")
    assert cancelled.is_set()


async def test_a_lost_lease_cancels_the_local_handler(
    backend: MemoryQueueBackend, running: Callable[..., Any]
) -> None:
    registry = TaskRegistry()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @registry.task("hang")
    async def hang(payload: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    job_id = await Jobs(backend, registry).enqueue("hang", {})
    worker = await running(
        Worker(backend, registry, lease_s=30, heartbeat_s=0.02, shutdown_grace_s=0.01)
    )
    await eventually(started.is_set, "the handler to start")
    await backend.release([(job_id, 1)], worker.worker_id)  # as if another worker took it
    await eventually(cancelled.is_set, "the handler cancelled")
    assert worker.stats()["default"]["lease_lost"] == 1


async def test_shutdown_releases_running_jobs_at_once(backend: MemoryQueueBackend) -> None:
    registry = TaskRegistry()
    started = asyncio.Event()

    @registry.task("hang")
    async def hang(payload: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    job_id = await Jobs(backend, registry).enqueue("hang", {})
    worker = Worker(backend, registry, lease_s=300, shutdown_grace_s=0.01)
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await eventually(started.is_set, "the handler to start")
    stop.set()
    await run
    job = await backend.get(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0


async def test_cron_fires_each_slot_once_skips_the_past_and_catches_up_once() -> None:
    now = [datetime(2026, 1, 4, 0, 0, 30, tzinfo=UTC).timestamp()]  # a Sunday
    backend = MemoryQueueBackend(clock=lambda: now[0])
    registry = TaskRegistry()
    registry.add(Task("tick", fn=lambda p: None))
    jobs = Jobs(backend, registry, clock=lambda: now[0])
    entries = [CronEntry("five", "*/5 * * * *", "tick"), CronEntry("sun", "0 3 * * 0", "tick")]
    first = CronScheduler(jobs, entries, clock=lambda: now[0])
    assert await first.tick() == []  # 00:00 is before the start: not fired
    now[0] += 5 * 60
    assert len(await first.tick()) == 1 and await first.tick() == []
    runs = dict((e.name, slot) for e, slot in first.next_runs(now[0]))
    assert runs["sun"] == datetime(2026, 1, 4, 3, 0, tzinfo=UTC)
    now[0] += 60 * 60  # everyone down for an hour: one catch-up run, not twelve
    again = CronScheduler(jobs, entries, clock=lambda: now[0])
    assert len(await again.tick()) == 1
    with pytest.raises(ConfigError, match="schedule"):
        CronEntry("bad", "61 * * * *", "tick")
    with pytest.raises(ConfigError, match="time zone"):
        CronEntry("bad", "@hourly", "tick", timezone="Mars/Base")
