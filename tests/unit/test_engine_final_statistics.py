"""The engine's final statistics on shutdown: one ``final_statistics`` event per pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.waiting import eventually

from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy, Schedule
from syncworker.core.engine import Engine
from syncworker.core.policies import BreakerPolicy
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySink, MemorySource


def settings(**overrides: Any) -> PipelineSettings:
    return PipelineSettings(
        batch_size=10,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=2, delay_s=0.001, max_delay_s=0.002, jitter=0),
        breaker=BreakerPolicy(delay_s=0.01, max_delay_s=0.05),
        **overrides,
    )


def pipeline(name: str, state: SqliteStateStore, keys: list[str], **sink: Any) -> Pipeline:
    queue = MemoryQueue([Record(key=k, data={"n": 1}) for k in keys])
    return Pipeline(
        name,
        MemorySource(queue, name=f"{name}-source"),
        [MemorySink(name=f"{name}-sink", **sink)],
        settings=settings(),
        state=state,
    )


def final(logs: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {e["pipeline"]: e for e in logs if e["event"] == "final_statistics"}


async def test_run_once_logs_each_pipelines_final_statistics(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "state.db")
    users = pipeline("users", state, ["a", "b", "c", "d"], reject_keys={"c"})
    orders = pipeline("orders", state, ["x"])
    engine = Engine([users, orders], state)
    with capture_logs() as logs:
        await engine.run_once()
    names = [e["event"] for e in logs]
    assert names.index("final_statistics") < names.index("engine_stopped")
    stats = final(logs)
    assert set(stats) == {"users", "orders"}
    figures = stats["users"]
    assert (figures["processed"], figures["synced"], figures["dead_lettered"]) == (4, 3, 1)
    assert (figures["errors"], figures["failed_batches"], figures["runs"]) == (1, 0, 1)
    assert figures["last_result"] == "success"
    assert figures["last_sync_at"] is not None and figures["last_duration_ms"] >= 0
    assert figures["uptime_s"] >= 0
    assert stats["orders"]["synced"] == 1 and stats["orders"]["errors"] == 0
    assert engine.final_stats["users"] == {
        k: v for k, v in figures.items() if k not in ("event", "pipeline", "log_level")
    }


async def test_stop_logs_final_statistics_with_failed_batches(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "state.db")
    down = pipeline("users", state, ["a"], down=True)
    down.settings = settings(schedule=Schedule.every(3600))
    engine = Engine([down], state)
    await engine.start()
    await eventually(lambda: down.status()["totals"]["failed_batches"] >= 1, "a failed batch")
    with capture_logs() as logs:
        await engine.stop()
    [figures] = final(logs).values()
    assert figures["synced"] == 0 and figures["failed_batches"] >= 1
    assert figures["errors"] == figures["failed_batches"]
    assert figures["last_result"] == "error"
    assert figures["consecutive_failures"] >= 1


@pytest.mark.parametrize("started", [None, 100.0])
def test_uptime_without_a_start_time_is_none_or_since_the_engine(started: float | None) -> None:
    from syncworker.core.engine import _final_statistics

    status = {
        "totals": {
            "processed": 0,
            "written": 0,
            "filtered": 0,
            "dead_lettered": 0,
            "failed_batches": 0,
            "runs": 0,
        },
        "started_at": None,
    }
    figures = _final_statistics(status, started, 160.0)
    assert figures["uptime_s"] == (None if started is None else 60.0)
    assert figures["kept_by_source"] == 0 and figures["last_sync_at"] is None
