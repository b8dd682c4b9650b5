"""jobs/metrics.py without services: a scrape never waits for the backend's counts (it serves
the last ones and refreshes them in the background at most every TTL), a failed count keeps
the previous figures, and the series carry the worker's own counters."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.waiting import eventually

from syncworker.jobs.config import BuiltJobs
from syncworker.jobs.enqueue import Jobs
from syncworker.jobs.metrics import CountsCache, JobsCollector, queue_figures
from syncworker.jobs.service import JobsService
from syncworker.jobs.tasks import TaskRegistry
from syncworker.jobs.worker import QueueSettings, Worker
from syncworker.queue.base import JobState, NewJob
from syncworker.queue.memory import MemoryQueueBackend


class GatedCounts(MemoryQueueBackend):
    """The memory backend whose ``counts`` waits for ``gate`` (a slow grouped count)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls = 0
        self.fail: Exception | None = None

    async def counts(self) -> dict[str, dict[JobState, int]]:
        self.calls += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return await super().counts()


def service_on(backend: MemoryQueueBackend, worker: Worker | None = None) -> JobsService:
    registry = TaskRegistry()
    return JobsService(BuiltJobs(backend, registry, Jobs(backend, registry), worker, None))


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_cached_counts_never_wait_and_refresh_at_most_every_ttl() -> None:
    backend = GatedCounts()
    await backend.enqueue_many([NewJob("t", queue="q") for _ in range(3)])
    clock = Clock()
    cache = CountsCache(service_on(backend), ttl_s=2.0, clock=clock)

    assert cache.cached() is None  # nothing yet, and the call did not wait
    await eventually(lambda: backend.calls == 1, "the refresh to start")
    assert cache.cached() is None and backend.calls == 1  # one refresh at a time
    backend.gate.set()
    first = await eventually(cache.cached, "the first counts")
    assert first["q"]["queued"] == 3

    await backend.enqueue_many([NewJob("t", queue="q")])
    clock.now += 1.9
    assert cache.cached() == first  # fresh enough: no new count
    await asyncio.sleep(0)
    assert backend.calls == 1
    backend.gate.clear()
    clock.now += 0.2
    assert cache.cached() == first  # stale: served as is while the count runs
    await eventually(lambda: backend.calls == 2)
    assert cache.cached() == first
    backend.gate.set()
    await eventually(lambda: (cache.cached() or {}).get("q", {}).get("queued") == 4)


async def test_a_failed_count_keeps_the_last_figures() -> None:
    backend = GatedCounts()
    backend.gate.set()
    await backend.enqueue_many([NewJob("t", queue="q")])
    clock = Clock()
    cache = CountsCache(service_on(backend), ttl_s=2.0, clock=clock)
    assert (await cache.fresh())["q"]["queued"] == 1
    backend.fail = ConnectionError("postgresql://app:s3cret@db/jobs is down")
    clock.now += 5
    assert (await cache.fresh())["q"]["queued"] == 1  # the previous figures
    assert cache.error == "ConnectionError: postgresql://app:***@db/jobs is down"
    backend.fail = None
    clock.now += 5
    await cache.fresh()
    assert cache.error is None


async def test_the_collector_serves_depth_and_worker_series() -> None:
    backend = GatedCounts()
    backend.gate.set()
    registry_tasks = TaskRegistry()

    @registry_tasks.task("ok", queue="q")
    async def ok(payload: Any) -> None:
        return None

    worker = Worker(backend, registry_tasks, {"q": QueueSettings(concurrency=4)}, lease_s=5)
    service = service_on(backend, worker)
    service.opened.set()
    collector = JobsCollector(lambda: [object(), service])
    registry = CollectorRegistry()
    registry.register(collector)
    assert "syncworker_jobs_queue_depth" not in {name for name, _ in scrape(registry)}

    await backend.enqueue_many([NewJob("ok", queue="q") for _ in range(2)])
    await eventually(lambda: collector.counts_cache().cached(), "the first count")  # type: ignore[union-attr]
    samples = scrape(registry)
    assert samples[("syncworker_jobs_queue_depth", (("queue", "q"), ("state", "queued")))] == 2
    assert samples[("syncworker_jobs_concurrency", (("queue", "q"),))] == 4
    assert samples[("syncworker_jobs_running", (("queue", "q"),))] == 0
    assert samples[("syncworker_jobs_backend_open", ())] == 1
    assert queue_figures({"q": {"queued": 2}}, worker.stats())["q"]["concurrency"] == 4


async def test_no_series_without_a_jobs_service() -> None:
    registry = CollectorRegistry()
    registry.register(JobsCollector(lambda: [object()]))
    assert not [k for k in scrape(registry) if k[0].startswith("syncworker_jobs_")]
