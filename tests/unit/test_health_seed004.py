"""Health checks added for seed 004: its record error rate, and the pg_table source's
``source_status`` (real-time listener, snapshot), written against the documented shape."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from syncworker.core import PipelineSettings, Schedule
from syncworker.observe.health import Health, evaluate
from syncworker.state.base import RunRecord

NOW = 1_750_000_000.0


def settings() -> PipelineSettings:
    return PipelineSettings(schedule=Schedule.every(60))


def status(**overrides: Any) -> dict[str, Any]:
    """A ``Pipeline.status()`` of a running pipeline named ``users`` with nothing wrong."""
    base: dict[str, Any] = {
        "name": "users",
        "state": "running",
        "source": "pg",
        "sinks": ["chat"],
        "last_error": None,
        "circuit": {"open": False, "consecutive_failures": 0, "resumes_in_s": None},
    }
    base.update(overrides)
    return base


def run(finished_ago_s: float) -> RunRecord:
    finished_at = NOW - finished_ago_s
    return RunRecord("users", "incremental", finished_at - 1.0, finished_at, "success")


def evaluate_at(runs: list[RunRecord]) -> Health:
    return evaluate(status(), settings(), runs, now=NOW)


def records_run(processed: int, dead_lettered: int, finished_ago_s: float = 10) -> RunRecord:
    return replace(run(finished_ago_s), processed=processed, dead_lettered=dead_lettered)


def source_status(**parts: Any) -> dict[str, Any]:
    """A pg_table ``status()``: streaming, snapshot done, listener connected."""
    listener = {
        "enabled": True,
        "connected": True,
        "channel": "syncworker_users_changes",
        "reconnect_attempts": 0,
        "max_attempts": 10,
        "reconnects": 0,
        "gave_up": False,
        "last_error": None,
        "down_since": None,
    }
    snapshot = {
        "done": True,
        "rows": 1000,
        "rows_read": 1000,
        "rows_estimate": 1000,
        "last_key": "1000",
        "started_at": NOW - 100,
        "finished_at": NOW - 90,
    }
    listener.update(parts.pop("listener", {}))
    snapshot.update(parts.pop("snapshot", {}))
    return {
        "phase": "stream" if snapshot["done"] else "snapshot",
        "snapshot": snapshot,
        "listener": listener,
        "lookback": {"enabled": True, "last_at": NOW - 30, "last_rows": 0, "next_at": NOW + 30},
        "backlog": 0,
        **parts,
    }


# -- record_error_rate (seed 004: warning past 1 %) ------------------------------------------


@pytest.mark.parametrize(
    ("dead", "expected", "shown"),
    [(0, "pass", "0%"), (10, "pass", "1.00%"), (11, "warn", "1.10%"), (101, "fail", "10%")],
)
def test_record_error_rate_thresholds(dead: int, expected: str, shown: str) -> None:
    runs = [records_run(500, dead // 2), records_run(500, dead - dead // 2, 80)]
    check = evaluate_at(runs).check("record_error_rate")
    assert check.status == expected
    assert (
        check.detail == f"{dead} of the 1000 records of the last 2 run(s) dead-lettered ({shown})"
    )
    if expected != "pass":
        assert check.recommendation is not None
        assert "syncworker dlq list --pipeline users" in check.recommendation
        assert "1% threshold" in check.recommendation


def test_record_error_rate_without_records_passes() -> None:
    check = evaluate_at([run(10)]).check("record_error_rate")
    assert (check.status, check.detail) == ("pass", "no records processed in the recorded runs")


def test_a_tiny_share_is_never_shown_as_zero() -> None:
    check = evaluate_at([records_run(1_000_000, 1)]).check("record_error_rate")
    assert check.detail.endswith("(<0.01%)")


# -- realtime ----------------------------------------------------------------------------


def health_with(source: dict[str, Any] | None, **overrides: Any) -> Health:
    return evaluate(
        status(source="users_source", source_status=source, **overrides),
        settings(),
        [run(10)],
        now=NOW,
    )


def test_a_connected_listener_and_a_done_snapshot_are_healthy() -> None:
    health = health_with(source_status())
    assert health.status == "HEALTHY"
    assert health.check("realtime").detail == "listener connected"
    assert health.check("snapshot").detail == "snapshot done (1,000 rows)"


def test_without_source_status_both_are_not_applicable() -> None:
    health = health_with(None)
    assert health.check("realtime").detail == "n/a: the source has no real-time listener"
    assert health.check("snapshot").detail == "n/a: the source takes no snapshot"
    assert health.status == "HEALTHY"
    off = health_with(source_status(listener={"enabled": False, "connected": False}))
    assert off.check("realtime").status == "pass"


def test_a_reconnecting_listener_warns() -> None:
    health = health_with(
        source_status(
            listener={
                "connected": False,
                "reconnect_attempts": 3,
                "last_error": "OperationalError: connection to postgresql://app:pw@db lost",
                "down_since": NOW - 20,
            }
        )
    )
    check = health.check("realtime")
    assert health.status == "DEGRADED" and check.status == "warn"
    assert check.detail.startswith("listener reconnecting since 20 s ago: attempt 3 of 10 failed")
    assert "pw@" not in check.detail and "pw@" not in (check.recommendation or "")
    assert check.recommendation is not None
    assert "polling the change log" in check.recommendation


def test_a_listener_still_connecting_passes() -> None:
    check = health_with(source_status(listener={"connected": False})).check("realtime")
    assert (check.status, check.detail) == ("pass", "listener connecting")


def test_a_listener_that_gave_up_is_unhealthy_with_a_recommendation() -> None:
    health = health_with(
        source_status(
            listener={
                "connected": False,
                "reconnect_attempts": 10,
                "gave_up": True,
                "last_error": "ConnectionFailed: connection refused",
                "down_since": NOW - 600,
            }
        )
    )
    check = health.check("realtime")
    assert health.status == "UNHEALTHY" and check.status == "fail"
    assert check.detail == (
        "listener down since 10 min ago: gave up after 10 reconnect attempt(s) "
        "(last: ConnectionFailed: connection refused)"
    )
    assert check.recommendation is not None
    assert check.recommendation.startswith(
        "the real-time listener of source 'users_source' could not reconnect"
    )
    assert "none is lost" in check.recommendation
    assert health.recommendations[0] == check.recommendation


# -- snapshot ----------------------------------------------------------------------------


def test_a_snapshot_in_progress_passes_with_its_progress() -> None:
    health = health_with(
        source_status(
            snapshot={
                "done": False,
                "rows": 250_000,
                "rows_estimate": 1_000_000,
                "last_key": "250000",
            }
        )
    )
    check = health.check("snapshot")
    assert check.status == "pass"
    assert check.detail == (
        "snapshot in progress: 250,000 rows copied of about 1,000,000 (25%), up to key '250000'"
    )


def test_an_unfinished_snapshot_of_a_stopped_pipeline_warns() -> None:
    health = health_with(
        source_status(snapshot={"done": False, "rows": 10, "rows_estimate": 0, "last_key": None}),
        state="stopped",
    )
    check = health.check("snapshot")
    assert check.status == "warn"
    assert check.detail == "snapshot unfinished: 10 rows copied; the pipeline is stopped"
    assert check.recommendation is not None
    assert "syncworker start users" in check.recommendation


# -- run_duration of a stream pipeline: the source's scheduled lookback ---------------------


def stream_health(last_duration_ms: float | None, interval_s: float | None = 60.0) -> Health:
    lookback = {"enabled": True, "last_duration_ms": last_duration_ms, "interval_s": interval_s}
    return evaluate(
        status(source="users_source", source_status=source_status(lookback=lookback)),
        PipelineSettings(schedule=Schedule.stream()),
        [run(10)],
        now=NOW,
    )


@pytest.mark.parametrize(
    ("duration_ms", "expected"), [(1_000, "pass"), (48_000, "warn"), (61_000, "fail")]
)
def test_the_lookback_duration_against_its_interval(duration_ms: float, expected: str) -> None:
    check = stream_health(duration_ms).check("run_duration")
    assert check.status == expected
    assert check.detail.startswith("last lookback took ")
    if expected != "pass":
        assert check.recommendation is not None
        assert "SYNC_INTERVAL_MINUTES" in check.recommendation


def test_a_stream_without_a_timed_lookback_has_no_interval() -> None:
    for health in (stream_health(None), stream_health(1_000, None)):
        assert health.check("run_duration").detail == "n/a: stream schedule has no interval"
