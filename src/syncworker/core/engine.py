"""The engine: runs several pipelines in one asyncio process and stops them cleanly.

Signal handlers are optional so the engine embeds in tests and other programs; ``syncworker
run`` installs them. The first SIGTERM/SIGINT stops claiming and gives in-flight batches the
shutdown timeout to finish (the rest go back to their source); a second one cuts that short.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from syncworker.core.pipeline import Pipeline, SyncMode
from syncworker.errors import UnsupportedOperation
from syncworker.observe.logging import redact_url
from syncworker.state.base import RunRecord, StateStore

log = structlog.get_logger(__name__)


class Service(Protocol):
    """Something that runs beside the pipelines (the control API, a metrics refresher):
    started after them, stopped before them."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Engine:
    """Owns the state store, the pipelines' lifetimes and the services beside them."""

    def __init__(
        self, pipelines: Sequence[Pipeline], state: StateStore, *, shutdown_timeout_s: float = 30.0
    ) -> None:
        names = [p.name for p in pipelines]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline names must be unique: {names}")
        self.pipelines = {p.name: p for p in pipelines}
        self.state = state
        self.shutdown_timeout_s = shutdown_timeout_s
        self.started_at: float | None = None
        self.services: list[Service] = []
        # Set when the engine stops: ``final_statistics()`` at that moment.
        self.final_stats: dict[str, dict[str, Any]] = {}
        self._stop_requested = asyncio.Event()
        self._abort = asyncio.Event()  # a second signal: return in-flight batches now
        self._fatal: BaseException | None = None
        self._signals = 0

    def pipeline(self, name: str) -> Pipeline:
        """The pipeline called ``name``; KeyError if there is none."""
        return self.pipelines[name]

    def own_stores(self) -> list[StateStore]:
        """The pipelines' state stores other than the engine's, once each: a wrapper around
        it (``sync_errors`` writes a pipeline's errors to a table too). Opened after the
        engine's store and closed before it, so errors recorded while a pipeline stops (or
        after it stopped: a refused start) still reach them."""
        stores: dict[int, StateStore] = {}
        for pipeline in self.pipelines.values():
            if pipeline.state is not None and pipeline.state is not self.state:
                stores.setdefault(id(pipeline.state), pipeline.state)
        return list(stores.values())

    async def _open_stores(self) -> None:
        await self.state.open()
        for store in self.own_stores():
            await store.open()

    async def _close_stores(self) -> None:
        for store in self.own_stores():
            try:
                await store.close()
            except Exception:
                log.exception("state_store_close_failed")
        await self.state.close()

    async def start(self) -> None:
        await self._open_stores()
        self.started_at = time.time()
        log.info("engine_started", pid=os.getpid(), pipelines=list(self.pipelines))
        for name in self.pipelines:
            await self.start_pipeline(name)
        for service in self.services:
            await service.start()

    async def start_pipeline(self, name: str) -> None:
        """Start one pipeline (again); a running one is left as it is. Refused
        (``UnsupportedOperation``) once the engine is stopping."""
        pipeline = self.pipelines[name]
        if self.stopping:
            raise UnsupportedOperation(f"pipeline {name!r}: the engine is stopping")
        if pipeline.task is not None:
            return
        await pipeline.start()
        assert pipeline.task is not None
        pipeline.task.add_done_callback(self._pipeline_ended)

    async def stop_pipeline(self, name: str) -> None:
        """Stop one pipeline; the engine and the others go on."""
        await self.pipelines[name].stop(self._timeout_now())

    def _pipeline_ended(self, task: asyncio.Task[None]) -> None:
        # A pipeline whose task failed met a refusal retrying will not fix (wrong password,
        # missing database or table): it stopped and said why; the others go on. When none
        # is left running, stop the engine and let run() raise the error.
        if task.cancelled() or task.exception() is None or self._stop_requested.is_set():
            return
        if self._fatal is None:
            self._fatal = task.exception()
        if not any(p.task is not None and not p.task.done() for p in self.pipelines.values()):
            log.error(
                "engine_has_no_pipeline_left",
                pipelines=list(self.pipelines),
                error=redact_url(f"{type(self._fatal).__name__}: {self._fatal}"),
            )
            self.request_stop()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def run(self, *, install_signal_handlers: bool = True) -> int:
        """Start, run until ``request_stop()`` or a signal, stop. Returns the exit code (0).

        A pipeline that cannot start for a reason retrying will not fix (its error is not
        transient) stops the engine, and its error is raised after everything is closed.
        """
        if install_signal_handlers:
            self._install_signal_handlers()
        await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()
            if install_signal_handlers:
                self._remove_signal_handlers()
        if self._fatal is not None:
            raise self._fatal
        return 0

    async def run_once(
        self, mode: SyncMode = "incremental", *, install_signal_handlers: bool = False
    ) -> list[RunRecord]:
        """One sync run of every pipeline (concurrently), then close everything.

        A pipeline that cannot connect within its retry policy, or whose dependency refuses
        its configuration, raises its error once every pipeline finished its run (the others'
        runs are recorded first). ``request_stop()`` (or, with ``install_signal_handlers``,
        SIGTERM/SIGINT) stops claiming: in-flight batches get the shutdown timeout to finish,
        the rest go back to their source (at once on a second signal), and the runs end.
        """
        await self._open_stores()
        self.started_at = time.time()
        if install_signal_handlers:
            self._install_signal_handlers()
        runs = asyncio.gather(
            *(p.run_once(mode) for p in self.pipelines.values()), return_exceptions=True
        )
        watcher = asyncio.create_task(self._interrupt_once(runs), name="engine:once-stop")
        try:
            results = await runs
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return [r for r in results if not isinstance(r, BaseException)]
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if install_signal_handlers:
                self._remove_signal_handlers()
            for pipeline in self.pipelines.values():
                await pipeline.close()
            self._log_final_stats()
            await self._close_stores()

    async def _interrupt_once(self, runs: asyncio.Future[Any]) -> None:
        """run_once's shutdown: on request, stop claiming; past the shutdown timeout (or on
        a second signal) hand the in-flight batches back so the runs end."""
        await self._stop_requested.wait()
        log.info("engine_stopping", timeout_s=self.shutdown_timeout_s, once=True)
        for pipeline in self.pipelines.values():
            pipeline.close_for_runs("the engine is stopping: no new sync starts")
            pipeline.interrupt()
        abort = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait(
                {runs, abort}, timeout=self._timeout_now(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            abort.cancel()
        if not runs.done():
            log.warning("shutdown_timeout", timeout_s=self._timeout_now(), once=True)
            for pipeline in self.pipelines.values():
                await pipeline.return_in_flight()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def stop(self) -> None:
        """Stop every pipeline within the shutdown timeout, log the final figures, close."""
        started = time.monotonic()
        self._stop_requested.set()
        for pipeline in self.pipelines.values():
            pipeline.close_for_runs("the engine is stopping: no new sync starts")
        log.info("engine_stopping", timeout_s=self.shutdown_timeout_s)
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("service_stop_failed", service=service.name)
        await asyncio.gather(*(self._stop_one(p) for p in self.pipelines.values()))
        self._log_final_stats(time.monotonic() - started)
        await self._close_stores()

    async def _stop_one(self, pipeline: Pipeline) -> None:
        try:
            await pipeline.stop(self._timeout_now())
        except Exception:
            log.exception("pipeline_stop_failed", pipeline=pipeline.name)

    def _timeout_now(self) -> float:
        # A second signal while stopping means "now": batches still out go back at once.
        return 0.0 if self._signals > 1 else self.shutdown_timeout_s

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self) -> None:
        # An embedding program gets its loop back as it was, with no handler of ours left.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        log.info("signal_received", signal=signal.Signals(signum).name, count=self._signals)
        if self._signals > 1:
            self._abort.set()
            for pipeline in self.pipelines.values():
                pipeline.abort()
        self.request_stop()

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at else None,
            "pipelines": {name: p.status() for name, p in self.pipelines.items()},
        }

    def final_statistics(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Each pipeline's figures since the engine started (seed 004's final statistics):
        records processed, synced (written by every sink), filtered, dead-lettered and kept
        by the source, failed batches and runs, ``errors`` (failed batches plus refused
        records), the last run's end, duration and result, and the uptime."""
        now = time.time() if now is None else now
        return {
            name: _final_statistics(p.status(), self.started_at, now)
            for name, p in self.pipelines.items()
        }

    def _log_final_stats(self, stop_duration_s: float | None = None) -> None:
        self.final_stats = self.final_statistics()
        for name, figures in self.final_stats.items():
            log.info("final_statistics", pipeline=name, **figures)
        totals = {name: p.status()["totals"] for name, p in self.pipelines.items()}
        log.info(
            "engine_stopped",
            pid=os.getpid(),
            pipelines=totals,
            stop_duration_s=round(stop_duration_s, 3) if stop_duration_s else None,
        )


def _final_statistics(
    status: dict[str, Any], engine_started_at: float | None, now: float
) -> dict[str, Any]:
    totals = status["totals"]
    started_at = status.get("started_at") or engine_started_at
    failed_records = totals["dead_lettered"] + totals.get("kept_by_source", 0)
    return {
        "processed": totals["processed"],
        "synced": totals["written"],
        "filtered": totals["filtered"],
        "dead_lettered": totals["dead_lettered"],
        "kept_by_source": totals.get("kept_by_source", 0),
        "failed_batches": totals["failed_batches"],
        "errors": totals["failed_batches"] + failed_records,
        "runs": totals["runs"],
        "last_sync_at": status.get("last_sync_at"),
        "last_duration_ms": status.get("last_duration_ms"),
        "last_result": status.get("last_result"),
        "consecutive_failures": (status.get("circuit") or {}).get("consecutive_failures", 0),
        "uptime_s": None if started_at is None else round(max(0.0, now - started_at), 3),
    }
