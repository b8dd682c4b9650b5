"""The REST source's client-side limiter, on a fake clock (no real waiting)."""

from __future__ import annotations

from syncworker.connectors.http.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.slept.append(delay_s)
        self.now += delay_s


async def test_the_request_past_the_limit_waits_for_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert await limiter.acquire("report/a") == 0
        clock.now += 1
    waited = await limiter.acquire("report/a")
    assert waited == 57.0  # the first of the three leaves the window at t0 + 60
    assert clock.slept == [57.0]
    assert (limiter.waits, limiter.waited_s) == (1, 57.0)


async def test_each_endpoint_has_its_own_window() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 60.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire("report/a")
    assert await limiter.acquire("report/b") == 0
    assert limiter.delay_s("report/a") == 60.0
    assert limiter.delay_s("report/c") == 0


async def test_zero_requests_lifts_the_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(0, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        await limiter.acquire("report/a")
    assert clock.slept == [] and not limiter.enabled
