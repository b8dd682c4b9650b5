"""What the job system shows to Prometheus and to ``GET /metrics/queues``.

Depths come from ``backend.counts()``, which on PostgreSQL or SQLite is a grouped count over
the jobs table: ``CountsCache`` keeps the last answer and refreshes it in the background at
most every ``COUNTS_TTL_S``, so a scrape never waits on the backend (it serves the previous
figures while a refresh runs, and none at all before the first one ends). Counters and the
duration histogram are this process's worker's, since it started (``Worker.task_stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from syncworker.jobs.service import JobsService
from syncworker.observe.logging import redact_url
from syncworker.queue.base import JobState

log = structlog.get_logger("syncworker.jobs")

COUNTS_TTL_S = 2.0
"""Counts older than this are refreshed (in the background for a scrape)."""
COUNTS_TIMEOUT_S = 10.0
"""A refresh that takes longer is given up (the previous figures stay), so a hung backend
cannot hold the refresh slot for ever."""

COUNTERS = {
    "completed": "Jobs this process's worker completed",
    "retried": "Failed attempts this process's worker scheduled for a retry",
    "dead": "Jobs this process's worker moved to the dead jobs (attempts exhausted, permanent)",
    "failed_attempts": "Attempts that failed (raised or timed out), retried or not",
    "lease_lost": "Jobs this worker stopped because another worker took them after their lease",
}


def find_jobs_service(services: Iterable[Any]) -> JobsService | None:
    """The engine's ``jobs`` service (None: the config has no ``jobs:`` section)."""
    found = next((s for s in services if getattr(s, "name", None) == "jobs"), None)
    return found if isinstance(found, JobsService) else None


class CountsCache:
    """``service.counts()`` at most ``ttl_s`` old, one refresh at a time."""

    def __init__(
        self,
        service: JobsService,
        *,
        ttl_s: float = COUNTS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.ttl_s = ttl_s
        self._clock = clock
        self._value: dict[str, dict[str, int]] | None = None
        self._at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None  # the last refresh's failure, None once one succeeds

    def stale(self) -> bool:
        return self._value is None or self._clock() - self._at >= self.ttl_s

    def cached(self) -> dict[str, dict[str, int]] | None:
        """The last counts at once (None before the first refresh ended); starts a
        background refresh when they are stale. Must run on the event loop's thread to
        refresh; from elsewhere it only reads."""
        if self.stale():
            with contextlib.suppress(RuntimeError):  # no running loop: read only
                self._start_refresh()
        return self._value

    async def latest(self) -> dict[str, dict[str, int]]:
        """The last counts, waiting only when there are none yet (a refresh starts when
        they are stale, as for ``cached``); raises what the backend raised when there are
        no counts at all to give."""
        value = self.cached()
        if value is not None:
            return value
        return await self.fresh()

    async def fresh(self) -> dict[str, dict[str, int]]:
        """Counts at most ``ttl_s`` old, waiting for a refresh when they are older;
        raises what the backend raised when there are no counts at all to give."""
        if self.stale():
            task = self._start_refresh()
            await asyncio.shield(task)
        if self._value is None:
            raise RuntimeError(self.error or "no job counts yet")
        return self._value

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._refresh(), name="jobs-counts")
        return self._task

    async def _refresh(self) -> None:
        try:
            value = await asyncio.wait_for(self.service.counts(), COUNTS_TIMEOUT_S)
        except Exception as exc:
            error = redact_url(f"{type(exc).__name__}: {exc}")
            if error != self.error:  # once per distinct reason, not once per scrape
                log.warning("jobs_counts_failed", error=error)
            self.error = error
            return
        self._value, self._at, self.error = value, self._clock(), None


