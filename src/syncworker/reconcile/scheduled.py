"""Scheduled verify inside a running engine: every pipeline with a ``verify:`` section is
compared with its target every ``verify.every`` (never two runs of one pipeline at once), and
its last result is kept for /status, /metrics and the dashboard.

``VerifyService`` is an engine ``Service`` (started after the pipelines, stopped before them):

    engine.services.extend(verify_services(config, only))

A failing run (a database down, a mapping verify cannot follow) is logged with its reason
every time (``verify_failed``) and kept as ``last_error``; the next run is still scheduled.
With ``repair: true`` the keys found are re-synced through the source's change log and the
running pipeline applies them (the service never runs the pipeline itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from syncworker.errors import SyncWorkerError
from syncworker.reconcile.config import VerifyConfig
from syncworker.reconcile.report import VerifyReport

if TYPE_CHECKING:
    from syncworker.reconcile.verify import VerifyOptions

log = structlog.get_logger(__name__)

FIRST_RUN_DELAY_S = 5.0  # run_at_start: let the pipeline open first


@dataclass(slots=True)
class VerifyJob:
    """One pipeline's scheduled verify and what it last found."""

    pipeline: str
    settings: VerifyConfig
    last: VerifyReport | None = None
    last_error: str | None = None
    last_run_at: float | None = None
    next_run_at: float | None = None
    running: bool = False
    runs: int = 0

    def options(self) -> VerifyOptions:
        from syncworker.reconcile.verify import VerifyOptions

        return VerifyOptions(
            segments=self.settings.segments,
            ignore_recent_s=self.settings.ignore_recent,
            repair=self.settings.repair,
            engine_running=True,
        )

    def status(self) -> dict[str, Any]:
        """The ``verify`` part of a pipeline's /status."""
        return {
            "every_s": self.settings.every,
            "ignore_recent_s": self.settings.ignore_recent,
            "repair": self.settings.repair,
            "running": self.running,
            "runs": self.runs,
            "last_run_at": self.last_run_at,
            "next_run_at": self.next_run_at,
            "last_error": self.last_error,
            "last": None if self.last is None else self.last.summary(),
        }


class VerifyService:
    """Runs the verify jobs of an engine's pipelines on their schedules."""

    name = "verify"

    def __init__(self, config: Any, jobs: list[VerifyJob]) -> None:
        self.config = config
        self.jobs = {job.pipeline: job for job in jobs}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def verify_status(self, pipeline: str) -> dict[str, Any] | None:
        """The pipeline's scheduled verify status, or None when it has none."""
        job = self.jobs.get(pipeline)
        return None if job is None else job.status()

    async def start(self) -> None:
        self._stop.clear()
        for job in self.jobs.values():
            task = asyncio.create_task(self._loop(job), name=f"verify:{job.pipeline}")
            self._tasks.append(task)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def run_now(self, pipeline: str) -> VerifyReport | None:
        """One run of ``pipeline``'s verify now (tests, an operator); None if it failed."""
        return await self._run(self.jobs[pipeline])

    async def _loop(self, job: VerifyJob) -> None:
        delay = FIRST_RUN_DELAY_S if job.settings.run_at_start else job.settings.every
        while not self._stop.is_set():
            job.next_run_at = time.time() + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
                return
            await self._run(job)
            delay = job.settings.every

    async def _run(self, job: VerifyJob) -> VerifyReport | None:
        # Imported here: /status and /metrics read this module without psycopg installed.
        from syncworker.reconcile.verify import verify_pipeline

        job.running = True
        job.last_run_at = time.time()
        try:
            report = await verify_pipeline(self.config, job.pipeline, job.options())
        except SyncWorkerError as exc:
            job.last_error = str(exc)
            log.warning("verify_failed", pipeline=job.pipeline, error=str(exc))
            return None
        finally:
            job.running = False
            job.runs += 1
        job.last, job.last_error = report, None
        return report


def verify_services(config: Any, only: list[str] | None = None) -> list[VerifyService]:
    """A ``VerifyService`` for the pipelines of ``config`` (those in ``only``, when given)
    that have a ``verify:`` section; none when no pipeline has one."""
    jobs = [
        VerifyJob(name, spec.config.verify)
        for name, spec in config.pipelines.items()
        if (only is None or name in only)
        and spec.config.enabled
        and getattr(spec.config, "verify", None) is not None
    ]
    return [VerifyService(config, jobs)] if jobs else []


def verify_status(engine: Any, pipeline: str) -> dict[str, Any] | None:
    """The scheduled verify status of ``pipeline`` in ``engine``, from its services."""
    for service in getattr(engine, "services", []):
        finder = getattr(service, "verify_status", None)
        if finder is not None and (found := finder(pipeline)) is not None:
            return found  # type: ignore[no-any-return]
    return None
