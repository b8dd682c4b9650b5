"""Retry delays: exponential with jitter (the seed's 3 retries after 5 s, 10 s, 20 s)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number ``n`` (1 for the first retry): ``base_s * factor**(n-1)``,
    capped at ``max_s``, then moved by up to ``jitter`` (a fraction) either way so that jobs
    failing together do not come back together."""

    base_s: float = 5.0
    factor: float = 2.0
    max_s: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("backoff base_s and max_s must be >= 0")
        if self.factor < 1:
            raise ValueError(f"backoff factor {self.factor} must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter {self.jitter} must be within 0..1")

    def nominal_s(self, retry: int) -> float:
        """The delay before retry ``retry`` without jitter."""
        exponent = max(0, retry - 1)
        # Past ~1,000 doublings the float overflows; the cap is reached long before.
        if exponent > 1000:
            return self.max_s
        return float(min(self.max_s, self.base_s * self.factor**exponent))

    def delay_s(self, retry: int, rng: random.Random | None = None) -> float:
        """The delay before retry ``retry`` (1-based), jittered."""
        nominal = self.nominal_s(retry)
        spread = nominal * self.jitter
        if spread == 0:
            return nominal
        return max(0.0, nominal + (rng or random).uniform(-spread, spread))
