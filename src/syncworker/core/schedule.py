"""When a pipeline runs: ``stream`` (continuously), ``every`` (an interval between the end of
one run and the start of the next, so runs never overlap), ``cron`` or ``manual``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from croniter import croniter

ScheduleKind = Literal["stream", "every", "cron", "manual"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """``interval_s`` is set for ``every``, ``cron`` (an expression) for ``cron``."""

    kind: ScheduleKind = "stream"
    interval_s: float | None = None
    cron: str | None = None
    run_at_start: bool = True

    @classmethod
    def stream(cls) -> Schedule:
        return cls("stream")

    @classmethod
    def every(cls, interval_s: float, *, run_at_start: bool = True) -> Schedule:
        if interval_s <= 0:
            raise ValueError("an 'every' schedule needs an interval > 0")
        return cls("every", interval_s=interval_s, run_at_start=run_at_start)

    @classmethod
    def at(cls, expression: str) -> Schedule:
        if not croniter.is_valid(expression):
            raise ValueError(f"not a cron expression: {expression!r}")
        return cls("cron", cron=expression, run_at_start=False)

    @classmethod
    def manual(cls) -> Schedule:
        return cls("manual", run_at_start=False)

    def describe(self) -> str:
        if self.kind == "every":
            return f"every {self.interval_s:g}s"
        if self.kind == "cron":
            return f"cron {self.cron}"
        return self.kind

    def delay_until_next_s(self, now: float | None = None) -> float | None:
        """Seconds from ``now`` (wall clock) to the next run, after one has just ended.

        None for ``manual`` (only ``sync_now`` starts a run) and ``stream`` (never idle for
        long). Cron ticks that passed while a run went on are skipped, never run late in a burst.
        """
        now = time.time() if now is None else now
        if self.kind == "every":
            assert self.interval_s is not None
            return self.interval_s
        if self.kind == "cron":
            assert self.cron is not None
            start = datetime.fromtimestamp(now, tz=UTC)
            next_at = croniter(self.cron, start).get_next(float)
            return max(0.0, float(next_at) - now)
        return None
