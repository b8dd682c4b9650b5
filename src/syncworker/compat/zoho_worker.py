"""Seed 002's Python API on syncworker: ``SyncWorker`` with the seed's method names.

For code written against the hand-made worker (``src/services/syncWorker.js``): the same
methods and status shape, running the config's grouped pipeline underneath (Zoho Creator ->
Redis per record, with per-event index sets and metadata). New code should use the config
file and the control API (``syncworker run``) directly.

    worker = SyncWorker("examples/zoho_to_redis/syncworker.yaml")
    await worker.start()                       # the engine, its schedule (ENABLE_AUTO_SYNC)
    await worker.perform_full_sync()           # every event
    await worker.perform_incremental_sync()    # modified, stale (> 10 min) or count differs
    await worker.force_sync_event("4433256000013547003")
    print(worker.get_status())                 # {is_running, config, stats, last_sync_time}
    report = await worker.check_discrepancies(repair=True)
    await worker.stop()

The status helpers here (``seed_stats``, ``seed_config``) are also what the control API's
``/api/sync-worker/status`` answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from syncworker.config import load_config
from syncworker.core.engine import Engine
from syncworker.core.pipeline import Pipeline
from syncworker.state import state_store_from_url


def seed_stats(statuses: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The seed's seven counters, summed over pipelines' ``status()`` since they started;
    ``last_sync_duration`` is the most recent run's, in milliseconds."""
    values = list(statuses)
    last = max(values, key=lambda p: p["last_sync_at"] or 0, default=None)

    def total(name: str) -> int:
        return sum(int(p["totals"].get(name, 0)) for p in values)

    return {
        "total_syncs": total("runs"),
        "successful_syncs": total("succeeded_runs"),
        "failed_syncs": total("failed_runs"),
        "records_added": total("added"),
        "records_updated": total("updated"),
        "records_removed": total("removed"),
        "last_sync_duration": (last["last_duration_ms"] or 0) if last is not None else 0,
    }


def seed_config(pipeline: Pipeline) -> dict[str, Any]:
    """The seed's config fields (syncIntervalMs, batchSize, maxRetries, enableAutoSync,
    enableDiscrepancyDetection) as ``pipeline`` runs them, with its schedule and connectors."""
    from syncworker.reconcile.groups import sides_for

    settings = pipeline.settings
    interval_s = settings.schedule.interval_s
    return {
        "schedule": settings.schedule.describe(),
        "source": pipeline.source.name,
        "sinks": [s.name for s in pipeline.sinks],
        "sync_interval_ms": None if interval_s is None else round(interval_s * 1000),
        "batch_size": settings.batch_size,
        "max_retries": settings.retry.attempts,
        "enable_auto_sync": settings.schedule.kind != "manual",
        "enable_discrepancy_detection": sides_for(pipeline) is not None
        and _count_check(pipeline) != "off",
    }


def _count_check(pipeline: Pipeline) -> str | None:
    """A grouped source's incremental count comparison (``groups.count_check``), if any."""
    groups = getattr(getattr(pipeline.source, "config", None), "groups", None)
    return getattr(groups, "count_check", None)


def last_sync_time(statuses: Iterable[dict[str, Any]]) -> str | None:
    """The newest run's end as the seed writes it (ISO 8601, UTC, milliseconds)."""
    newest = max((p["last_sync_at"] or 0 for p in statuses), default=0)
    if not newest:
        return None
    millis = int(newest * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(newest)) + f".{millis:03d}Z"


class SyncWorker:
    """The seed's worker over one pipeline of a config file (default: its first)."""

    def __init__(self, config_file: str | Path, pipeline: str | None = None) -> None:
        self.config = load_config(Path(config_file))
        self.pipeline_name = pipeline or next(iter(self.config.pipelines))
        self._engine: Engine | None = None

    @property
    def pipeline(self) -> Pipeline:
        if self._engine is None:
            raise RuntimeError("the sync worker is not started: await worker.start() first")
        return self._engine.pipeline(self.pipeline_name)

    async def start(self) -> None:
        """Start the engine: the pipeline runs on its schedule (an incremental sync at
        start-up reads every event never read). Safe to call twice."""
        if self._engine is not None:
            return
        state = state_store_from_url(self.config.app.state)
        engine = Engine(self.config.build(state, [self.pipeline_name]), state)
        await engine.start()
        self._engine = engine

    async def stop(self) -> None:
        """Stop: the sync under way finishes (or goes back), then everything is closed."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.stop()

    async def perform_full_sync(self) -> dict[str, Any]:
        """Full sync of every event (after the sync under way, if any); the run's record."""
        return (await self.pipeline.sync_now("full")).to_dict()

    async def perform_incremental_sync(self) -> dict[str, Any]:
        """Incremental sync: records modified since the last one, and every event stale for
        more than 10 minutes or whose count in Redis differs."""
        return (await self.pipeline.sync_now("incremental")).to_dict()

    async def force_sync_event(self, event_id: str) -> dict[str, Any]:
        """One event now, bypassing the staleness checks."""
        return (await self.pipeline.sync_now("force", str(event_id))).to_dict()

    async def check_discrepancies(
        self, *, repair: bool = False, ignore_recent_s: float | None = None
    ) -> dict[str, Any]:
        """The per-event discrepancy check (missing, extra, different ids); with ``repair``
        those ids are re-synced through the pipeline and checked again."""
        from syncworker.reconcile.groups import check_pipeline, sides_for

        pipeline = self.pipeline
        sides = sides_for(pipeline)
        if sides is None:
            raise RuntimeError(f"pipeline {pipeline.name!r} cannot be checked group by group")
        report = await check_pipeline(
            pipeline,
            sides,
            repair=repair,
            ignore_recent_s=ignore_recent_s,
            apply=lambda: pipeline.sync_now("incremental"),
        )
        return report.to_json()

    def get_status(self) -> dict[str, Any]:
        """The seed's status: ``is_running``, ``config``, ``stats``, ``last_sync_time``."""
        if self._engine is None:
            return {
                "is_running": False,
                "config": {},
                "stats": seed_stats([]),
                "last_sync_time": None,
            }
        status = self.pipeline.status()
        return {
            "is_running": bool(status["running"]),
            "config": seed_config(self.pipeline),
            "stats": seed_stats([status]),
            "last_sync_time": last_sync_time([status]),
        }
