"""Pipeline health: each check's pass / warn / fail, the overall rule and the JSON shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Literal

import pytest

from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy, Schedule
from syncworker.core.policies import BreakerPolicy
from syncworker.core.protocols import WriteResult
from syncworker.errors import ConfigRefused
from syncworker.observe.health import ALL_OPERATIONAL, Check, Health, evaluate
from syncworker.state import SqliteStateStore
from syncworker.state.base import RunRecord
from syncworker.testing import MemoryQueue, MemorySink, MemorySource

FAST_RETRY = RetryPolicy(attempts=2, delay_s=0.001, max_delay_s=0.002, jitter=0)
FAST_BREAKER = BreakerPolicy(delay_s=0.01, max_delay_s=0.05)
NOW = 1_750_000_000.0  # a fixed wall clock for the time-based cases
CHECK_NAMES = [
    "recent_success",
    "error_rate",
    "record_error_rate",
    "consecutive_failures",
    "run_duration",
    "connection",
    "realtime",
    "snapshot",
    "dead_letters",
    "source_failed",
]
RunStatus = Literal["success", "partial", "error"]


def settings(schedule: Schedule | None = None, **overrides: Any) -> PipelineSettings:
    base: dict[str, Any] = {
        "batch_size": 10,
        "max_wait_s": 0.05,
        "retry": FAST_RETRY,
        "breaker": FAST_BREAKER,
        "schedule": schedule or Schedule.every(60),
    }
    base.update(overrides)
    return PipelineSettings(**base)


def make(
    queue: MemoryQueue,
    sink: MemorySink,
    state: SqliteStateStore,
    schedule: Schedule | None = None,
    source: MemorySource | None = None,
) -> Pipeline:
    return Pipeline(
        "users",
        source or MemorySource(queue),
        [sink],
        settings=settings(schedule),
        state=state,
    )


async def health_of(pipeline: Pipeline, state: SqliteStateStore) -> Health:
    runs = await state.runs(pipeline.name)
    dead = (await state.count_dead_letters(pipeline.name)).get("dead", 0)
    return evaluate(pipeline.status(), pipeline.settings, runs, dead_letters=dead)


def status(**overrides: Any) -> dict[str, Any]:
    """A ``Pipeline.status()`` of a running, healthy pipeline named ``users``."""
    base: dict[str, Any] = {
        "name": "users",
        "state": "running",
        "running": True,
        "schedule": "every 60s",
        "source": "pg",
        "sinks": ["chat"],
        "in_flight": 0,
        "totals": {
            "processed": 0,
            "written": 0,
            "dead_lettered": 0,
            "filtered": 0,
            "runs": 0,
            "failed_batches": 0,
        },
        "last_sync_at": None,
        "last_duration_ms": None,
        "last_result": None,
        "last_error": None,
        "circuit": {"open": False, "consecutive_failures": 0, "resumes_in_s": None},
    }
    base.update(overrides)
    return base


def run(
    finished_ago_s: float,
    result: RunStatus = "success",
    duration_s: float = 1.0,
    error: str | None = None,
) -> RunRecord:
    finished_at = NOW - finished_ago_s
    return RunRecord(
        pipeline="users",
        mode="incremental",
        started_at=finished_at - duration_s,
        finished_at=finished_at,
        status=result,
        error=error if error is not None or result == "success" else "ConnectionFailed: down",
    )


def evaluate_at(
    runs: list[RunRecord],
    schedule: Schedule | None = None,
    dead_letters: int = 0,
    **status_overrides: Any,
) -> Health:
    return evaluate(
        status(**status_overrides), settings(schedule), runs, now=NOW, dead_letters=dead_letters
    )


# -- real pipelines ----------------------------------------------------------------------------


async def test_a_pipeline_that_syncs_is_healthy(state: SqliteStateStore) -> None:
    queue = MemoryQueue()
    queue.put_many(5)
    pipeline = make(queue, MemorySink(name="chat"), state)
    await pipeline.start()
    try:
        await pipeline.sync_now()
        health = await health_of(pipeline, state)
    finally:
        await pipeline.stop()
    assert health.status == "HEALTHY"
    assert [c.name for c in health.checks] == CHECK_NAMES
    assert {c.status for c in health.checks} == {"pass"}
    assert all(c.recommendation is None for c in health.checks)
    assert health.recommendations == [ALL_OPERATIONAL] == ["All systems operational"]


async def test_a_stopped_pipeline_warns_how_to_start_it(state: SqliteStateStore) -> None:
    pipeline = make(MemoryQueue(), MemorySink(), state)
    await pipeline.start()
    await pipeline.sync_now()
    await pipeline.stop()
    health = await health_of(pipeline, state)
    connection = health.check("connection")
    assert connection.status == "warn"
    assert connection.recommendation == (
        "pipeline is stopped: start it with POST /pipelines/users/start or syncworker start users"
    )
    # Not double counted: a stopped pipeline is not expected to run.
    assert health.check("recent_success").status == "pass"
    assert health.status == "DEGRADED"


async def test_a_pipeline_that_cannot_open_is_unhealthy(state: SqliteStateStore) -> None:
    class BrokenSource(MemorySource):
        async def open(self) -> None:
            raise ValueError("column 'email' does not exist")

    pipeline = make(MemoryQueue(), MemorySink(), state, source=BrokenSource())
    await pipeline.start()
    assert pipeline.task is not None
    await asyncio.gather(pipeline.task, return_exceptions=True)
    health = await health_of(pipeline, state)
    await pipeline.stop()
    connection = health.check("connection")
    assert connection.status == "fail"
    assert "column 'email' does not exist" in connection.detail
    assert connection.recommendation is not None
    assert "pipelines.users" in connection.recommendation
    assert "syncworker start users" in connection.recommendation
    assert health.status == "UNHEALTHY"


async def test_a_pipeline_stopped_by_a_refused_configuration_is_unhealthy(
    state: SqliteStateStore,
) -> None:
    class RefusingSink(MemorySink):
        async def write(self, records: Sequence[Record]) -> WriteResult | None:
            raise ConfigRefused("webhook 'chat': HTTP 401: the receiver refused the credentials")

    queue = MemoryQueue()
    queue.put_many(3)
    pipeline = make(queue, RefusingSink(name="chat"), state, schedule=Schedule.stream())
    await pipeline.start()
    assert pipeline.task is not None
    await asyncio.gather(pipeline.task, return_exceptions=True)
    health = await health_of(pipeline, state)
    await pipeline.stop()
    assert pipeline.status()["last_error"]["type"] == "config_refused"
    connection = health.check("connection")
    assert connection.status == "fail"
    assert "refused its settings" in connection.detail
    assert "HTTP 401: the receiver refused the credentials" in connection.detail
    assert connection.recommendation is not None
    assert "pipelines.users" in connection.recommendation
    assert "credentials" in connection.recommendation
    assert "syncworker start users" in connection.recommendation
    assert health.status == "UNHEALTHY"
    assert connection.recommendation in health.recommendations


async def test_a_sink_down_warns_then_fails_naming_the_sink(state: SqliteStateStore) -> None:
    queue = MemoryQueue()
    queue.put_many(3)
    pipeline = make(queue, MemorySink(name="chat", down=True), state)
    async with pipeline:
        await pipeline.run_once()
        first = await health_of(pipeline, state)
        for _ in range(4):
            await pipeline.run_once()
        fifth = await health_of(pipeline, state)
        await pipeline.run_once()
        sixth = await health_of(pipeline, state)

    failures = first.check("consecutive_failures")
    assert failures.status == "warn"
    assert failures.recommendation == (
        "sink 'chat' unavailable for 1 attempt: check its connectivity; "
        "the pipeline resumes by itself"
    )
    assert fifth.check("consecutive_failures").status == "warn"  # seed 004: fails past 5
    assert sixth.check("consecutive_failures").status == "fail"
    assert sixth.check("consecutive_failures").recommendation == (
        "sink 'chat' unavailable for 6 attempts: check its connectivity; "
        "the pipeline resumes by itself"
    )
    error_rate = fifth.check("error_rate")
    assert error_rate.status == "fail"
    assert error_rate.detail == "5 of the last 5 run(s) failed (100%)"
    assert error_rate.recommendation is not None
    assert "chat: unreachable (injected)" in error_rate.recommendation
    assert fifth.status == "UNHEALTHY"


async def test_dead_letters_warn_with_the_commands(state: SqliteStateStore) -> None:
    queue = MemoryQueue()
    queue.put_many(5)
    pipeline = make(queue, MemorySink(report_keys={"1", "3"}), state)
    await pipeline.start()
    try:
        await pipeline.sync_now()
        health = await health_of(pipeline, state)
    finally:
        await pipeline.stop()
    dead = health.check("dead_letters")
    assert dead.status == "warn"
    assert dead.recommendation == (
        "2 dead letters waiting: inspect with syncworker dlq list --pipeline users, "
        "requeue with syncworker dlq requeue --all --pipeline users"
    )
    # 2 of 5 records refused is also seed 004's error rate far past its 1 %.
    rate = health.check("record_error_rate")
    assert rate.status == "fail"
    assert rate.detail == "2 of the 5 records of the last 1 run(s) dead-lettered (40%)"
    assert health.status == "UNHEALTHY"
    assert health.recommendations == [rate.recommendation, dead.recommendation]


def test_one_dead_letter_is_singular_and_none_passes() -> None:
    one = evaluate_at([run(10)], dead_letters=1).check("dead_letters")
    assert one.recommendation is not None
    assert one.recommendation.startswith("1 dead letter waiting: ")
    assert evaluate_at([run(10)], dead_letters=0).check("dead_letters").status == "pass"


async def test_the_last_run_in_status_counts_without_a_state_store() -> None:
    queue = MemoryQueue()
    queue.put_many(2)
    pipeline = Pipeline("users", MemorySource(queue), [MemorySink()], settings=settings())
    async with pipeline:
        await pipeline.run_once()
    health = evaluate(pipeline.status(), pipeline.settings, [])
    assert health.check("error_rate").detail == "0 of the last 1 run(s) failed (0%)"
    assert health.check("run_duration").detail.startswith("last run took ")


# -- recent_success ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ago_s", "expected"),
    [(90, "pass"), (121, "pass"), (140, "warn"), (200, "fail")],
)
def test_every_schedule_wants_a_success_within_two_then_three_periods(
    ago_s: float, expected: str
) -> None:
    # interval 60 s + a 1 s run: a period of 61 s, so warn past 122 s and fail past 183 s.
    check = evaluate_at([run(ago_s)]).check("recent_success")
    assert check.status == expected
    assert (check.recommendation is None) == (expected == "pass")


def test_recent_success_says_what_it_measured() -> None:
    check = evaluate_at([run(12 * 60)]).check("recent_success")
    assert check.detail == "last success 12 min ago (interval 60 s)"
    assert check.status == "fail"
    assert check.recommendation is not None
    assert "schedule.every" in check.recommendation
    assert "POST /pipelines/users/sync" in check.recommendation


def test_recent_success_names_the_error_when_runs_keep_failing() -> None:
    runs = [run(10, "error", error="OperationalError: connection refused"), run(400)]
    check = evaluate_at(runs).check("recent_success")
    assert check.status == "fail"
    assert check.recommendation is not None
    assert "OperationalError: connection refused" in check.recommendation


def test_no_success_on_record_counts_from_the_oldest_run() -> None:
    recent = evaluate_at([run(10, "error"), run(70, "error")]).check("recent_success")
    assert recent.status == "pass"
    old = evaluate_at([run(10, "error"), run(300, "error")]).check("recent_success")
    assert old.status == "fail"
    assert old.detail.startswith("no success in the 2 recorded run(s)")


@pytest.mark.parametrize(
    ("started_ago_s", "expected"), [(None, "pass"), (30, "pass"), (130, "warn"), (200, "fail")]
)
def test_a_pipeline_that_has_not_run_yet(started_ago_s: float | None, expected: str) -> None:
    extra = {} if started_ago_s is None else {"started_at": NOW - started_ago_s}
    check = evaluate(status(**extra), settings(), [], now=NOW).check("recent_success")
    assert check.status == expected
    if started_ago_s == 30:
        assert check.detail == "no run yet, started 30 s ago (interval 60 s)"


@pytest.mark.parametrize(("ago_min", "expected"), [(6, "pass"), (11, "warn"), (16, "fail")])
def test_cron_counts_the_ticks_missed_since_the_last_success(ago_min: int, expected: str) -> None:
    # Now is 1 s past a tick; the last success (a 1 s run) ended `ago_min` minutes before,
    # 1 s past a tick, so 1, 2 or 3 ticks have passed since.
    tick = NOW - NOW % 300
    finished_at = tick - ago_min * 60 + 61
    last = RunRecord("users", "incremental", finished_at - 1, finished_at, "success")
    health = evaluate(status(), settings(Schedule.at("*/5 * * * *")), [last], now=tick + 1)
    check = health.check("recent_success")
    assert check.status == expected
    if expected != "pass":
        assert check.recommendation is not None
        assert "schedule.cron is '*/5 * * * *'" in check.recommendation


def test_a_cron_tick_gives_its_run_the_last_runs_duration_to_finish() -> None:
    tick = NOW - NOW % 300
    # A 120 s run started 1 s after a tick 10 min ago; the tick 5 min ago was missed and
    # the run of the latest tick (60 s ago) may still be going on.
    last = RunRecord("users", "incremental", tick - 599, tick - 479, "success")
    cron = settings(Schedule.at("*/5 * * * *"))
    early = evaluate(status(), cron, [last], now=tick + 60).check("recent_success")
    assert early.status == "pass"
    late = evaluate(status(), cron, [last], now=tick + 121).check("recent_success")
    assert late.status == "warn"


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([], "pass"),
        ([run(3600)], "pass"),  # quiet: no work arrived for an hour
        ([run(30, "error"), run(5 * 60)], "pass"),
        ([run(30, "error"), run(11 * 60)], "warn"),
    ],
)
def test_stream_warns_only_when_stuck_not_when_idle(runs: list[RunRecord], expected: str) -> None:
    check = evaluate_at(runs, Schedule.stream()).check("recent_success")
    assert check.status == expected


def test_manual_schedule_needs_no_recent_success() -> None:
    check = evaluate_at([run(30 * 86400)], Schedule.manual()).check("recent_success")
    assert check.status == "pass"
    assert check.detail.startswith("n/a")


def test_a_stopped_pipeline_is_not_expected_to_succeed() -> None:
    health = evaluate_at([run(3600)], state="stopped")
    assert health.check("recent_success").status == "pass"
    assert health.check("recent_success").detail == "n/a: pipeline is stopped (see connection)"
    assert health.check("connection").status == "warn"
    assert health.recommendations == [
        "pipeline is stopped: start it with POST /pipelines/users/start or syncworker start users"
    ]


def test_a_pipeline_never_started_warns_how_to_start_it() -> None:
    health = evaluate_at([], state="created")
    assert health.check("connection").status == "warn"
    assert health.check("connection").recommendation == (
        "pipeline is not started: start it with POST /pipelines/users/start "
        "or syncworker start users"
    )


# -- error_rate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed", "expected"), [(0, "pass"), (1, "pass"), (2, "warn"), (10, "fail")]
)
def test_error_rate_over_the_last_twenty_runs(failed: int, expected: str) -> None:
    runs = [run(i, "partial" if i < failed else "success") for i in range(25)]
    # Runs past the twentieth do not count, however they ended.
    runs[20:] = [run(20 + i, "error") for i in range(5)]
    check = evaluate_at(runs).check("error_rate")
    assert check.status == expected
    assert check.detail.startswith(f"{failed} of the last 20 run(s) failed")


def test_error_rate_names_the_last_error_and_masks_secrets() -> None:
    secret = "OperationalError: cannot reach postgresql://sync:s3cret@db:5432/users"
    runs = [run(1, "error", error=secret), run(2, "error", error="older error"), run(3)]
    check = evaluate_at(runs).check("error_rate")
    assert check.status == "fail"
    assert check.recommendation is not None
    assert "OperationalError: cannot reach postgresql://sync:" in check.recommendation
    assert "older error" not in check.recommendation
    assert "s3cret" not in json.dumps(evaluate_at(runs).to_dict())


# -- consecutive_failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "expected"), [(0, "pass"), (1, "warn"), (5, "warn"), (6, "fail")]
)
def test_consecutive_failures_thresholds(failures: int, expected: str) -> None:
    circuit = {"open": failures > 0, "consecutive_failures": failures, "resumes_in_s": 8.0}
    error = {
        "type": "source_unavailable",
        "message": "ConnectionFailed: pg: connection refused",
        "at": NOW,
    }
    check = evaluate_at([run(10)], circuit=circuit, last_error=error).check("consecutive_failures")
    assert check.status == expected
    if failures:
        assert check.recommendation == (
            f"source 'pg' unavailable for {failures} attempt{'s' if failures > 1 else ''}: "
            "check its connectivity; the pipeline resumes by itself"
        )
        assert "next attempt in 8 s" in check.detail


def test_the_breaker_pause_is_not_counted_by_connection() -> None:
    circuit = {"open": True, "consecutive_failures": 2, "resumes_in_s": 3.0}
    health = evaluate_at([run(10)], circuit=circuit, state="paused")
    assert health.check("connection").status == "pass"
    assert health.check("consecutive_failures").status == "warn"


# -- run_duration ------------------------------------------------------------------------------


def test_run_duration_warns_in_the_words_of_the_log() -> None:
    check = evaluate_at([run(10, duration_s=52)], last_duration_ms=52_000.0).check("run_duration")
    assert check.status == "warn"
    assert check.recommendation == (
        "sync takes 52 s of a 60 s interval: raise the interval or the batch size"
    )


def test_run_duration_fails_when_runs_go_back_to_back() -> None:
    check = evaluate_at([run(10, duration_s=75)], last_duration_ms=75_000.0).check("run_duration")
    assert check.status == "fail"
    assert check.recommendation == (
        "sync takes 75 s of a 60 s interval and runs back to back: "
        "raise the interval or the batch size"
    )


def test_run_duration_passes_well_within_the_interval() -> None:
    check = evaluate_at([run(10, duration_s=30)], last_duration_ms=30_000.0).check("run_duration")
    assert check.status == "pass"
    assert check.detail == "last run took 30 s of a 60 s interval (50%)"


def test_run_duration_follows_the_pipelines_overlap_warning_ratio() -> None:
    health = evaluate(
        status(last_duration_ms=40_000.0),
        settings(overlap_warning_ratio=0.5),
        [run(10, duration_s=40)],
        now=NOW,
    )
    assert health.check("run_duration").status == "warn"


def test_run_duration_against_the_gap_between_cron_ticks() -> None:
    check = evaluate(
        status(last_duration_ms=280_000.0),
        settings(Schedule.at("*/5 * * * *")),
        [run(10, duration_s=280)],
        now=NOW,
    ).check("run_duration")
    assert check.status == "warn"
    assert check.recommendation == (
        "sync takes 280 s of the 300 s between cron ticks: "
        "space the cron ticks further apart (schedule.cron) or raise the batch size"
    )


def test_run_duration_blames_retries_not_the_interval_when_the_run_failed() -> None:
    error = "SinkUnavailable: sink 'algolia' unavailable: HTTP 503"
    check = evaluate_at(
        [run(10, "partial", duration_s=75, error=error)],
        last_duration_ms=52_000.0,
        last_paused_ms=23_000.0,
    ).check("run_duration")
    assert check.status == "warn"
    assert check.detail == (
        "last run took 52 s, 87% of a 60 s interval, and waited 23 s paused after failures"
    )
    assert check.recommendation == (
        "sync takes 52 s of a 60 s interval: "
        "retries after failures made it long (it waited 23 s paused after failures; it ended "
        "partial with \"SinkUnavailable: sink 'algolia' unavailable: HTTP 503\"): fix that "
        "cause; raising the interval would not help"
    )


def test_run_duration_of_a_clean_run_still_names_the_interval() -> None:
    check = evaluate_at(
        [run(10, duration_s=52)], last_duration_ms=52_000.0, last_paused_ms=0.0
    ).check("run_duration")
    assert check.recommendation == (
        "sync takes 52 s of a 60 s interval: raise the interval or the batch size"
    )


def test_health_text_quotes_messages_without_python_escapes() -> None:
    # Both kinds of quote: repr() would escape one of them, as in sink \'algolia\'.
    error = """SinkUnavailable: sink 'algolia' unavailable: HTTP 503: {"message": "busy"}"""
    health = evaluate_at(
        [run(10, "error", error=error), run(70, "error", error=error)],
        last_error={"type": "sink_unavailable", "message": error, "at": NOW - 10},
        circuit={"open": True, "consecutive_failures": 5, "resumes_in_s": 3.0},
    )
    for check in health.checks:
        assert "\\" not in check.detail + (check.recommendation or ""), check
    assert health.check("error_rate").recommendation == (
        "100% of recent runs failed, the latest with "
        f'"{error}": fix that cause; failed batches went back to the source and are retried'
    )


def test_records_failed_in_the_source_warn() -> None:
    health = evaluate(status(source="pg_outbox"), settings(), [run(10)], now=NOW, source_failed=2)
    check = health.check("source_failed")
    assert health.status == "DEGRADED" and check.status == "warn"
    assert check.detail == "2 records failed in source 'pg_outbox' (dead_letter store 'source')"
    assert check.recommendation == (
        "2 records failed and kept in source 'pg_outbox': see why with syncworker outbox "
        "stats, send them again with syncworker outbox retry-failed"
    )
    clean = evaluate(status(source="pg_outbox"), settings(), [run(10)], now=NOW, source_failed=0)
    assert clean.status == "HEALTHY" and clean.check("source_failed").status == "pass"
    unknown = evaluate(status(), settings(), [run(10)], now=NOW).check("source_failed")
    assert unknown.detail == "n/a: the source keeps no failed records"


def test_run_duration_does_not_apply_to_streams() -> None:
    check = evaluate_at([run(10, duration_s=600)], Schedule.stream()).check("run_duration")
    assert check.status == "pass"
    assert check.detail.startswith("n/a")


# -- the overall rule and the JSON shape -------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["pass", "pass"], "HEALTHY"),
        (["pass", "warn"], "DEGRADED"),
        (["warn", "fail", "pass"], "UNHEALTHY"),
    ],
)
def test_the_worst_check_decides(statuses: list[Any], expected: str) -> None:
    checks = [
        Check(f"c{i}", s, "measured", None if s == "pass" else f"fix c{i}")
        for i, s in enumerate(statuses)
    ]
    health = Health.of(checks)
    assert health.status == expected
    if expected == "HEALTHY":
        assert health.recommendations == ["All systems operational"]


def test_failing_recommendations_come_before_warnings() -> None:
    checks = [
        Check("a", "warn", "measured", "fix a"),
        Check("b", "pass", "measured"),
        Check("c", "fail", "measured", "fix c"),
    ]
    assert Health.of(checks).recommendations == ["fix c", "fix a"]


def test_to_dict_is_json_ready() -> None:
    health = evaluate_at(
        [run(10, "error", duration_s=52)], last_duration_ms=52_000.0, dead_letters=3
    )
    body = json.loads(json.dumps(health.to_dict()))
    assert set(body) == {"status", "checks", "recommendations"}
    assert body["status"] == "UNHEALTHY"
    assert [c["name"] for c in body["checks"]] == CHECK_NAMES
    for check in body["checks"]:
        assert set(check) == {"name", "status", "detail", "recommendation"}
        assert (check["recommendation"] is None) == (check["status"] == "pass")
    assert body["recommendations"] == health.recommendations
    assert len(body["recommendations"]) == 3  # error_rate, run_duration, dead_letters
