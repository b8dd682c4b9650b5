"""Prometheus metrics for an engine's pipelines (prometheus-client, one registry per engine).

Counters move with the ``batch_committed`` / ``batch_failed`` / ``sync_success`` events, so
they equal the records really moved; gauges (backlog, queue depth, dead letters, records a
source keeps as failed, the oldest waiting record's age) are read from the connectors and the
state store when ``refresh()`` runs, before each scrape.

A source that keeps refused records itself (``dead_letter: {store: source}``, pg_outbox)
reports them where they are: ``syncworker_records_kept_by_source_total`` counts each refusal
handed back to it, and ``syncworker_queue_depth{queue="source", state="failed"}`` the records
it gave up on (its optional ``failed_count()``), beside the dead letters of the state store.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from syncworker.core.engine import Engine
from syncworker.core.pipeline import Pipeline
from syncworker.jobs.metrics import JobsCollector
from syncworker.reconcile.scheduled import verify_status

BACKLOG_TTL_S = 5.0
"""Counting a backlog can scan a whole queue table on the source's own connection: a
dashboard polling every second and a scraper reuse the last count for this long instead of
competing with the pipeline's claims."""
COUNT_SHARE = 0.01
"""And a count that took ``d`` seconds is reused for ``d / COUNT_SHARE`` at least: counting
then takes at most a hundredth of the source connection's time however long the queue
grows (a million queued SQLite rows: 0.1 s a count, reused for 10 s; counted every 5 s, the
counts were most of what a polled API cost the pipeline)."""


def _reuse_until(started: float, finished: float) -> float:
    """When a figure read from ``started`` to ``finished`` is to be read again."""
    return started + max(BACKLOG_TTL_S, (finished - started) / COUNT_SHARE)


BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class EngineMetrics:
    """The metric families, filled by subscribing to every pipeline's events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.read = Counter(
            "syncworker_records_read",
            "Records read from the source and finished (written or dead-lettered)",
            ["pipeline", "stream"],
            registry=r,
        )
        self.written = Counter(
            "syncworker_records_written",
            "Records written by a sink",
            ["pipeline", "sink", "stream"],
            registry=r,
        )
        self.failed = Counter(
            "syncworker_records_failed", "Records a sink refused", ["pipeline", "sink"], registry=r
        )
        self.dead_lettered = Counter(
            "syncworker_records_dead_lettered",
            "Records stored as dead letters",
            ["pipeline", "stream"],
            registry=r,
        )
        self.kept_by_source = Counter(
            "syncworker_records_kept_by_source",
            "Refused records handed back to a source that keeps failures (dead_letter store "
            "'source'), each a failed attempt there",
            ["pipeline", "stream"],
            registry=r,
        )
        self.filtered = Counter(
            "syncworker_records_filtered", "Records dropped by a filter", ["pipeline"], registry=r
        )
        self.batches_failed = Counter(
            "syncworker_batches_rolled_back",
            "Batches returned to their source after a whole-batch failure",
            ["pipeline"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "syncworker_batch_duration_seconds",
            "Time to write and acknowledge one batch",
            ["pipeline"],
            registry=r,
            buckets=BATCH_SECONDS_BUCKETS,
        )
        self.backlog_gauge = Gauge(
            "syncworker_source_backlog",
            "Records waiting in the source (where the source can count them)",
            ["pipeline"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "syncworker_queue_depth",
            "Records by state in the pipeline's queues: source ready, in_flight and failed "
            "(where the source tells), dead letters by status",
            ["pipeline", "queue", "state"],
            registry=r,
        )
        self.oldest_waiting = Gauge(
            "syncworker_source_oldest_waiting_seconds",
            "Age of the oldest record not delivered yet (where the source can tell)",
            ["pipeline"],
            registry=r,
        )
        self.last_success = Gauge(
            "syncworker_last_success_timestamp_seconds",
            "Unix time of the last successful run",
            ["pipeline"],
            registry=r,
        )
        self.up = Gauge(
            "syncworker_pipeline_running", "1 while the pipeline runs", ["pipeline"], registry=r
        )
        self.circuit_open = Gauge(
            "syncworker_circuit_open",
            "1 while the pipeline is paused after a whole-batch failure",
            ["pipeline"],
            registry=r,
        )
        self.lock_held = Gauge(
            "syncworker_lock_held",
            "1 while the pipeline holds its lock (pipelines with a lock only)",
            ["pipeline"],
            registry=r,
        )
        # Scheduled verify (reconcile/scheduled.py): the last run's result per pipeline.
        self.verify_differences = Gauge(
            "syncworker_verify_differences",
            "Keys the last scheduled verify found differing, by kind (missing, extra, different)",
            ["pipeline", "kind"],
            registry=r,
        )
        self.verify_consistent = Gauge(
            "syncworker_verify_consistent",
            "1 when the last scheduled verify found source and target consistent, else 0",
            ["pipeline"],
            registry=r,
        )
        self.verify_last_run = Gauge(
            "syncworker_verify_last_run_timestamp_seconds",
            "Unix time the last scheduled verify started (whatever its result)",
            ["pipeline"],
            registry=r,
        )
        self.verify_failed = Gauge(
            "syncworker_verify_failed",
            "1 when the last scheduled verify could not run (see /status verify.last_error)",
            ["pipeline"],
            registry=r,
        )
        self.verify_rows = Gauge(
            "syncworker_verify_rows",
            "Rows the last scheduled verify counted, by side (source after its filter, target)",
            ["pipeline", "side"],
            registry=r,
        )
        # The jobs: section's series, read from the engine's jobs service at each scrape.
        self.jobs = JobsCollector(lambda: engine.services)
        r.register(self.jobs)
        # (read again after this time on ``clock``, the figure)
        self._backlogs: dict[str, tuple[float, int | None]] = {}
        self._figures: dict[tuple[str, str], tuple[float, Any]] = {}
        self.clock = time.monotonic
        for pipeline in engine.pipelines.values():
            self.attach(pipeline)

    async def backlog(self, pipeline: Pipeline) -> int | None:
        """The pipeline's backlog, at most ``BACKLOG_TTL_S`` old (longer when counting is
        slow: ``COUNT_SHARE``); None if it cannot count."""
        cached = self._backlogs.get(pipeline.name)
        now = self.clock()
        if cached is not None and now < cached[0]:
            return cached[1]
        value = await _safe(pipeline.backlog)
        self._backlogs[pipeline.name] = (_reuse_until(now, self.clock()), value)
        return value  # type: ignore[no-any-return]

    async def failed_in_source(self, pipeline: Pipeline) -> int | None:
        """Records the source keeps as failed (``failed_count()``), at most ``BACKLOG_TTL_S``
        old; None when the source cannot tell."""
        value = await self._figure(pipeline, "failed_count")
        return None if value is None else int(value)

    async def oldest_waiting_s(self, pipeline: Pipeline) -> float | None:
        """Age of the oldest record not delivered yet (``oldest_waiting_s()``), read at most
        every ``BACKLOG_TTL_S``; None when the source cannot tell or nothing waits."""
        value = await self._figure(pipeline, "oldest_waiting_s")
        return None if value is None else float(value)

    async def _figure(self, pipeline: Pipeline, method: str) -> Any:
        key = (pipeline.name, method)
        cached = self._figures.get(key)
        now = self.clock()
        if cached is not None and now < cached[0]:
            return cached[1]
        value = await _safe(getattr(pipeline.source, method, None))
        self._figures[key] = (_reuse_until(now, self.clock()), value)
        return value

    def attach(self, pipeline: Pipeline) -> None:
        pipeline.on("batch_committed", self._on_batch)
        pipeline.on("batch_failed", self._on_failed)
        pipeline.on("sync_success", self._on_success)

    def _on_batch(self, event: dict[str, Any]) -> None:
        name = event["pipeline"]
        cached = self._backlogs.get(name)
        if cached is not None and cached[1] is not None:
            # What was just committed has left the backlog: keep the cached count honest
            # between two real counts.
            self._backlogs[name] = (cached[0], max(0, cached[1] - event["records"]))
        for stream, count in event["streams"].items():
            self.read.labels(name, stream).inc(count)
        for sink, per_stream in event["written"].items():
            for stream, count in per_stream.items():
                self.written.labels(name, sink, stream).inc(count)
        for sink, count in event["refused"].items():
            if count:
                self.failed.labels(name, sink).inc(count)
        for stream, count in event["dead_lettered"].items():
            self.dead_lettered.labels(name, stream).inc(count)
        for stream, count in event.get("kept_by_source", {}).items():
            self.kept_by_source.labels(name, stream).inc(count)
        if event["filtered"]:
            self.filtered.labels(name).inc(event["filtered"])
        self.batch_seconds.labels(name).observe(event["duration_s"])

    def _on_failed(self, event: dict[str, Any]) -> None:
        self.batches_failed.labels(event["pipeline"]).inc()
        self.batch_seconds.labels(event["pipeline"]).observe(event["duration_s"])

    def _on_success(self, event: dict[str, Any]) -> None:
        self.last_success.labels(event["pipeline"]).set(time.time())

    async def refresh(self) -> None:
        """Read the gauges: state of each pipeline, backlog, queue depths, dead letters."""
        for name, pipeline in self.engine.pipelines.items():
            status = pipeline.status()
            self.up.labels(name).set(1 if status["running"] else 0)
            self.circuit_open.labels(name).set(1 if status["circuit"]["open"] else 0)
            lock = status.get("lock")
            if lock is not None:
                self.lock_held.labels(name).set(1 if lock.get("held") else 0)
            backlog = await self.backlog(pipeline)
            if backlog is not None:
                self.backlog_gauge.labels(name).set(backlog)
            in_flight = await _safe(getattr(pipeline.source, "in_flight", None))
            if backlog is not None:
                self.queue_depth.labels(name, "source", "ready").set(backlog)
            if in_flight is not None:
                self.queue_depth.labels(name, "source", "in_flight").set(in_flight)
            failed = await self.failed_in_source(pipeline)
            if failed is not None:
                self.queue_depth.labels(name, "source", "failed").set(failed)
            if hasattr(pipeline.source, "oldest_waiting_s"):
                # 0 when nothing waits, so an alert on the age clears once the queue drains.
                self.oldest_waiting.labels(name).set(await self.oldest_waiting_s(pipeline) or 0.0)
            counts = await self.engine.state.count_dead_letters(name)
            for state in ("dead", "requeued", "replaying"):
                self.queue_depth.labels(name, "dead_letters", state).set(counts.get(state, 0))
            self._refresh_verify(name)

    def _refresh_verify(self, name: str) -> None:
        verify = verify_status(self.engine, name)
        if verify is None or verify["last_run_at"] is None:
            return
        self.verify_last_run.labels(name).set(verify["last_run_at"])
        self.verify_failed.labels(name).set(1 if verify["last_error"] else 0)
        last = verify["last"]
        if last is None:
            return
        for kind in ("missing", "extra", "different"):
            self.verify_differences.labels(name, kind).set(last[kind]["count"])
        self.verify_consistent.labels(name).set(1 if last["status"] == "consistent" else 0)
        self.verify_rows.labels(name, "source").set(last["source"]["rows"])
        self.verify_rows.labels(name, "target").set(last["target"]["rows"])

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


async def _safe(method: Any) -> Any:
    """A gauge reading that fails (source closed, not supported) is skipped, not raised."""
    if method is None:
        return None
    try:
        return await method()
    except Exception:
        return None
