"""Issue 12: cron with three schedulers over a simulated weekend, on SQLite, PostgreSQL and
Redis: every slot is enqueued and run exactly once.

The seed's schedule (hourly; daily at 00:00, 01:00, 02:00, 03:00 and 04:00; every 6 h; every
15 min; every 5 min; weekly on Sunday), two entries read in other time zones (Europe/Paris,
Asia/Ho_Chi_Minh). The clock is the test's: Saturday in coarse steps (10 to 50 min, so several
slots pass between ticks and only the latest may run), Sunday in fine steps (1 to 4.9 min); at
each step a random subset of the three schedulers ticks, in random order. On Sunday everything
is down for 2 h (01:30 to 03:30 UTC); three fresh schedulers take over on return and each
missed entry runs once, for its latest slot, not once per missed slot.

The expected slots come from an evaluator of the five cron fields written here, independent of
croniter: for each entry, the latest slot at or before each tick time.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncworker.jobs import CronEntry, CronScheduler, Jobs, QueueSettings, TaskRegistry
from syncworker.queue.base import JobState
from tests.conformance.workers import WorkerHarness
from tests.integration.conftest import pg_url, redis_prefix
from tests.waiting import eventually

__all__ = ["pg_url", "redis_prefix"]

pytestmark = pytest.mark.integration

# (name, schedule, time zone): the seed's "Scheduled Jobs (Node-Cron)".
SCHEDULE = [
    ("stories", "0 * * * *", "UTC"),
    ("sessions", "0 0 * * *", "UTC"),
    ("messages", "0 1 * * *", "UTC"),
    ("temp_files", "0 2 * * *", "UTC"),
    ("db_maintenance", "0 3 * * *", "UTC"),
    ("prekeys", "0 4 * * *", "Europe/Paris"),  # 03:00 UTC in December
    ("user_stats", "0 */6 * * *", "UTC"),
    ("websockets", "*/15 * * * *", "UTC"),
    ("health", "*/5 * * * *", "UTC"),
    ("orphaned_media", "0 3 * * 0", "Asia/Ho_Chi_Minh"),  # Sunday 03:00 there: Sat 20:00 UTC
]
START = datetime(2026, 12, 4, 23, 58, tzinfo=UTC)  # Friday night
SUNDAY = datetime(2026, 12, 6, tzinfo=UTC)
DOWN = (SUNDAY + timedelta(hours=1, minutes=30), SUNDAY + timedelta(hours=3, minutes=30))
END = datetime(2026, 12, 7, 0, 10, tzinfo=UTC)


def _field(spec: str, value: int) -> bool:
    if spec == "*":
        return True
    if spec.startswith("*/"):
        return value % int(spec[2:]) == 0
    return value == int(spec)


def fires(schedule: str, tz: str, at: datetime) -> bool:
    """Whether ``schedule`` (minute hour day month weekday, as used above) fires at ``at``."""
    minute, hour, day, month, weekday = schedule.split()
    local = at.astimezone(ZoneInfo(tz))
    cron_weekday = (local.weekday() + 1) % 7  # cron: 0 is Sunday
    return (
        _field(minute, local.minute)
        and _field(hour, local.hour)
        and _field(day, local.day)
        and _field(month, local.month)
        and _field(weekday, cron_weekday)
    )


def slots(schedule: str, tz: str) -> list[float]:
    """Every slot of ``schedule`` from START to END (epoch s), in order."""
    found, at = [], START.replace(second=0)
    while at <= END:
        if fires(schedule, tz, at):
            found.append(at.timestamp())
        at += timedelta(minutes=1)
    return found


def tick_times(rng: random.Random) -> list[float]:
    times, at = [], START.timestamp()
    while at < END.timestamp():
        if at < SUNDAY.timestamp():  # Saturday: coarse, but Sunday starts with a fine tick
            at = min(at + rng.uniform(600, 3000), SUNDAY.timestamp() + 20)
        else:
            at += rng.uniform(60, 294)
        if not DOWN[0].timestamp() <= at < DOWN[1].timestamp():
            times.append(at)
    return times


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkerHarness]:
    built = WorkerHarness(request.param, request, tmp_path)
    try:
        yield built
    finally:
        await built.close()


@pytest.mark.timeout(300)
async def test_three_schedulers_over_a_simulated_weekend_run_every_slot_once(
    harness: WorkerHarness,
) -> None:
    rng = random.Random(12)
    registry, ran = TaskRegistry(), Counter[tuple[str, float]]()

    @registry.task("cron_job", queue="cleanup")
    async def cron_job(payload: Any, ctx: Any) -> None:
        ran[(payload["entry"], ctx.job.run_at)] += 1

    entries = [
        CronEntry(name, schedule, "cron_job", {"entry": name}, timezone=tz)
        for name, schedule, tz in SCHEDULE
    ]
    clock = harness.clock

    def at(moment: float) -> None:
        clock.offset_s = 0.0
        clock.offset_s = moment - clock()

    async def schedulers(moment: float) -> list[CronScheduler]:
        built = []
        for _ in range(3):
            jobs = Jobs(await harness.new(), registry, clock=clock)
            scheduler = CronScheduler(jobs, entries, clock=clock)
            await scheduler.start(moment)
            built.append(scheduler)
        return built

    at(START.timestamp())
    running = await schedulers(START.timestamp())
    restarted = False
    ticked: list[float] = []
    for moment in tick_times(rng):
        if moment >= DOWN[1].timestamp() and not restarted:
            running, restarted = await schedulers(moment), True  # all came back: new processes
        at(moment)
        chosen = [s for s in running if rng.random() < 0.6] or [rng.choice(running)]
        rng.shuffle(chosen)
        for scheduler in chosen:
            await scheduler.tick(moment)
        ticked.append(moment)

    expected: set[tuple[str, float]] = set()
    for name, schedule, tz in SCHEDULE:
        entry_slots = slots(schedule, tz)
        for moment in ticked:
            index = bisect.bisect_right(entry_slots, moment) - 1
            if index >= 0:
                expected.add((name, entry_slots[index]))

    backend = await harness.new()
    rows = await backend.list_jobs(queue="cleanup", limit=10_000)
    enqueued = Counter((row.payload["entry"], row.run_at) for row in rows)
    assert sorted(enqueued) == sorted(expected)
    assert set(enqueued.values()) == {1}
    by_entry = Counter(name for name, _ in enqueued)
    # The outage: from the last tick before it to the first after, each entry with slots in
    # that span ran once (its latest), not once per missed slot.
    before = max(t for t in ticked if t < DOWN[0].timestamp())
    after = min(t for t in ticked if t >= DOWN[1].timestamp())
    down = {name: [s for s in slots(sch, tz) if before < s <= after] for name, sch, tz in SCHEDULE}
    caught_up = Counter(name for name, slot in enqueued if before < slot <= after)
    assert caught_up == {name: 1 for name, missed in down.items() if missed}
    assert {"temp_files", "db_maintenance", "prekeys", "stories"} <= set(caught_up)
    assert len(down["health"]) >= 24 and len(down["websockets"]) >= 8
    # Sunday in fine steps: every five-minute slot to Monday 00:10 (291) but the missed ones.
    sunday = [s for n, s in enqueued if n == "health" and s >= SUNDAY.timestamp()]
    assert len(sunday) == 291 - len(down["health"]) + 1
    assert by_entry["orphaned_media"] == 1 and by_entry["prekeys"] == 2

    # Three workers run what was enqueued: each slot once.
    at(END.timestamp() + 60)
    for _ in range(3):
        await harness.start(registry, {"cleanup": QueueSettings(concurrency=4)})

    async def all_completed() -> bool:
        counts = (await backend.counts())["cleanup"]
        return counts[JobState.COMPLETED] == len(rows)

    await eventually(all_completed, f"{len(rows)} cron jobs completed", timeout_s=60)
    assert ran == enqueued


def _every(start: datetime, end: datetime, step: timedelta) -> list[float]:
    found, at = [], start
    while at <= end:
        found.append(at.timestamp())
        at += step
    return found


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# Europe/Paris days with a clock change: (first local midnight, next local midnight) in UTC and
# the expected slots. Fall back (2026-10-25, 25 h): 02:00-03:00 happens twice; a job at a fixed
# hour runs once (the first pass), one on every hour runs in both passes. Spring forward
# (2026-03-29, 23 h): 02:00-03:00 does not exist; a job set in it runs once, an hour later by
# the winter offset.
DST_DAYS = {
    "fall_back": (
        _utc(2026, 10, 24, 22),
        _utc(2026, 10, 25, 23),
        {
            "quarter": _every(
                _utc(2026, 10, 24, 22), _utc(2026, 10, 25, 23), timedelta(minutes=15)
            ),
            "hourly": _every(_utc(2026, 10, 24, 22), _utc(2026, 10, 25, 23), timedelta(hours=1)),
            "two": [_utc(2026, 10, 25, 0).timestamp()],
            "two_thirty": [_utc(2026, 10, 25, 0, 30).timestamp()],
        },
    ),
    "spring_forward": (
        _utc(2026, 3, 28, 23),
        _utc(2026, 3, 29, 22),
        {
            "quarter": _every(_utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22), timedelta(minutes=15)),
            "hourly": _every(_utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22), timedelta(hours=1)),
            "two": [_utc(2026, 3, 29, 1).timestamp()],
            "two_thirty": [_utc(2026, 3, 29, 1, 30).timestamp()],
        },
    ),
}


@pytest.mark.parametrize("day", sorted(DST_DAYS))
async def test_a_clock_change_day_runs_each_slot_once_and_loses_none(
    harness: WorkerHarness, day: str
) -> None:
    first, last, expected = DST_DAYS[day]
    registry = TaskRegistry()
    registry.task("cron_job", queue="cleanup")(lambda payload: None)
    schedules = {"quarter": "*/15 * * * *", "hourly": "0 * * * *", "two": "0 2 * * *"}
    schedules["two_thirty"] = "30 2 * * *"
    entries = [
        CronEntry(name, schedule, "cron_job", {"entry": name}, timezone="Europe/Paris")
        for name, schedule in schedules.items()
    ]
    schedulers = [
        CronScheduler(Jobs(await harness.new(), registry), entries, clock=harness.clock)
        for _ in range(3)
    ]
    rng = random.Random(day)
    moment = first.timestamp() - 60
    for scheduler in schedulers:
        await scheduler.start(moment)
    while moment < last.timestamp() + 60:
        moment += rng.uniform(20, 100)
        for scheduler in rng.sample(schedulers, 2):
            await scheduler.tick(moment)
    rows = await (await harness.new()).list_jobs(queue="cleanup", limit=1000)
    got: dict[str, list[float]] = {name: [] for name in schedules}
    for row in rows:
        got[row.payload["entry"]].append(row.run_at)
    assert {name: sorted(slots) for name, slots in got.items()} == expected
