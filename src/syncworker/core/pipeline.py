"""The pipeline loop: claim -> process -> finish, once, for every connector.

Guarantees (DESIGN.md): a source acks only after every sink wrote the batch; a bad record is
isolated by bisection and dead-lettered while the rest flows on; a sink that is down rolls
the batch back and pauses the pipeline (circuit breaker) until it answers again; at most
``max_in_flight`` batches are claimed and unfinished at any time; stopping finishes or
returns in-flight batches within the shutdown timeout.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, cast

import structlog

from syncworker.coord.base import Lock
from syncworker.core.bulk import settle_bulk
from syncworker.core.delivery import Delivery, Rejection, SinkWriter, deliver
from syncworker.core.durations import format_seconds
from syncworker.core.events import EventBus, Handler
from syncworker.core.groups import settle_group_end
from syncworker.core.leadership import LockKeeper
from syncworker.core.policies import BreakerPolicy, CircuitBreaker, RetryPolicy
from syncworker.core.protocols import (
    BulkBatch,
    CopiesInBulk,
    Countable,
    CountsGroups,
    GroupEnd,
    KeepsFailures,
    MergesBatches,
    Processor,
    ReportsStatus,
    RunMode,
    Sink,
    Source,
    SourceContext,
    UsesContext,
    UsesGroupCounts,
)
from syncworker.core.record import Batch, Record
from syncworker.core.replay import DeadLetterReplay
from syncworker.core.schedule import Schedule
from syncworker.errors import (
    ConfigError,
    ConnectorError,
    SinkUnavailable,
    UnsupportedOperation,
    is_transient,
    stops_pipeline,
)
from syncworker.observe.logging import redact_url
from syncworker.state.base import DeadLetter, ErrorRecord, RunRecord, StateStore

log = structlog.get_logger(__name__)

SyncMode = RunMode
State = Literal["created", "starting", "running", "paused", "stopping", "stopped"]


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """Policies of one pipeline (the ``batch``, ``retry``, ``schedule``... config sections)."""

    batch_size: int = 100
    max_wait_s: float = 1.0
    max_in_flight: int = 2
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    schedule: Schedule = field(default_factory=Schedule.stream)
    shutdown_timeout_s: float = 30.0
    # Where refused records go: the state store's dead letters, or back to a source that
    # keeps failures itself (``KeepsFailures``: retried on its schedule, then failed there).
    dead_letter_store: Literal["state", "source"] = "state"
    # In stream mode a run (one row in the run log, one sync_success) is cut at least this
    # often, so a never-ending backlog still reports progress.
    stream_run_max_s: float = 10.0
    # An 'every' run taking this share of its interval logs a warning.
    overlap_warning_ratio: float = 0.8
    # A stream pipeline with nothing to do waits this long at most for its source's signal
    # (NOTIFY, a blocking read) before claiming anyway; sources that cannot signal return
    # after their own poll interval, when shorter.
    idle_wait_s: float = 5.0


@dataclass(slots=True)
class RunStats:
    """Counters of the run under way."""

    mode: str
    # The run's id while it runs (the API's 409 names it) and, in ``force`` mode, its key.
    sync_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    key: str | None = None
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    processed: int = 0
    written: int = 0
    dead_lettered: int = 0
    # Refused records handed back to a source that keeps failures (dead_letter store
    # "source"): failed attempts kept there, not dead letters in the state store.
    kept_by_source: int = 0
    filtered: int = 0
    batches: int = 0
    failed_batches: int = 0
    streams: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    # Time spent waiting out the circuit breaker's pause: not the run's work.
    paused_s: float = 0.0
    # What the sinks said they created and replaced (WriteResult.added/updated) and what
    # they removed at the end of a group's full read (GroupEnd).
    added: int = 0
    updated: int = 0
    removed: int = 0
    groups_finished: int = 0
    # Asked for (sync_now, run_once, a schedule's tick), not a stream's time-cut run.
    requested: bool = False

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_mono

    def add(
        self,
        delivery: Delivery,
        records: Sequence[Record],
        streams: Counter[str],
        *,
        kept_by_source: bool = False,
    ) -> None:
        self.batches += 1
        self.processed += len(records)
        self.written += len(delivery.written)
        if kept_by_source:
            self.kept_by_source += len(delivery.rejected)
        else:
            self.dead_lettered += len(delivery.rejected)
        self.filtered += delivery.filtered
        self.added += delivery.added or 0
        self.updated += delivery.updated or 0
        self.streams.update(streams)


@dataclass(slots=True)
class Totals:
    """Counters since the pipeline started."""

    processed: int = 0
    written: int = 0
    dead_lettered: int = 0
    kept_by_source: int = 0
    filtered: int = 0
    runs: int = 0
    failed_batches: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    # Runs that ended "success", and the others ("partial", "error"): seed 002's
    # successful_syncs and failed_syncs. Skipped runs (lock held elsewhere) are neither.
    succeeded: int = 0
    failed: int = 0

    def add(self, run: RunStats) -> None:
        self.processed += run.processed
        self.written += run.written
        self.dead_lettered += run.dead_lettered
        self.kept_by_source += run.kept_by_source
        self.filtered += run.filtered
        self.failed_batches += run.failed_batches
        self.added += run.added
        self.updated += run.updated
        self.removed += run.removed
        self.runs += 1


class Pipeline:
    """A source, processors and sinks, with their policies, run on a schedule."""

    def __init__(
        self,
        name: str,
        source: Source,
        sinks: Sequence[Sink],
        processors: Sequence[Processor] = (),
        settings: PipelineSettings | None = None,
        state: StateStore | None = None,
        lock: Lock | None = None,
    ) -> None:
        if not sinks:
            raise ValueError(f"pipeline {name!r} needs at least one sink")
        self.name = name
        self.source = source
        self.sinks = list(sinks)
        self.processors = list(processors)
        self.settings = settings or PipelineSettings()
        self.state = state
        self.events = EventBus()
        self.totals = Totals()
        self._breaker = CircuitBreaker(self.settings.breaker)
        self._writers = [
            SinkWriter(s, self.settings.retry, self._sleep, pipeline=name) for s in self.sinks
        ]
        self._replay = DeadLetterReplay(state, name) if state is not None else None
        self._context = SourceContext(name, state)
        self._keeper = LockKeeper(lock, name, self._on_lock_lost) if lock is not None else None
        self._stopping = asyncio.Event()
        self._aborting = asyncio.Event()
        self._trigger = asyncio.Event()
        self._slots = asyncio.Semaphore(self.settings.max_in_flight)
        # Insertion-ordered, so batches cancelled at shutdown go back newest first and the
        # source ends up in its original order.
        self._tasks: dict[asyncio.Task[None], None] = {}
        self._main: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[RunRecord]] = []
        self._pending_mode: SyncMode = "incremental"
        self._pending_key: str | None = None
        self._pending_id: str | None = None
        self._opened = False
        self._opening = ""  # the connector being opened, for the logs
        self._owns_state = False  # opened the state store itself, so closes it too
        # Set when a dependency refused the configuration: the pipeline stops with it.
        self._fatal: BaseException | None = None
        # Set when the engine stops: no new run may start (reason given to the caller).
        self._closed_reason: str | None = None
        self._state: State = "created"
        self._current: RunStats | None = None
        self._last_run: RunRecord | None = None
        self._last_error: dict[str, Any] | None = None
        self._last_commit_at: float | None = None
        self._started_at: float | None = None

    # -- public API ----------------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> Handler:
        """Subscribe to ``sync_success``, ``sync_error``, ``worker_started``, ``worker_stopped``."""
        return self.events.on(event, handler)

    async def open(self, retry: RetryPolicy | None = None) -> None:
        """Connect the state store (when not open yet), the source and the sinks.

        An unavailable dependency is retried with backoff, each failed attempt logged as a
        ``connect_failed`` warning: until it answers or stop() (the circuit breaker's pauses),
        or, with ``retry``, for that policy's attempts, then its error is raised. A refusal
        that retrying cannot fix (a ``ConfigError``: wrong password, missing database) is
        logged and raised at once.
        """
        if self._opened:
            return
        self._check_open_for_runs()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._open_connectors()
            except Exception as exc:
                await self._close_connectors()
                if not is_transient(exc):
                    log.error(
                        "connect_refused",
                        pipeline=self.name,
                        connector=self._opening,
                        error=_reason(exc),
                    )
                    await self._close_owned_state()
                    raise
                pause_s = self._breaker.trip() if retry is None else retry.delay_for(attempt)
                gives_up = retry is not None and attempt >= retry.attempts
                log.warning(
                    "connect_failed",
                    pipeline=self.name,
                    connector=self._opening,
                    attempt=attempt,
                    error=_reason(exc),
                    retry_in_s=None if gives_up else round(pause_s, 3),
                )
                await self._fail("connect_failed", exc)
                if gives_up or not await self._sleep(pause_s):
                    await self._close_owned_state()
                    raise
                continue
            self._breaker.succeed()
            self._opened = True
            return

    @property
    def is_open(self) -> bool:
        """The connectors are open (``open`` succeeded, ``close`` not called since)."""
        return self._opened

    async def _open_connectors(self) -> None:
        await self._open_state()
        self._opening = self.source.name
        if not self.processors and len(self.sinks) == 1 and isinstance(self.source, CopiesInBulk):
            self.source.offer_bulk(self.sinks[0])  # core/bulk.py: the records would not change
        if isinstance(self.source, UsesGroupCounts):
            counting = next((s for s in self.sinks if isinstance(s, CountsGroups)), None)
            if counting is not None:
                self.source.offer_group_counts(counting)
        if isinstance(self.source, UsesContext):
            self.source.bind(self._context)
        await self.source.open()
        for sink in self.sinks:
            self._opening = sink.name
            await sink.open()
        self._opening = "state store"
        if self._replay is not None:
            await self._replay.open()
        self._opening = ""

    async def _open_state(self) -> None:
        """Open the state store when nobody did (the engine opens it for its pipelines): a
        pipeline built in Python must not run with a store that cannot record anything."""
        if self.state is None or getattr(self.state, "is_open", True):
            return
        self._opening = "state store"
        await self.state.open()
        self._owns_state = True

    async def close(self) -> None:
        """Close connectors (in-flight work must be finished or returned first)."""
        if not self._opened:
            return
        self._opened = False
        if self._keeper is not None:
            await self._keeper.release()
            await self._keeper.lock.close()
        await self._close_connectors()
        await self._close_owned_state()

    async def _close_owned_state(self) -> None:
        if self._owns_state and self.state is not None:
            self._owns_state = False
            await self.state.close()

    async def _close_connectors(self) -> None:
        connectors: list[Source | Sink] = [self.source, *self.sinks]
        for connector in connectors:
            try:
                await connector.close()
            except Exception as exc:
                log.warning(
                    "close_failed", pipeline=self.name, connector=connector.name, error=str(exc)
                )

    async def __aenter__(self) -> Pipeline:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the connectors and run on the schedule in a background task."""
        if self._main is not None:
            return
        self._state = "starting"
        self._started_at = time.time()
        self._stopping.clear()
        self._aborting.clear()
        self._fatal = None
        self._main = asyncio.create_task(self._run_forever(), name=f"pipeline:{self.name}")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop claiming, finish or return in-flight batches within the timeout, close."""
        timeout_s = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        self._state = "stopping"
        self._stopping.set()
        main, self._main = self._main, None
        if main is not None:
            abort = asyncio.ensure_future(self._aborting.wait())
            await asyncio.wait(
                {main, abort}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            abort.cancel()
            if main.done() and not main.cancelled() and main.exception() is not None:
                log.info("pipeline_had_failed", pipeline=self.name)
            elif not main.done():
                log.warning(
                    "shutdown_timeout",
                    pipeline=self.name,
                    in_flight=len(self._tasks),
                    timeout_s=timeout_s,
                )
                await self._cancel_in_flight(main)
        await self.close()
        self._state = "stopped"
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        await self.events.emit("worker_stopped", {"process_id": os.getpid(), "pipeline": self.name})

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The background task ``start()`` created; it fails if the pipeline cannot open."""
        return self._main

    def abort(self) -> None:
        """Cut a stop() under way short: in-flight batches go back to the source now."""
        self._aborting.set()

    def interrupt(self) -> None:
        """Stop claiming: a run under way (``run_once``) lets its in-flight batches finish,
        then returns. Retry and breaker waits end at once (their batch is rolled back)."""
        self._stopping.set()

    async def return_in_flight(self) -> None:
        """Hand every in-flight batch back to the source now (newest first)."""
        for task in reversed(list(self._tasks)):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run_once(self, mode: SyncMode = "incremental", key: str | None = None) -> RunRecord:
        """One sync run now, in this task: drain the source, then return the run's record.
        ``key``: the key or group of a ``force`` run (required then, refused otherwise).

        Connecting is retried by the retry policy only (then its error is raised), so a
        one-off run always ends. A dependency refusing the configuration mid-run raises that
        error after the run's batches were handed back.
        """
        self.check_mode(mode, key)
        await self.open(retry=self.settings.retry)
        run = await self._run(mode, stream=False, force_record=True, key=key)
        assert run is not None  # force_record: every run is recorded
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            self._stopping.clear()
            await self.close()
            raise fatal
        return run

    def close_for_runs(self, reason: str) -> None:
        """No run may start from now on (``check_mode`` raises ``reason``): the engine is
        stopping, and a sync asked for now would reopen what it is closing."""
        self._closed_reason = reason

    def _check_open_for_runs(self) -> None:
        if self._closed_reason is not None:
            raise UnsupportedOperation(f"pipeline {self.name!r}: {self._closed_reason}")

    async def sync_now(self, mode: SyncMode = "incremental", key: str | None = None) -> RunRecord:
        """Ask for a run now and wait for it. A run under way finishes first, then a new one
        starts, so everything queued before this call is included (requests made while
        one waits join it; the last one's mode and key win). ``key``: as for ``run_once``."""
        if self._main is None:
            return await self.run_once(mode, key)
        self.check_mode(mode, key)
        waiter: asyncio.Future[RunRecord] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._pending_mode = mode
        self._pending_key = key
        self._pending_id = self._pending_id or uuid.uuid4().hex[:12]
        self._trigger.set()
        return await waiter

    def running_sync(self) -> dict[str, Any] | None:
        """The sync under way, or asked for and about to start (``sync_now``): its ``id``,
        ``mode``, ``key`` and ``started_at`` (None while it waits); None when idle. A stream
        pipeline's runs are cut by time, not asked for: only requested ones count there."""
        stats = self._current
        streaming = self.settings.schedule.kind == "stream"
        if stats is not None and not (streaming and not stats.requested):
            return {
                "id": stats.sync_id,
                "mode": stats.mode,
                "key": stats.key,
                "started_at": stats.started_at,
            }
        if self._waiters and self._pending_id is not None:
            return {
                "id": self._pending_id,
                "mode": self._pending_mode,
                "key": self._pending_key,
                "started_at": None,
            }
        return None

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture of the pipeline for ``status`` and the API."""
        last = self._last_run
        breaker_until = self._breaker.open_until
        return {
            "name": self.name,
            "state": self._state,
            "started_at": self._started_at,
            "running": self._state in ("running", "paused"),
            "schedule": self.settings.schedule.describe(),
            "source": self.source.name,
            "sinks": [s.name for s in self.sinks],
            "source_status": (
                self.source.status() if isinstance(self.source, ReportsStatus) else None
            ),
            "in_flight": len(self._tasks),
            "current_sync": self.running_sync(),
            "totals": {
                "added": self.totals.added,
                "updated": self.totals.updated,
                "removed": self.totals.removed,
                "processed": self.totals.processed,
                "written": self.totals.written,
                "dead_lettered": self.totals.dead_lettered,
                "kept_by_source": self.totals.kept_by_source,
                "filtered": self.totals.filtered,
                "runs": self.totals.runs,
                "succeeded_runs": self.totals.succeeded,
                "failed_runs": self.totals.failed,
                "failed_batches": self.totals.failed_batches,
            },
            "last_sync_at": last.finished_at if last else None,
            "last_duration_ms": round(last.duration_ms, 1) if last else None,
            "last_paused_ms": round(last.paused_ms, 1) if last else None,
            "last_result": last.status if last else None,
            "last_error": self._last_error,
            "lock": self._keeper.describe() if self._keeper is not None else None,
            "circuit": {
                "open": self._breaker.is_open,
                "consecutive_failures": self._breaker.consecutive_failures,
                "resumes_in_s": (
                    round(max(0.0, breaker_until - time.monotonic()), 3) if breaker_until else None
                ),
            },
        }

    # -- scheduling ----------------------------------------------------------------------

    async def _run_forever(self) -> None:
        try:
            await self.open()
        except Exception as exc:
            if self._stopping.is_set():
                return
            # Not transient (open() retries those): a config the dependency refuses, e.g. a
            # mapped column the table lacks. The pipeline stops with it; the engine reports
            # it, and stops when no pipeline is left running.
            await self._fail("open_failed", exc)
            self._state = "stopped"
            self._main = None
            raise
        try:
            await self._work()
        finally:
            if self._fatal is not None:
                self._state = "stopped"
                self._main = None
        if self._fatal is not None:
            await self.close()
            raise self._fatal

    async def _work(self) -> None:
        self._state = "running"
        await self.events.emit(
            "worker_started",
            {
                "process_id": os.getpid(),
                "pipeline": self.name,
                "config": {
                    "schedule": self.settings.schedule.describe(),
                    "batch_size": self.settings.batch_size,
                },
            },
        )
        if self.settings.schedule.kind == "stream":
            await self._stream_loop()
        else:
            await self._scheduled_loop()

    @property
    def _working(self) -> bool:
        """The loops go on: not stopping, and not closed for runs. The engine closes every
        pipeline for runs before it stops them one by one; a loop that wakes up in between
        ends its work quietly instead of failing with "no new sync starts"."""
        return not self._stopping.is_set() and self._closed_reason is None

    async def _stream_loop(self) -> None:
        while self._working:
            mode, key, sync_id = self._take_mode()
            run = await self._run(mode, stream=True, force_record=False, key=key, sync_id=sync_id)
            if run is None and not self._trigger.is_set():
                await self._wait_for_work()

    async def _scheduled_loop(self) -> None:
        schedule = self.settings.schedule
        delay_s = 0.0 if schedule.run_at_start else schedule.delay_until_next_s()
        while self._working:
            await self._wait_trigger(delay_s)
            if not self._working:
                return
            mode, key, sync_id = self._take_mode()
            run = await self._run(mode, stream=False, force_record=True, key=key, sync_id=sync_id)
            self._warn_if_near_interval(run)
            delay_s = schedule.delay_until_next_s()

    def _warn_if_near_interval(self, run: RunRecord | None) -> None:
        interval_s = self.settings.schedule.interval_s
        if run is None or interval_s is None:
            return
        duration_s = run.duration_ms / 1000.0
        if duration_s >= self.settings.overlap_warning_ratio * interval_s:
            log.warning(
                "run_near_interval",
                pipeline=self.name,
                duration_s=round(duration_s, 3),
                interval_s=interval_s,
                recommendation=f"sync takes {format_seconds(duration_s)} s of a "
                f"{format_seconds(interval_s)} s interval: raise the interval or the batch size",
            )

    async def _wait_trigger(self, delay_s: float | None) -> None:
        """Sleep until the delay passes (None: forever), sync_now() or stop()."""
        waits = {
            asyncio.ensure_future(self._trigger.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _wait_for_work(self) -> None:
        """Stream mode, idle: wait for the source's signal, a trigger or stop."""
        wait_s = max(self.settings.max_wait_s, self.settings.idle_wait_s)
        waits = {
            asyncio.ensure_future(self.source.wait(wait_s)),
            asyncio.ensure_future(self._trigger.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=wait_s + 1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _take_mode(self) -> tuple[SyncMode, str | None, str | None]:
        """The mode, key and id asked for the next run (then back to a plain incremental)."""
        taken = (self._pending_mode, self._pending_key, self._pending_id)
        self._pending_mode, self._pending_key, self._pending_id = "incremental", None, None
        self._trigger.clear()
        return taken

    def check_mode(self, mode: SyncMode, key: str | None = None) -> None:
        """``UnsupportedOperation`` when this pipeline cannot sync in ``mode`` (or at all: the
        engine is stopping): ``full`` needs a source that can read everything again, ``force``
        one that says ``force_sync = True`` (and a key); ``ValueError`` for a key given to
        another mode, or a ``force`` without one."""
        self._check_open_for_runs()
        full_sync = isinstance(self.source, UsesContext) and self.source.full_sync
        if mode == "full" and not (full_sync or hasattr(self.source, "scan")):
            raise UnsupportedOperation(
                f"pipeline {self.name!r}: source {self.source.name!r} cannot do a full sync"
            )
        if mode == "force":
            if not getattr(self.source, "force_sync", False):
                raise UnsupportedOperation(
                    f"pipeline {self.name!r}: source {self.source.name!r} cannot force-sync "
                    "one key or group"
                )
            if not key:
                raise ValueError(f"pipeline {self.name!r}: a force sync needs a key")
        elif key is not None:
            raise ValueError(f"pipeline {self.name!r}: only a force sync takes a key")

    async def _sleep(self, delay_s: float) -> bool:
        """Sleep unless stopping; False when stop() interrupted it."""
        if self._stopping.is_set():
            return False
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)
        except TimeoutError:
            return True
        return False

    # -- one run ---------------------------------------------------------------------------

    async def _run(
        self,
        mode: SyncMode,
        *,
        stream: bool,
        force_record: bool,
        key: str | None = None,
        sync_id: str | None = None,
    ) -> RunRecord | None:
        """Drain requeued dead letters then the source; record the run if anything happened."""
        self.check_mode(mode, key)
        waiters, self._waiters = self._waiters, []
        stats = RunStats(mode, key=key)
        stats.requested = bool(waiters) or not stream
        if sync_id is not None:
            stats.sync_id = sync_id
        self._context.mode = mode  # what a UsesContext source reads in claim
        self._context.force_key = key
        self._context.run += 1
        if not await self._hold_lock(stats):
            return await self._skipped(stats, waiters, force_record)
        self._current = stats
        try:
            if self._replay is not None:
                await self._drain(self._replay, stats, fill=False)
            await self._drain(self.source, stats, fill=stream)
            await self._wait_in_flight()
        finally:
            self._current = None
            if self._keeper is not None and (not stream or self._keeper.lost.is_set()):
                # Scheduled runs take the lock per run; a stream holds it until it is lost.
                await self._keeper.release()
        if not (force_record or waiters or stats.processed or stats.failed_batches):
            return None
        run = await self._finish_run(stats)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(run)
        return run

    async def _hold_lock(self, stats: RunStats) -> bool:
        """True when the run may go on: no lock, or the lock is (now) held by us."""
        if self._keeper is None or self._keeper.held:
            return True
        try:
            return await self._keeper.acquire()
        except Exception as exc:
            stats.error = _reason(exc)
            if stops_pipeline(exc):
                await self._halt(exc, "lock")
                return False
            pause_s = self._breaker.trip()
            log.warning(
                "lock_unavailable",
                pipeline=self.name,
                connector="lock",
                error=stats.error,
                pause_s=pause_s,
            )
            await self._fail("lock_unavailable", exc)
            return False

    async def _skipped(
        self, stats: RunStats, waiters: list[asyncio.Future[RunRecord]], force_record: bool
    ) -> RunRecord | None:
        """Another worker holds the lock (or the lock's service is down): this run does
        nothing, quietly (seed 000), and is not written to the run log."""
        run = RunRecord(
            pipeline=self.name,
            mode=stats.mode,
            started_at=stats.started_at,
            finished_at=time.time(),
            status="skipped",
            error=stats.error,
        )
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(run)
        return run if force_record or waiters else None

    async def _on_lock_lost(self) -> None:
        """The lock is gone: return every in-flight batch (newest first) before any more
        is written; the drain loop stops claiming as it sees ``lost``."""
        await self.return_in_flight()
        if self._current is not None:
            self._current.error = "LockLost: the pipeline's lock was lost; batches returned"

    def _lock_lost(self) -> bool:
        return self._keeper is not None and self._keeper.lost.is_set()

    async def _drain(self, source: Source, stats: RunStats, *, fill: bool) -> None:
        """Claim and dispatch batches until the source is empty (or the run is cut)."""
        quiet = False  # the source's last signal, while batches were in flight, was idle
        while not self._stopping.is_set() and not self._lock_lost():
            if self._breaker.is_open:
                paused_from = time.monotonic()
                await self._breaker.wait_ready(self._stopping)
                stats.paused_s += time.monotonic() - paused_from
            if self._stopping.is_set():
                return
            probing = self._breaker.is_open
            self._state = "paused" if probing else "running"
            await self._slots.acquire()
            parts = await self._claim(source, stats, fill=fill)
            if self._lock_lost():
                self._slots.release()
                await self._nack(source, parts)
                return
            if not parts:
                self._slots.release()
                if not self._claims_again(stats, stream=fill):
                    return
                # Batches are in flight: a source may have more once they settle (a GroupEnd
                # follows the last acked batch of a group's read), and a stream's next change
                # is claimed when its source signals it, not after they all settle.
                quiet = await self._await_work_or_settle(source, stream=fill, quiet=quiet)
                if stats.error is not None:
                    return
                continue
            quiet = False
            if probing:
                await self._finish(source, parts, stats)
            else:
                self._dispatch(source, parts, stats)
            if fill and stats.elapsed_s() >= self.settings.stream_run_max_s:
                return
            if not fill and stats.error is not None:
                # A scheduled run ends at its first failure; the next run (after the
                # breaker's pause) tries again, so `run --once` never hangs on a dead sink.
                return

    def _dispatch(self, source: Source, parts: list[Batch], stats: RunStats) -> None:
        task = asyncio.create_task(self._finish(source, parts, stats), name=f"batch:{self.name}")
        self._tasks[task] = None
        task.add_done_callback(lambda done: self._tasks.pop(done, None))

    def _claims_again(self, stats: RunStats, *, stream: bool) -> bool:
        """A run whose source is empty for now claims again when batches are in flight and
        nothing failed; a stream run also only while no other run was asked for and it is
        not due to end."""
        if not self._tasks or stats.error is not None:
            return False
        return not stream or (
            not self._trigger.is_set() and stats.elapsed_s() < self.settings.stream_run_max_s
        )

    async def _await_work_or_settle(self, source: Source, *, stream: bool, quiet: bool) -> bool:
        """Until a batch in flight settles or stop; in a stream, also until a run is asked for
        or the source signals more. True when the source's signal came first: the next empty
        claim (``quiet``) then waits for a settle only, so a source whose ``wait`` returns at
        once (no way to signal) cannot make this loop spin."""
        mine: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._stopping.wait())]
        signal = None
        if stream:
            mine.append(asyncio.ensure_future(self._trigger.wait()))
            if not quiet:
                signal = asyncio.ensure_future(source.wait(self.settings.idle_wait_s))
                mine.append(signal)
        in_flight = set(self._tasks)
        try:
            done, _ = await asyncio.wait({*mine, *in_flight}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in mine:
                waiter.cancel()
        return signal is not None and signal in done and not done & in_flight

    async def _wait_in_flight(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _claim(self, source: Source, stats: RunStats, *, fill: bool) -> list[Batch]:
        """Up to batch_size records; with ``fill``, wait up to max_wait for a full batch."""
        parts: list[Batch] = []
        count = 0
        deadline: float | None = None
        size = self.settings.batch_size
        while count < size:
            try:
                batch = await source.claim(size - count)
            except Exception as exc:
                await self._source_failed(source, exc, stats)
                break
            if isinstance(batch, BulkBatch | GroupEnd):  # travel alone (core/bulk.py, groups.py)
                if parts:
                    await self._settle(partial(source.nack, error=None), batch, "nack")
                else:
                    parts.append(batch)
                break
            if batch is not None and batch.records:
                parts.append(batch)
                count += len(batch.records)
                deadline = deadline or time.monotonic() + self.settings.max_wait_s
                if fill and time.monotonic() >= deadline:
                    break  # a steady trickle must not hold the batch past max_wait
                continue
            if not fill or not parts or self._stopping.is_set():
                break
            remaining_s = (deadline or 0.0) - time.monotonic()
            if remaining_s <= 0:
                break
            await source.wait(remaining_s)
        if len(parts) > 1 and isinstance(source, MergesBatches):
            return [source.merge(parts)]
        return parts

    async def _source_failed(self, source: Source, exc: Exception, stats: RunStats) -> None:
        if stops_pipeline(exc):
            stats.error = _reason(exc)
            await self._halt(exc, source.name)
            return
        if not isinstance(exc, ConnectorError) and not is_transient(exc):
            log.error(
                "source_claim_bug",
                pipeline=self.name,
                source=source.name,
                error=f"{type(exc).__name__}: {exc}",
            )
        stats.error = redact_url(f"{type(exc).__name__}: {exc}")
        pause_s = self._breaker.trip()
        log.warning(
            "source_unavailable",
            pipeline=self.name,
            source=source.name,
            error=stats.error,
            pause_s=pause_s,
        )
        await self._fail("source_unavailable", exc)

    # -- finishing a batch -----------------------------------------------------------------

    async def _finish(self, source: Source, parts: list[Batch], stats: RunStats) -> None:
        """Deliver, then dead-letter what was rejected, then ack; or roll back. Frees the
        in-flight slot taken when the batch was claimed."""
        try:
            await self._settle_batch(source, parts, stats)
        finally:
            self._slots.release()

    async def _settle_batch(self, source: Source, parts: list[Batch], stats: RunStats) -> None:
        if isinstance(parts[0], BulkBatch):
            await settle_bulk(self, source, parts[0], stats)
            return
        if isinstance(parts[0], GroupEnd):
            await settle_group_end(self, source, parts[0], stats)
            return
        records = [r for part in parts for r in part.records]
        started = time.monotonic()
        try:
            delivery = await deliver(records, self.processors, self._writers)
            failures = await self._keep_rejected(parts, delivery.rejected)
        except asyncio.CancelledError:
            # Handed back, not failed: a source counting attempts does not count this one.
            await asyncio.shield(self._nack(source, parts))
            raise
        except Exception as exc:
            if stops_pipeline(exc):
                # The configuration's fault, not the records': hand them back untouched.
                await self._nack(source, parts)
                stats.failed_batches += 1
                stats.error = _reason(exc)
                connector = exc.connector if isinstance(exc, ConfigError) else None
                await self._halt(exc, connector or getattr(exc, "sink", None) or "sink")
                return
            await self._rollback(source, parts, stats, exc)
            if self.events.has("batch_failed"):
                await self.events.emit(
                    "batch_failed",
                    {
                        "pipeline": self.name,
                        "records": len(records),
                        "error": redact_url(f"{type(exc).__name__}: {exc}"),
                        "duration_s": time.monotonic() - started,
                    },
                )
            return
        await self._ack(source, parts, failures)
        self._breaker.succeed()
        streams = Counter(r.stream for r in records)
        kept_by_source = self.settings.dead_letter_store == "source"
        stats.add(delivery, records, streams, kept_by_source=kept_by_source)
        self._last_commit_at = time.time()
        if self.events.has("batch_committed"):
            payload = _batch_payload(self.name, records, streams, delivery, kept_by_source)
            payload["duration_s"] = time.monotonic() - started
            await self.events.emit("batch_committed", payload)
        log.debug(
            "batch_committed",
            pipeline=self.name,
            records=len(records),
            written=len(delivery.written),
            dead_lettered=len(delivery.rejected),
        )

    async def _rollback(
        self, source: Source, parts: list[Batch], stats: RunStats, exc: Exception
    ) -> None:
        await self._nack(source, parts, exc)
        stats.failed_batches += 1
        stats.error = redact_url(f"{type(exc).__name__}: {exc}")
        pause_s = self._breaker.trip()
        self._state = "paused"
        event = "sink_unavailable" if isinstance(exc, SinkUnavailable) else "batch_failed"
        log.warning(
            event,
            pipeline=self.name,
            records=sum(len(p) for p in parts),
            error=stats.error,
            pause_s=pause_s,
        )
        await self._fail(event, exc)

    async def _halt(self, exc: BaseException, connector: str) -> None:
        """A dependency refused the configuration (wrong password, table gone): stop this
        pipeline with that error instead of retrying it as an outage."""
        if self._fatal is not None:
            return
        self._fatal = exc
        self._stopping.set()
        log.error(
            "pipeline_failed",
            pipeline=self.name,
            connector=connector,
            error=_reason(exc),
            action="stopped: fix the settings, then start the pipeline again",
        )
        await self._fail("config_refused", exc)

    async def _keep_rejected(
        self, parts: list[Batch], rejected: list[Rejection]
    ) -> dict[int, dict[int, str]]:
        """Dead-letter ``rejected`` in the state store, or (``dead_letter_store`` "source")
        say which records of which part go back to the source as failed attempts:
        ``{part index: {record index: error}}``. Runs before the batch is acked."""
        if self.settings.dead_letter_store == "state":
            await self._dead_letter(rejected)
            return {}
        where = {
            id(record): (p, r)
            for p, part in enumerate(parts)
            for r, record in enumerate(part.records)
        }
        failures: dict[int, dict[int, str]] = {}
        for rejection in rejected:
            p, r = where[id(rejection.record)]
            failures.setdefault(p, {})[r] = rejection.message
            log.warning(
                "record_failed",
                pipeline=self.name,
                where=rejection.where,
                record_key=rejection.record.key,
                stream=rejection.record.stream,
                error=rejection.message,
                kept_by="source",
            )
            if self.state is not None:
                await self.state.record_error(_error_record(self.name, rejection, "record_failed"))
        return failures

    async def _dead_letter(self, rejected: list[Rejection]) -> None:
        """Keep rejected records in the state store before the batch is acked."""
        if not rejected:
            return
        if self.state is None:
            for rejection in rejected:
                log.error(
                    "record_rejected_no_state_store",
                    pipeline=self.name,
                    record_key=rejection.record.key,
                    error=rejection.message,
                )
            raise ConnectorError(
                f"pipeline {self.name!r}: records rejected and no state store to dead-letter them"
            )
        letters = [_letter(self.name, r) for r in rejected]
        await self.state.add_dead_letters(letters)
        for rejection in rejected:
            log.warning(
                "record_dead_lettered",
                pipeline=self.name,
                where=rejection.where,
                record_key=rejection.record.key,
                stream=rejection.record.stream,
                error=rejection.message,
            )
            await self.state.record_error(_error_record(self.name, rejection, "dead_letter"))

    async def _ack(
        self, source: Source, parts: list[Batch], failures: dict[int, dict[int, str]]
    ) -> None:
        for index, part in enumerate(parts):
            failed = failures.get(index)
            if failed:
                # _keep_rejected only fills ``failures`` for a KeepsFailures source (checked
                # when the config is loaded).
                keeper = cast(KeepsFailures, source)
                await self._settle(partial(keeper.ack_except, failures=failed), part, "ack")
            else:
                await self._settle(source.ack, part, "ack")

    async def _nack(
        self, source: Source, parts: list[Batch], error: BaseException | None = None
    ) -> None:
        """Return ``parts`` newest first; ``error`` is the failure, None a mere hand-back."""
        for part in reversed(parts):
            await self._settle(partial(source.nack, error=error), part, "nack")

    async def _settle(self, method: Any, part: Batch, what: str) -> None:
        """Ack or nack with retries; when it keeps failing the source's crash recovery
        (lease, processing list) brings the records back, so log and go on."""
        policy = self.settings.retry
        for attempt in range(1, policy.attempts + 1):
            try:
                await method(part)
                return
            except Exception as exc:
                log.warning(
                    f"{what}_failed",
                    pipeline=self.name,
                    attempt=attempt,
                    records=len(part),
                    error=f"{type(exc).__name__}: {exc}",
                )
                if attempt == policy.attempts:
                    return
                await asyncio.sleep(policy.delay_for(attempt))

    # -- bookkeeping -------------------------------------------------------------------------

    async def _finish_run(self, stats: RunStats) -> RunRecord:
        status: Literal["success", "partial", "error"] = "success"
        if stats.error is not None:
            status = "partial" if stats.batches else "error"
        run = RunRecord(
            pipeline=self.name,
            mode=stats.mode,
            started_at=stats.started_at,
            finished_at=time.time(),
            status=status,
            processed=stats.processed,
            written=stats.written,
            dead_lettered=stats.dead_lettered,
            filtered=stats.filtered,
            streams=dict(stats.streams),
            error=stats.error,
            paused_ms=stats.paused_s * 1000.0,
            added=stats.added,
            updated=stats.updated,
            removed=stats.removed,
            key=stats.key,
            sync_id=stats.sync_id,
        )
        self.totals.add(stats)
        if status == "success":
            self.totals.succeeded += 1
        else:
            self.totals.failed += 1
        self._last_run = run
        if self.state is not None:
            try:
                run.id = await self.state.record_run(run)
            except Exception as exc:
                log.warning("run_log_failed", pipeline=self.name, error=str(exc))
        log.info(
            "sync_finished",
            pipeline=self.name,
            mode=run.mode,
            status=run.status,
            processed=run.processed,
            added=run.added,
            updated=run.updated,
            removed=run.removed,
            dead_lettered=run.dead_lettered,
            kept_by_source=stats.kept_by_source,
            duration_ms=round(run.duration_ms, 1),
            paused_ms=round(run.paused_ms, 1),
            streams=run.streams,
        )
        if status == "success":
            await self.events.emit(
                "sync_success",
                {
                    "pipeline": self.name,
                    "processed_count": run.processed,
                    "duration_ms": round(run.duration_ms, 1),
                    "streams": dict(run.streams),
                    "written_count": run.written,
                    "dead_lettered_count": run.dead_lettered,
                },
            )
        return run

    async def _fail(self, kind: str, exc: BaseException) -> None:
        message = redact_url(f"{type(exc).__name__}: {exc}")
        stack = redact_url("".join(traceback.format_exception(exc)))
        self._last_error = {"type": kind, "message": message, "at": time.time()}
        if self.state is not None:
            try:
                await self.state.record_error(
                    ErrorRecord(type=kind, pipeline=self.name, message=message, stack=stack)
                )
            except Exception as store_exc:
                log.warning("error_log_failed", pipeline=self.name, error=str(store_exc))
        await self.events.emit(
            "sync_error", {"pipeline": self.name, "error": message, "stack": stack}
        )

    async def _cancel_in_flight(self, main: asyncio.Task[None]) -> None:
        """Past the shutdown timeout: cancel batches (each returns itself to the source)."""
        main.cancel()
        for task in reversed(list(self._tasks)):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(main, return_exceptions=True)

    async def backlog(self) -> int | None:
        """The source's backlog when it can count it."""
        if isinstance(self.source, Countable):
            return await self.source.backlog()
        return None


def _batch_payload(
    pipeline: str,
    records: list[Record],
    streams: Counter[str],
    delivery: Delivery,
    kept_by_source: bool = False,
) -> dict[str, Any]:
    """``batch_committed``: counts by stream, and by sink and stream for what each wrote;
    refused records by stream as ``dead_lettered`` or, handed back to a source that keeps
    failures, as ``kept_by_source``.

    Runs per batch on the event loop, so the common case (nothing filtered or refused)
    reuses the batch's stream counts instead of counting the records again.
    """
    unchanged = len(delivery.kept) == len(records) and not delivery.filtered
    given = streams if unchanged else Counter(r.stream for r in delivery.kept)
    written: dict[str, dict[str, int]] = {}
    for sink, refused in delivery.refused_by_sink.items():
        if not refused:
            written[sink] = dict(given)
            continue
        per_stream = given.copy()
        per_stream.subtract(r.stream for r in refused)
        written[sink] = {s: n for s, n in per_stream.items() if n > 0}
    refused_by_stream = dict(Counter(r.record.stream for r in delivery.rejected))
    return {
        "pipeline": pipeline,
        "records": len(records),
        "streams": dict(streams),
        "written": written,
        "refused": {sink: len(refused) for sink, refused in delivery.refused_by_sink.items()},
        "dead_lettered": {} if kept_by_source else refused_by_stream,
        "kept_by_source": refused_by_stream if kept_by_source else {},
        "filtered": delivery.filtered,
    }


def _error_record(pipeline: str, rejection: Rejection, kind: str) -> ErrorRecord:
    return ErrorRecord(
        type=kind,
        pipeline=pipeline,
        record_key=rejection.record.key,
        message=rejection.message,
        stack=rejection.stack,
        metadata={"where": rejection.where, "stream": rejection.record.stream},
    )


def _letter(pipeline: str, rejection: Rejection) -> DeadLetter:
    record = rejection.record
    return DeadLetter(
        pipeline=pipeline,
        stream=record.stream,
        key=record.key,
        op=record.op,
        data=record.data,
        meta={k: v for k, v in record.meta.items() if not k.startswith("dead_letter_")},
        error=rejection.message,
        error_type=type(rejection.error).__name__,
        sink=rejection.where,
        stack=rejection.stack,
        # How many times this record was dead-lettered (replays included), not deliveries.
        attempts=int(record.meta.get("dead_letter_attempts", 0)) + 1,
    )


def _reason(exc: BaseException) -> str:
    """``exc`` as one redacted line for logs, status and the error log."""
    return redact_url(f"{type(exc).__name__}: {exc}")
