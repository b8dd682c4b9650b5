"""``EngineMetrics.backlog``: a count is reused for BACKLOG_TTL_S, and for a hundred times as
long as it took when counting is slow, so a polled API cannot spend the source's time."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

from syncworker.observe.metrics import BACKLOG_TTL_S, COUNT_SHARE, EngineMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting_pipeline(clock: Clock, cost_s: float) -> Any:
    calls: list[float] = []

    async def backlog() -> int:
        calls.append(clock.now)
        clock.now += cost_s  # the count takes this long on the source's connection
        return 42

    return SimpleNamespace(name="p", backlog=backlog, calls=calls)


def metrics(clock: Clock) -> EngineMetrics:
    engine: Any = SimpleNamespace(pipelines={}, services=[])
    built = EngineMetrics(engine)
    built.clock = clock
    return built


async def counts_over(cost_s: float, seconds: float, step_s: float = 0.5) -> list[float]:
    clock = Clock()
    pipeline = counting_pipeline(clock, cost_s)
    m = metrics(clock)
    end = clock.now + seconds
    while clock.now < end:
        assert await m.backlog(pipeline) == 42
        clock.now += step_s
    return pipeline.calls  # type: ignore[no-any-return]


async def test_a_quick_count_is_reused_for_the_ttl() -> None:
    calls = await counts_over(cost_s=0.001, seconds=60)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) >= 10 and all(BACKLOG_TTL_S <= gap < BACKLOG_TTL_S + 1 for gap in gaps)


async def test_a_slow_count_is_reused_a_hundred_times_as_long() -> None:
    cost = 0.2  # a million queued rows
    calls = await counts_over(cost_s=cost, seconds=120)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps and all(gap >= cost / COUNT_SHARE for gap in gaps)
    assert sum(cost for _ in calls) <= COUNT_SHARE * 120 + cost  # a hundredth of the time