def queue_figures(
    counts: dict[str, dict[str, int]], worker_stats: dict[str, dict[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """Seed 003's ``/metrics/queues`` per queue: waiting (queued), active, delayed,
    completed and dead from the backend (every worker's jobs); failed (failed attempts),
    running and concurrency from this process's worker (None where it runs no worker for
    the queue), with its counters since start."""
    stats = worker_stats or {}
    figures = {}
    for queue in sorted(set(counts) | set(stats)):
        by_state = counts.get(queue, {})
        own = stats.get(queue)
        figures[queue] = {
            "waiting": by_state.get(JobState.QUEUED.value, 0),
            "active": by_state.get(JobState.ACTIVE.value, 0),
            "delayed": by_state.get(JobState.DELAYED.value, 0),
            "completed": by_state.get(JobState.COMPLETED.value, 0),
            "failed": own["failed_attempts"] if own else 0,
            "dead": by_state.get(JobState.DEAD.value, 0),
            "running": own["running"] if own else None,
            "concurrency": own["concurrency"] if own else None,
            "completed_since_start": own["completed"] if own else 0,
            "retried_since_start": own["retried"] if own else 0,
            "dead_since_start": own["dead"] if own else 0,
        }
    return figures


class JobsCollector(Collector):
    """The ``syncworker_jobs_*`` series of the engine's jobs service (none without one)."""

    def __init__(self, services: Callable[[], Iterable[Any]]) -> None:
        self._services = services
        self._cache: CountsCache | None = None

    def counts_cache(self) -> CountsCache | None:
        """The cache of the engine's jobs service (None without one), shared with the API."""
        service = find_jobs_service(self._services())
        if service is None:
            return None
        if self._cache is None or self._cache.service is not service:
            self._cache = CountsCache(service)
        return self._cache

    def describe(self) -> Iterator[Metric]:
        # Names only: describing must not read the backend (nor need an event loop).
        return iter(_Families().all())

    def collect(self) -> Iterator[Metric]:
        cache = self.counts_cache()
        if cache is None:
            return iter(())
        f = _Families()
        for queue, by_state in sorted((cache.cached() or {}).items()):
            for state in JobState:
                f.depth.add_metric([queue, state.value], by_state.get(state.value, 0))
        f.backend_open.add_metric([], 1 if cache.service.opened.is_set() else 0)
        worker = cache.service.worker
        if worker is not None:
            for queue, stats in sorted(worker.stats().items()):
                f.running.add_metric([queue], stats["running"])
                f.concurrency.add_metric([queue], stats["concurrency"])
            for (queue, task), stats in sorted(worker.task_stats().items()):
                for name, family in f.counters.items():
                    family.add_metric([queue, task], stats[name])
                spread = stats["duration"]
                buckets = [(_le(bound), float(n)) for bound, n in spread["buckets_s"].items()]
                buckets.append(("+Inf", float(spread["count"])))
                f.duration.add_metric([queue, task], buckets, spread["sum_s"])
        return iter(f.all())


class _Families:
    """The job series of one scrape, empty."""

    def __init__(self) -> None:
        self.depth = GaugeMetricFamily(
            "syncworker_jobs_queue_depth",
            "Jobs per queue and state in the backend (every worker's), read at most every "
            f"{COUNTS_TTL_S:g} s",
            labels=["queue", "state"],
        )
        self.running = GaugeMetricFamily(
            "syncworker_jobs_running", "Jobs this process runs now", labels=["queue"]
        )
        self.concurrency = GaugeMetricFamily(
            "syncworker_jobs_concurrency",
            "Jobs of the queue this process runs at once at most",
            labels=["queue"],
        )
        self.backend_open = GaugeMetricFamily(
            "syncworker_jobs_backend_open", "1 once the job queue backend is open", labels=[]
        )
        self.counters = {
            name: CounterMetricFamily(f"syncworker_jobs_{name}", text, labels=["queue", "task"])
            for name, text in COUNTERS.items()
        }
        self.duration = HistogramMetricFamily(
            "syncworker_jobs_duration_seconds",
            "Run time of the jobs that reached an outcome (completed, retried or dead)",
            labels=["queue", "task"],
        )

    def all(self) -> list[Metric]:
        return [
            self.depth,
            self.running,
            self.concurrency,
            self.backend_open,
            *self.counters.values(),
            self.duration,
        ]


def _le(bound: float) -> str:
    return repr(float(bound))
