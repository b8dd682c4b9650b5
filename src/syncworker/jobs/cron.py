"""Cron: each due slot of each entry enqueued exactly once, however many schedulers run.

Every scheduler computes the latest slot at or before ``now`` and hands it to
``backend.enqueue_cron``, an atomic compare-and-set of the entry's last slot plus the
enqueue: the first caller for a slot enqueues, the others change nothing. Only the latest
slot is ever offered, so after all schedulers were down a missed run happens once, not once
per missed slot. An entry the backend has never run starts with the slots after the
scheduler started (a first start does not fire the past).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from croniter import croniter

from syncworker.errors import ConfigError
from syncworker.jobs.backoff import Backoff
from syncworker.jobs.enqueue import Jobs

log = structlog.get_logger("syncworker.jobs")

MAX_SLEEP_S = 30.0
"""A scheduler re-reads the clock at least this often (clock jumps, suspended machines)."""
_BACKOFF = Backoff(base_s=0.5, factor=2, max_s=30.0, jitter=0.2)
_DST_MARGIN = timedelta(hours=3)
"""Longer than any clock change: within it of a change, slots are computed the careful way."""


@dataclass(slots=True)
class CronEntry:
    """``task`` with ``payload`` on ``schedule`` (five-field cron or an alias such as
    ``@hourly``, ``@daily``, ``@weekly``), read in ``timezone``."""

    name: str
    schedule: str
    task: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    timezone: str = "UTC"
    tz: ZoneInfo = field(init=False, repr=False)
    # Hour field "*": runs in both passes of an hour the clock goes back over.
    every_hour: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("cron entry name is empty")
        if not croniter.is_valid(self.schedule):
            raise ConfigError(f"cron entry {self.name!r}: invalid schedule {self.schedule!r}")
        try:
            self.tz = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"cron entry {self.name!r}: unknown time zone {self.timezone!r}"
            ) from exc
        self.every_hour = croniter(self.schedule).expanded[1] == ["*"]

    def latest_slot(self, now: float) -> datetime:
        """The latest slot at or before ``now`` (epoch s)."""
        return self._at(max(t for t in self._instants_near(now) if t <= now))

    def next_slot(self, now: float) -> datetime:
        """The first slot strictly after ``now``."""
        return self._at(min(t for t in self._instants_near(now) if t > now))

    def _at(self, instant: float) -> datetime:
        return datetime.fromtimestamp(instant, self.tz)

    def _instants_near(self, now: float) -> list[float]:
        """Slot instants (epoch s) around ``now``: at least the latest at or before it and
        the first after it.

        The schedule is matched on the local wall clock (naive, so croniter sees no time
        zone: its own DST handling repeats a fixed-hour job and drops slots when the clock
        goes back). A wall time that happens twice (clock back) is a slot once, at its first
        pass, unless the entry runs every hour, which runs in both passes; a wall time that
        does not exist (clock forward) maps to the instant with the offset before the change,
        so its job runs once, after the jump.
        """
        wall = datetime.fromtimestamp(now, self.tz).replace(tzinfo=None)
        if not self._changes_near(now):
            # The previous slot may be days back, across a change: its own offset counts.
            prev = croniter(self.schedule, wall + timedelta(microseconds=1)).get_prev(datetime)
            following = croniter(self.schedule, wall).get_next(datetime)
            return self._wall_instants(prev) + self._wall_instants(following)
        # Near a clock change: every wall slot from a margin before to a margin after.
        found: list[float] = []
        first: datetime = croniter(self.schedule, wall - _DST_MARGIN).get_prev(datetime)
        found += self._wall_instants(first)
        ahead = croniter(self.schedule, first)
        while True:
            slot: datetime = ahead.get_next(datetime)
            found += self._wall_instants(slot)
            if slot > wall + _DST_MARGIN and max(found) > now:
                return found

    def _changes_near(self, now: float) -> bool:
        margin_s = _DST_MARGIN.total_seconds()
        offsets = {
            datetime.fromtimestamp(now + delta, self.tz).utcoffset()
            for delta in (-margin_s, 0.0, margin_s)
        }
        return len(offsets) > 1

    def _wall_instants(self, wall: datetime) -> list[float]:
        first = wall.replace(tzinfo=self.tz, fold=0).timestamp()
        second = wall.replace(tzinfo=self.tz, fold=1).timestamp()
        if second > first and self.every_hour:  # a wall time that happens twice
            return [first, second]
        return [first]


class CronScheduler:
    """Enqueues the due slots of ``entries`` through ``jobs`` (see the module)."""

    def __init__(
        self,
        jobs: Jobs,
        entries: Sequence[CronEntry],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [entry.name for entry in entries]
        if len(set(names)) != len(names):
            raise ConfigError(f"cron entry names repeat: {sorted(names)}")
        for entry in entries:
            jobs._task(entry.task)  # an unknown task is a configuration error at start
        self.jobs = jobs
        self.entries = list(entries)
        self._clock = clock
        self._started_at: float | None = None
        self._known: set[str] = set()  # entries the backend has run before
        # The slot each entry was last offered with success: the backend's last slot is at
        # least that, so offering it again changes nothing (one round trip saved per entry).
        self._offered: dict[str, float] = {}

    def next_runs(self, now: float | None = None) -> list[tuple[CronEntry, datetime]]:
        """Each entry with its next slot after ``now`` (in the entry's time zone)."""
        at = self._clock() if now is None else now
        return [(entry, entry.next_slot(at)) for entry in self.entries]

    async def start(self, now: float | None = None) -> None:
        """Remember when this scheduler started and which entries ran before (once)."""
        if self._started_at is None:
            self._known = set(await self.jobs.backend.cron_state())
            self._started_at = self._clock() if now is None else now

    async def tick(self, now: float | None = None) -> list[str]:
        """Offer every entry's latest slot; returns the ids of the jobs this call enqueued."""
        at = self._clock() if now is None else now
        await self.start(at)
        assert self._started_at is not None
        enqueued: list[str] = []
        for entry in self.entries:
            slot = entry.latest_slot(at).timestamp()
            if slot < self._started_at and entry.name not in self._known:
                continue  # first start ever: the past is not fired
            if self._offered.get(entry.name) == slot:
                continue
            job = self.jobs.new_job(
                entry.task,
                dict(entry.payload),
                queue=entry.queue,
                run_at=slot,
                unique_key=f"cron:{entry.name}:{slot:.0f}",
            )
            job_id = await self.jobs.backend.enqueue_cron(entry.name, slot, job)
            self._known.add(entry.name)
            self._offered[entry.name] = slot
            if job_id is not None:
                enqueued.append(job_id)
                log.info(
                    "cron_enqueued",
                    entry=entry.name,
                    slot=datetime.fromtimestamp(slot, UTC).isoformat(),
                    job_id=job_id,
                )
        return enqueued

    async def run(self, stop: asyncio.Event) -> None:
        """Tick at every slot until ``stop``; backend errors are logged and retried."""
        failures = 0
        while not stop.is_set():
            try:
                await self.tick()
                failures = 0
                delay_s = self._until_next()
            except Exception as exc:
                failures += 1
                log.warning(
                    "cron_tick_failed", error=f"{type(exc).__name__}: {exc}", failures=failures
                )
                delay_s = _BACKOFF.delay_s(failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)

    def _until_next(self) -> float:
        now = self._clock()
        if not self.entries:
            return MAX_SLEEP_S
        soonest = min(slot.timestamp() for _, slot in self.next_runs(now))
        return max(0.0, min(MAX_SLEEP_S, soonest - now))
