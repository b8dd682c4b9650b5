"""Recent activity of each pipeline, kept by the engine for the dashboard (``GET /history``).

A ring buffer per pipeline, fed by the ``batch_committed`` and ``batch_failed`` events: the
records moved per ``BUCKET_S`` seconds over the last ``BUCKETS`` buckets (15 minutes), the
records each sink wrote and refused since start, and the durations of the last
``LATENCY_SAMPLES`` batches. Memory is fixed by those sizes, whatever the traffic. A page
opened now shows the last 15 minutes at once, and its headline rate is taken over a minute,
not over the last second between two runs.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from syncworker.core.engine import Engine
from syncworker.core.pipeline import Pipeline

BUCKET_S = 5.0
# 15 minutes of 5 s buckets: long enough to see the last runs of an `every: 5m` pipeline.
BUCKETS = 180
# The headline rate: over a minute, so it does not read 0 between two batches.
RATE_WINDOW_S = 60.0
# Enough batches for a p95 that means something, few enough to follow a change quickly.
LATENCY_SAMPLES = 200


@dataclass(slots=True)
class _Bucket:
    start: float
    records: int = 0
    written: int = 0
    refused: int = 0
    batches: int = 0
    failed_batches: int = 0
    batch_s_total: float = 0.0
    batch_s_max: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        batches = self.batches + self.failed_batches
        return {
            "t": self.start,
            "records": self.records,
            "written": self.written,
            "refused": self.refused,
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "batch_ms_avg": round(self.batch_s_total / batches * 1000, 3) if batches else None,
            "batch_ms_max": round(self.batch_s_max * 1000, 3) if batches else None,
        }


@dataclass(slots=True)
class _PipelineHistory:
    buckets: deque[_Bucket] = field(default_factory=lambda: deque(maxlen=BUCKETS))
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    last_batch_at: float | None = None

    def bucket(self, at: float) -> _Bucket:
        start = math.floor(at / BUCKET_S) * BUCKET_S
        if self.buckets and self.buckets[-1].start == start:
            return self.buckets[-1]
        bucket = _Bucket(start)
        self.buckets.append(bucket)
        return bucket

    def sink(self, name: str) -> dict[str, int]:
        return self.sinks.setdefault(name, {"written": 0, "refused": 0})


class History:
    """The activity ring buffers of an engine's pipelines; see the module docstring."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._started_at = clock()
        self._pipelines: dict[str, _PipelineHistory] = {}
        for pipeline in engine.pipelines.values():
            self.attach(pipeline)

    def attach(self, pipeline: Pipeline) -> None:
        self._pipelines.setdefault(pipeline.name, _PipelineHistory())
        pipeline.on("batch_committed", self._on_batch)
        pipeline.on("batch_failed", self._on_failed)

    def _on_batch(self, event: dict[str, Any]) -> None:
        history = self._pipelines.setdefault(event["pipeline"], _PipelineHistory())
        now = self._clock()
        bucket = history.bucket(now)
        duration_s = float(event.get("duration_s") or 0.0)
        bucket.records += event["records"]
        bucket.batches += 1
        bucket.batch_s_total += duration_s
        bucket.batch_s_max = max(bucket.batch_s_max, duration_s)
        written = event.get("written", {})
        refused = event.get("refused", {})
        for sink in {*written, *refused}:
            counts = history.sink(sink)
            wrote = sum(written.get(sink, {}).values())
            counts["written"] += wrote
            counts["refused"] += refused.get(sink, 0)
            bucket.written += wrote
            bucket.refused += refused.get(sink, 0)
        history.latencies_s.append(duration_s)
        history.last_batch_at = now

    def _on_failed(self, event: dict[str, Any]) -> None:
        history = self._pipelines.setdefault(event["pipeline"], _PipelineHistory())
        bucket = history.bucket(self._clock())
        duration_s = float(event.get("duration_s") or 0.0)
        bucket.failed_batches += 1
        bucket.batch_s_total += duration_s
        bucket.batch_s_max = max(bucket.batch_s_max, duration_s)

    def snapshot(self) -> dict[str, Any]:
        """``{"bucket_s", "now", "pipelines": {name: ...}}``, each pipeline with ``points``
        (every bucket of the window, oldest first, empty ones included), ``rate_per_s``,
        ``sinks`` (written and refused since start), ``batch_ms`` and ``last_batch_at``."""
        now = self._clock()
        return {
            "bucket_s": BUCKET_S,
            "now": now,
            "pipelines": {name: self._describe(h, now) for name, h in self._pipelines.items()},
        }

    def _describe(self, history: _PipelineHistory, now: float) -> dict[str, Any]:
        current = math.floor(now / BUCKET_S) * BUCKET_S
        first = max(
            current - (BUCKETS - 1) * BUCKET_S, math.floor(self._started_at / BUCKET_S) * BUCKET_S
        )
        by_start = {b.start: b for b in history.buckets}
        points = []
        start = first
        while start <= current:
            points.append((by_start.get(start) or _Bucket(start)).to_dict())
            start += BUCKET_S
        window_s = min(RATE_WINDOW_S, max(now - self._started_at, BUCKET_S))
        recent = sum(b.records for b in history.buckets if b.start + BUCKET_S > now - window_s)
        return {
            "points": points,
            "rate_per_s": round(recent / window_s, 3),
            "rate_window_s": round(window_s, 3),
            "sinks": {name: dict(counts) for name, counts in history.sinks.items()},
            "batch_ms": _latency(history.latencies_s),
            "last_batch_at": history.last_batch_at,
        }


def _latency(samples: deque[float]) -> dict[str, Any] | None:
    if not samples:
        return None
    ordered = sorted(samples)

    def at(share: float) -> float:
        # Nearest rank: the smallest sample with at least this share of samples at or below.
        return round(ordered[max(0, math.ceil(share * len(ordered)) - 1)] * 1000, 3)

    return {
        "last": round(samples[-1] * 1000, 3),
        "p50": at(0.50),
        "p95": at(0.95),
        "max": round(ordered[-1] * 1000, 3),
        "count": len(ordered),
    }
