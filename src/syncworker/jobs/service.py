"""The ``jobs:`` section at work inside the engine: the worker and the cron scheduler.

An engine ``Service``: started after the pipelines, stopped before them. ``start`` returns at
once; the backend is opened in the background, retried with backoff while it is down (each
failure logged with its reason), so a queue that is not up yet delays the jobs, not the
pipelines or the API. ``stop`` runs the worker's phased shutdown (stop claiming, grace,
cancel and hand back, flush) and closes the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from syncworker.jobs.backoff import Backoff
from syncworker.jobs.config import BuiltJobs, JobsConfig, build_jobs
from syncworker.observe.logging import redact_url
from syncworker.queue.base import JobState

log = structlog.get_logger("syncworker.jobs")

_OPEN_BACKOFF = Backoff(base_s=0.5, factor=2, max_s=30.0, jitter=0.2)
STOP_MARGIN_S = 5.0
"""Beyond the shutdown grace, how long the worker gets to cancel, hand back and flush."""


class JobsService:
    """Runs ``built``'s worker and scheduler until ``stop``; the API reads it by name."""

    name = "jobs"

    def __init__(self, built: BuiltJobs, config: JobsConfig | None = None) -> None:
        self.built = built
        self.config = config
        self.backend = built.backend
        self.jobs = built.jobs
        self.worker = built.worker
        self.scheduler = built.scheduler
        self.kits = built.kits
        self.opened = asyncio.Event()
        self.started_at: float | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    @classmethod
    def from_config(cls, config: JobsConfig) -> JobsService:
        return cls(build_jobs(config), config)

    async def start(self) -> None:
        if self._task is None:
            self.started_at = time.time()
            self._task = asyncio.create_task(self._run(), name="jobs")

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            grace_s = self.worker.shutdown_grace_s if self.worker else 0.0
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_s + STOP_MARGIN_S)
            except TimeoutError:
                log.warning("jobs_stop_timeout", timeout_s=grace_s + STOP_MARGIN_S)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                log.exception("jobs_failed")
        for kit in self.kits.values():
            try:
                await kit.close()
            except Exception:
                log.exception("jobs_kit_close_failed", kit=kit.name)
        await self.backend.close()

    async def _run(self) -> None:
        if not await self._open("backend", self.backend.open):
            return
        runs = []
        if self.scheduler is not None:
            runs.append(asyncio.create_task(self.scheduler.run(self._stop), name="jobs-cron"))
        if self.worker is not None and await self._open_kits():
            runs.append(asyncio.create_task(self.worker.run(self._stop), name="jobs-worker"))
        await asyncio.gather(*runs)

    async def _open_kits(self) -> bool:
        """Each kit opened, retried while its database or storage is down: that delays the
        jobs (each failure logged), never the cron schedule, which needs only the backend."""
        for kit in self.kits.values():
            if not await self._open(f"kit {kit.name}", kit.open):
                return False
        return True

    async def _open(self, what: str, open_: Callable[[], Awaitable[None]]) -> bool:
        """``open_()`` retried with backoff until it succeeds (True) or the service stops."""
        failures = 0
        while not self._stop.is_set():
            try:
                await open_()
            except Exception as exc:
                failures += 1
                self._last_error = redact_url(f"{what}: {type(exc).__name__}: {exc}")
                delay_s = _OPEN_BACKOFF.delay_s(failures)
                log.warning(
                    "jobs_backend_unavailable" if what == "backend" else "jobs_kit_unavailable",
                    error=self._last_error,
                    failures=failures,
                    retry_in_s=round(delay_s, 2),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay_s)
                continue
            self._last_error = None
            if what == "backend":
                self.opened.set()
            return True
        return False

    # -- what the API, the CLI and /metrics read ---------------------------------------------

    async def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per queue and state, every state present (0 when none)."""
        counts = await self.backend.counts()
        queues = set(counts) | set(self.worker.stats() if self.worker else {})
        return {
            queue: {state.value: int(counts.get(queue, {}).get(state, 0)) for state in JobState}
            for queue in sorted(queues)
        }

    def status(self) -> dict[str, Any]:
        return {
            "backend_open": self.opened.is_set(),
            "backend_error": self._last_error,
            "worker": self.worker.worker_id if self.worker else None,
            "queues": self.worker.stats() if self.worker else {},
            "cron": [
                {"name": entry.name, "schedule": entry.schedule, "next_run": slot.isoformat()}
                for entry, slot in self.scheduler.next_runs()
            ]
            if self.scheduler
            else [],
        }
