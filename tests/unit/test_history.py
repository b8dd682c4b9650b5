"""The engine's activity history for the dashboard: a bounded ring buffer fed by batch events."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from syncworker.core import Pipeline, PipelineSettings
from syncworker.observe.history import BUCKET_S, BUCKETS, History
from syncworker.testing import MemoryQueue, MemorySink, MemorySource

T0 = 1_750_000_000.0  # a multiple of BUCKET_S


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def batch(records: int, duration_s: float = 0.01, refused: int = 0) -> dict[str, Any]:
    return {
        "pipeline": "chat",
        "records": records,
        "streams": {"in": records},
        "written": {"jsonl": {"in": records}, "sqlite": {"in": records - refused}},
        "refused": {"jsonl": 0, "sqlite": refused},
        "dead_lettered": {"in": refused} if refused else {},
        "kept_by_source": {},
        "filtered": 0,
        "duration_s": duration_s,
    }


def history_of(clock: Clock) -> tuple[History, Pipeline]:
    pipeline = Pipeline(
        "chat", MemorySource(MemoryQueue()), [MemorySink()], settings=PipelineSettings()
    )
    return History(SimpleNamespace(pipelines={"chat": pipeline}), clock=clock), pipeline  # type: ignore[arg-type]


async def test_batches_fill_buckets_and_empty_buckets_are_points_too() -> None:
    clock = Clock()
    history, pipeline = history_of(clock)
    await pipeline.events.emit("batch_committed", batch(10, 0.02))
    clock.now += 1
    await pipeline.events.emit("batch_committed", batch(5, 0.04, refused=2))
    clock.now = T0 + 3 * BUCKET_S + 1  # two quiet buckets, then now
    await pipeline.events.emit("batch_failed", {"pipeline": "chat", "records": 3, "duration_s": 1})
    chat = history.snapshot()["pipelines"]["chat"]
    assert [p["records"] for p in chat["points"]] == [15, 0, 0, 0]
    assert [p["failed_batches"] for p in chat["points"]] == [0, 0, 0, 1]
    assert chat["points"][0]["batch_ms_max"] == 40.0 and chat["points"][1]["batch_ms_avg"] is None
    assert chat["sinks"] == {
        "jsonl": {"written": 15, "refused": 0},
        "sqlite": {"written": 13, "refused": 2},
    }
    assert chat["batch_ms"] == {"last": 40.0, "p50": 20.0, "p95": 40.0, "max": 40.0, "count": 2}
    assert chat["last_batch_at"] == T0 + 1
    # the headline is over the last minute (here: since start, 16 s), not the last second
    assert chat["rate_per_s"] == round(15 / 16, 3)


async def test_memory_is_bounded_by_the_window_not_the_traffic() -> None:
    clock = Clock()
    history, pipeline = history_of(clock)
    for _ in range(BUCKETS * 3):
        await pipeline.events.emit("batch_committed", batch(1))
        clock.now += BUCKET_S
    chat = history.snapshot()["pipelines"]["chat"]
    assert len(chat["points"]) == BUCKETS
    assert chat["points"][-1]["t"] == T0 + BUCKETS * 3 * BUCKET_S
    assert chat["batch_ms"]["count"] == 200  # the last LATENCY_SAMPLES batches
