"""Schedules: every (never overlapping), cron, manual and sync_now; shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest
import structlog
from tests.waiting import eventually

from syncworker.core import Pipeline, PipelineSettings, Schedule
from syncworker.core.schedule import Schedule as ScheduleType
from syncworker.testing import MemoryQueue, MemorySink, MemorySource


def make(
    queue: MemoryQueue, sink: MemorySink, schedule: ScheduleType, **overrides: Any
) -> tuple[Pipeline, MemorySource]:
    source = MemorySource(queue)
    settings = PipelineSettings(batch_size=10, max_wait_s=0.05, schedule=schedule, **overrides)
    return Pipeline("p", source, [sink], settings=settings), source


async def test_every_never_overlaps_and_waits_the_interval_after_each_run() -> None:
    queue = MemoryQueue()
    queue.put_many(5)
    sink = MemorySink(write_delay_s=0.15)  # each run takes ~0.15 s, longer than the interval
    pipeline, _ = make(queue, sink, Schedule.every(0.1))
    runs: list[tuple[float, float]] = []

    def on_success(payload: dict[str, Any]) -> None:
        end = time.monotonic()
        runs.append((end - payload["duration_ms"] / 1000, end))
        queue.put_many(1, start=100 + len(runs))

    pipeline.on("sync_success", on_success)
    await pipeline.start()
    await eventually(lambda: len(runs) >= 3, "three runs")
    await pipeline.stop()
    assert len(runs) >= 3
    for (_, previous_end), (next_start, _) in itertools.pairwise(runs):
        assert next_start >= previous_end + 0.09  # the interval counts from the end of a run
    assert sink.max_concurrent == 1


async def test_every_warns_when_a_run_takes_most_of_its_interval() -> None:
    queue = MemoryQueue()
    queue.put_many(1)
    pipeline, _ = make(queue, MemorySink(write_delay_s=0.2), Schedule.every(0.25))
    with structlog.testing.capture_logs() as logs:
        await pipeline.start()
        await eventually(lambda: _logged(logs, "run_near_interval"), "the warning")
        await pipeline.stop()
    warnings = [e for e in logs if e["event"] == "run_near_interval"]
    assert warnings and "raise the interval or the batch size" in warnings[0]["recommendation"]


def _logged(logs: list[dict[str, Any]], event: str) -> bool:
    return any(e["event"] == event for e in logs)


def _running(pipeline: Pipeline) -> bool:
    return bool(pipeline.status()["state"] == "running")


def test_cron_next_delay_follows_the_expression() -> None:
    schedule = Schedule.at("*/5 * * * *")
    # 12:01:30 -> next tick 12:05:00
    now = 1_700_000_000 - (1_700_000_000 % 300) + 90
    assert schedule.delay_until_next_s(now) == pytest.approx(210)
    with pytest.raises(ValueError, match="not a cron expression"):
        Schedule.at("every five minutes")


async def test_cron_schedule_does_not_run_at_start() -> None:
    queue = MemoryQueue()
    queue.put_many(3)
    sink = MemorySink()
    pipeline, _ = make(queue, sink, Schedule.at("0 0 1 1 *"))
    await pipeline.start()
    await eventually(lambda: _running(pipeline), "the pipeline to run")
    await asyncio.sleep(0.2)  # a window for a run at start, which must not happen
    assert sink.rows == {}
    run = await pipeline.sync_now()
    await pipeline.stop()
    assert run.processed == 3 and len(sink.rows) == 3


async def test_manual_schedule_runs_only_on_sync_now() -> None:
    queue = MemoryQueue()
    queue.put_many(4)
    sink = MemorySink()
    pipeline, _ = make(queue, sink, Schedule.manual())
    await pipeline.start()
    await eventually(lambda: _running(pipeline), "the pipeline to run")
    await asyncio.sleep(0.2)  # a window for a run at start, which must not happen
    assert sink.writes == []
    first = await pipeline.sync_now()
    queue.put_many(2, start=10)
    second = await pipeline.sync_now()
    await pipeline.stop()
    assert (first.processed, second.processed) == (4, 2)
    assert pipeline.status()["totals"]["runs"] == 2


async def test_sync_now_in_stream_mode_returns_a_run_including_earlier_records() -> None:
    queue = MemoryQueue()
    sink = MemorySink()
    pipeline, _ = make(queue, sink, Schedule.stream())
    await pipeline.start()
    queue.put_many(7)
    run = await asyncio.wait_for(pipeline.sync_now(), timeout=5)
    await pipeline.stop()
    assert len(sink.rows) == 7
    assert run.finished_at >= run.started_at


async def test_full_sync_without_scan_is_refused() -> None:
    from syncworker.errors import UnsupportedOperation

    pipeline, _ = make(MemoryQueue(), MemorySink(), Schedule.manual())
    await pipeline.start()
    with pytest.raises(UnsupportedOperation, match="cannot do a full sync"):
        await pipeline.sync_now("full")
    await pipeline.stop()


async def test_shutdown_finishes_in_flight_batches_within_the_timeout() -> None:
    queue = MemoryQueue()
    queue.put_many(20)
    sink = MemorySink(write_delay_s=0.3)
    pipeline, source = make(queue, sink, Schedule.stream())
    await pipeline.start()
    await eventually(lambda: sink.concurrent, "batches in flight, mid-write")
    await pipeline.stop(timeout_s=5)
    assert len(source.acked) == 20 or queue.ready + len(source.acked) == 20
    assert queue.in_flight == 0
    assert len(sink.rows) == len(source.acked)
    assert source.closed and sink.closed


async def test_shutdown_past_the_timeout_returns_in_flight_batches() -> None:
    queue = MemoryQueue()
    queue.put_many(20)
    sink = MemorySink(write_delay_s=10)
    pipeline, source = make(queue, sink, Schedule.stream())
    await pipeline.start()
    await eventually(lambda: sink.concurrent, "a batch in flight")
    # the sink would take 10 s: stop() must give up on it after its 0.2 s timeout
    await asyncio.wait_for(pipeline.stop(timeout_s=0.2), timeout=5)
    assert source.acked == []
    assert queue.ready == 20 and queue.in_flight == 0
    claim = queue.claim(20)
    assert claim is not None and [r.key for r in claim[1]] == [str(i) for i in range(20)]


async def test_stop_interrupts_retry_backoff_and_rolls_back() -> None:
    from syncworker.core import RetryPolicy

    queue = MemoryQueue()
    queue.put_many(3)
    sink = MemorySink(down=True)
    pipeline, source = make(
        queue, sink, Schedule.stream(), retry=RetryPolicy(attempts=5, delay_s=30, jitter=0)
    )
    await pipeline.start()
    await eventually(lambda: sink.writes, "a failed write, then the backoff")
    # the backoff would sleep 30 s: stop() must interrupt it, not wait for it
    await asyncio.wait_for(pipeline.stop(timeout_s=10), timeout=5)
    assert queue.ready == 3 and source.acked == []


def test_logging_is_quiet_for_tests() -> None:
    # structlog's default logger prints to stdout; the suite keeps it at warning level.
    assert logging.getLogger().level >= 0
