"""A client-side request limiter: at most ``requests`` per ``per_s`` seconds per endpoint.

Zoho Creator allows 50 requests per minute per endpoint and answers 429 past it; waiting on
our side costs less than a refused request (which also counts against the daily quota). A
limit of 0 requests lifts the limiter (a fast local benchmark).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """A sliding window per endpoint key: ``acquire(key)`` returns once a request to ``key``
    may be sent, and says how long it waited. Coroutines of one event loop only."""

    def __init__(
        self,
        requests: int,
        per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.requests = requests
        self.per_s = per_s
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._sent: dict[str, deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.waits = 0
        self.waited_s = 0.0

    @property
    def enabled(self) -> bool:
        return self.requests > 0 and self.per_s > 0

    def delay_s(self, key: str) -> float:
        """How long a request to ``key`` would wait now (0 when it may go)."""
        if not self.enabled:
            return 0.0
        sent = self._window(key)
        if len(sent) < self.requests:
            return 0.0
        return max(0.0, sent[0] + self.per_s - self._clock())

    async def acquire(self, key: str) -> float:
        """Wait until a request to ``key`` fits the window, count it, return the seconds
        waited. Never raises but ``CancelledError``."""
        if not self.enabled:
            return 0.0
        lock = self._locks.setdefault(key, asyncio.Lock())
        waited = 0.0
        async with lock:
            while (delay := self.delay_s(key)) > 0:
                waited += delay
                await self._sleep(delay)  # type: ignore[misc]
            self._sent[key].append(self._clock())
        if waited:
            self.waits += 1
            self.waited_s += waited
        return waited

    def _window(self, key: str) -> deque[float]:
        sent = self._sent.setdefault(key, deque())
        horizon = self._clock() - self.per_s
        while sent and sent[0] <= horizon:
            sent.popleft()
        return sent
