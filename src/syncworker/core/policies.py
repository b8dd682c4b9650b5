"""Retry and circuit-breaker policies: how long to wait before trying again."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``attempts`` tries in all, the n-th retry after
    ``min(delay_s * factor**(n-1), max_delay_s)`` seconds, spread by +/- ``jitter`` (a fraction)."""

    attempts: int = 3
    delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 30.0
    jitter: float = 0.1

    def delay_for(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 = the first retry)."""
        base = min(self.delay_s * self.factor ** max(retry_number - 1, 0), self.max_delay_s)
        if self.jitter <= 0:
            return base
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """How long a pipeline pauses after a whole-batch failure: doubling from ``delay_s``
    up to ``max_delay_s`` while failures continue, reset by the first success."""

    delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0


class CircuitBreaker:
    """Closed: work flows. Open: the pipeline claims nothing until the pause ends.

    After the pause the breaker is half-open: one batch goes through as the probe; success
    closes it, failure opens it again for a longer pause.
    """

    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._failures = 0
        self._open_until = 0.0
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._failures > 0

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def open_until(self) -> float | None:
        """Monotonic time the current pause ends, or None when closed."""
        return self._open_until if self._failures else None

    def trip(self) -> float:
        """Record a whole-batch failure; returns the pause in seconds."""
        self._failures += 1
        pause_s = min(
            self._policy.delay_s * self._policy.factor ** (self._failures - 1),
            self._policy.max_delay_s,
        )
        self._open_until = time.monotonic() + pause_s
        return pause_s

    def succeed(self) -> None:
        self._failures = 0
        self._open_until = 0.0
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_ready(self, stop: asyncio.Event) -> None:
        """Sleep out the pause (returns early when ``stop`` is set)."""
        remaining_s = self._open_until - time.monotonic()
        if self._failures == 0 or remaining_s <= 0:
            return
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({stop_wait}, timeout=remaining_s)
        finally:
            stop_wait.cancel()
