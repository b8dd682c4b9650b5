"""Per-pipeline health: HEALTHY, DEGRADED or UNHEALTHY from ten checks (seed 004).

``evaluate(status, settings, runs)`` reads what ``Pipeline.status()`` reports, the pipeline's
settings and its most recent runs (newest first, from the state store), and returns a
``Health``: one ``Check`` per concern, and for each warning or failing check a
recommendation naming the setting or command to change. The pipeline is UNHEALTHY when a
check fails, DEGRADED when one warns, else HEALTHY with ``["All systems operational"]``.
It assumes the engine is running (the engine and its API are what ask for health).

Checks, in the order they are reported, and their thresholds:

``recent_success``
    ``every``: time since the last successful run, in periods of the interval plus the last
    run's duration (the next run starts one interval after a run ends): warn past 2, fail
    past 3. ``cron``: the schedule's ticks since the last success, each given the last run's
    duration to finish: warn once 2 have passed, fail at 3. ``stream``: a run is recorded
    only when work arrives, so a quiet pipeline is fine; warn when the last run failed and
    the last success is over 10 min old. ``manual`` and stopped pipelines: n/a (pass).
    With no success on record the clock starts at the oldest recorded run, else at
    ``status["started_at"]`` when present; with neither, "no run yet" passes.
``error_rate``
    Share of the last 20 runs that ended ``error`` or ``partial``: warn at 10 %, fail at 50 %.
``record_error_rate``
    Seed 004's error rate: records dead-lettered among the records those 20 runs processed:
    warn past 1 % (the seed's warning threshold), fail past 10 % (one record in ten refused
    is a mapping or schema mismatch, not bad luck).
``consecutive_failures``
    The circuit breaker's failures in a row (batch, claim or connect): warn at 1, fail past
    5 (seed 004's threshold, "> 5").
``run_duration``
    ``every``: the last run's duration against the interval: warn at
    ``settings.overlap_warning_ratio`` (0.8 by default: seed 004's "> 80 % of the interval";
    the setting behind the ``run_near_interval`` log line, so the log and health agree),
    fail at 100 % (runs go back to back). ``cron``: the same against the gap between the
    ticks around the last run. ``stream``: the source's own scheduled pass when it reports
    one (pg_table's lookback: ``source_status["lookback"]`` ``last_duration_ms`` against
    ``interval_s``), with the same thresholds; else n/a, as for ``manual``.
``connection``
    The pipeline's lifecycle state: stopped or never started warns; stopped because its
    connectors refused to open fails. A circuit-breaker pause is left to
    ``consecutive_failures`` so one outage is not counted twice.
``dead_letters``
    Any dead letter waiting for a person (status ``dead``) warns.
``realtime``
    The source's real-time listener, from ``status["source_status"]["listener"]`` (pg_table):
    connected passes; reconnecting warns (changes still arrive by polling its change log);
    given up after its ``reconnect.max_attempts`` fails (it keeps retrying every
    ``max_delay``). n/a for a source without a listener.
``snapshot``
    The source's initial snapshot, from ``source_status["snapshot"]``: in progress passes
    with its progress (rows copied of the estimate, last key); unfinished while the pipeline
    is stopped warns (it resumes after the last key once started). n/a without one.
``source_failed``
    Any record the source keeps as failed (``dead_letter: {store: source}``: pg_outbox rows
    with status ``failed``, its ``failed_count()``) warns, as a dead letter does; n/a for a
    source that cannot tell.

When the last run was too long for its interval but spent part of it on failures (it ended
``partial`` or ``error``, or waited out the circuit breaker), ``run_duration`` names the
failure rather than the interval: raising the interval would not help.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from croniter import croniter

from syncworker.core.durations import format_seconds
from syncworker.core.schedule import Schedule
from syncworker.observe.logging import redact_url
from syncworker.state.base import RunRecord

if TYPE_CHECKING:
    from syncworker.core.pipeline import PipelineSettings

CheckStatus = Literal["pass", "warn", "fail"]
HealthStatus = Literal["HEALTHY", "DEGRADED", "UNHEALTHY"]

# Seed 004's words for a pipeline with nothing to fix.
ALL_OPERATIONAL = "All systems operational"

# One missed run is a blip (a deploy, a dependency restarting); two in a row means the data
# is going stale and someone should look; three is an outage.
SUCCESS_WARN_PERIODS = 2
SUCCESS_FAIL_PERIODS = 3
# A stream pipeline is silent whenever no work arrives, so age alone means nothing; a failed
# last run and no success for this long means it is stuck, not idle.
STREAM_STALE_S = 600.0
# Enough runs that one bad run does not dominate, few enough to reflect the last hours of
# an 'every 60s' pipeline; also the state store's default ``runs()`` limit.
ERROR_RATE_WINDOW = 20
# 2 failures in 20 runs is something recurring; most runs failing is a pipeline not doing
# its job.
ERROR_RATE_WARN = 0.10
ERROR_RATE_FAIL = 0.50
# Seed 004: an error rate past 1 % of the records synced is a warning (its target is
# 0.1 %); past one record in ten, records are refused by design (mapping, schema).
RECORD_ERROR_RATE_WARN = 0.01
RECORD_ERROR_RATE_FAIL = 0.10
# One failure already pauses the pipeline. More than five in a row (seed 004's threshold)
# is over a minute of pauses with the default breaker (1 + 2 + 4 + 8 + 16 + 32 s): an
# outage, no longer a blip.
CONSECUTIVE_FAILURES_WARN = 1
CONSECUTIVE_FAILURES_FAIL = 5  # failing when past it
# A run as long as its interval starts the next one at once: the interval paces nothing.
DURATION_FAIL_RATIO = 1.0
DEAD_LETTERS_WARN = 1
# Error messages are quoted in details and recommendations, one line each.
MESSAGE_MAX_CHARS = 200

_FAILED_RESULTS = frozenset({"error", "partial"})
_NOT_STARTED = frozenset({"created", "stopped"})
_SINK_IN_MESSAGE = re.compile(r"sink '([^']+)' unavailable")


@dataclass(frozen=True, slots=True)
class Check:
    """One health check. ``name`` is a stable id; ``detail`` says what was measured."""

    name: str
    status: CheckStatus
    detail: str
    recommendation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "recommendation": self.recommendation,
        }


@dataclass(frozen=True, slots=True)
class Health:
    """A pipeline's health: the worst of its checks, and what to do about it."""

    status: HealthStatus
    checks: list[Check]
    recommendations: list[str]

    @classmethod
    def of(cls, checks: list[Check]) -> Health:
        """UNHEALTHY if any check fails, DEGRADED if any warns, else HEALTHY.

        Recommendations come failing checks first, then warning ones, each in check order.
        """
        failing = [c.recommendation for c in checks if c.status == "fail" and c.recommendation]
        warning = [c.recommendation for c in checks if c.status == "warn" and c.recommendation]
        status: HealthStatus = "HEALTHY"
        if any(c.status == "fail" for c in checks):
            status = "UNHEALTHY"
        elif any(c.status == "warn" for c in checks):
            status = "DEGRADED"
        recommendations = failing + warning if status != "HEALTHY" else [ALL_OPERATIONAL]
        return cls(status, list(checks), recommendations)

    def check(self, name: str) -> Check:
        """The check called ``name``; KeyError if there is none."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"status", "checks": [{name, status, detail, recommendation}],
        "recommendations"}``."""
        return {
            "status": self.status,
            "checks": [c.to_dict() for c in self.checks],
            "recommendations": list(self.recommendations),
        }


def evaluate(
    status: dict[str, Any],
    settings: PipelineSettings,
    runs: list[RunRecord],
    *,
    now: float | None = None,
    dead_letters: int = 0,
    source_failed: int | None = None,
) -> Health:
    """The health of one pipeline.

    ``status`` is ``Pipeline.status()``; ``runs`` its most recent runs, newest first;
    ``now`` the wall clock (``time.time()`` when None); ``dead_letters`` how many of its
    dead letters have status ``dead``; ``source_failed`` how many records its source keeps
    as failed (None: the source cannot tell).
    """
    view = _View.read(status, settings, runs, time.time() if now is None else now)
    return Health.of(
        [
            _recent_success(view),
            _error_rate(view),
            _record_error_rate(view),
            _consecutive_failures(view),
            _run_duration(view),
            _connection(view),
            _realtime(view),
            _snapshot(view),
            _dead_letters(view.name, dead_letters),
            _source_failed(view, source_failed),
        ]
    )


# -- what the checks read ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _View:
    name: str
    state: str
    schedule: Schedule
    runs: list[RunRecord]
    now: float
    started_at: float | None
    last_duration_s: float | None
    last_paused_s: float
    last_error: dict[str, Any] | None
    circuit: dict[str, Any]
    source: str
    sinks: list[str]
    warn_ratio: float
    source_status: dict[str, Any]

    @classmethod
    def read(
        cls, status: dict[str, Any], settings: PipelineSettings, runs: list[RunRecord], now: float
    ) -> _View:
        merged = _with_status_run(status, sorted(runs, key=lambda r: r.finished_at, reverse=True))
        duration_ms = status.get("last_duration_ms")
        if duration_ms is None and merged:
            duration_ms = merged[0].duration_ms
        paused_ms = status.get("last_paused_ms")
        if paused_ms is None and merged:
            paused_ms = getattr(merged[0], "paused_ms", 0.0)
        return cls(
            name=str(status.get("name", "?")),
            state=str(status.get("state", "running")),
            schedule=settings.schedule,
            runs=merged,
            now=now,
            started_at=status.get("started_at"),
            last_duration_s=None if duration_ms is None else float(duration_ms) / 1000.0,
            last_paused_s=float(paused_ms or 0.0) / 1000.0,
            last_error=status.get("last_error"),
            circuit=status.get("circuit") or {},
            source=str(status.get("source", "?")),
            sinks=[str(s) for s in status.get("sinks", [])],
            warn_ratio=settings.overlap_warning_ratio,
            source_status=status.get("source_status") or {},
        )

    @property
    def last_run(self) -> RunRecord | None:
        return self.runs[0] if self.runs else None

    @property
    def last_success(self) -> RunRecord | None:
        return next((r for r in self.runs if r.status == "success"), None)

    def success_clock(self) -> tuple[float, str] | None:
        """Since when a success is awaited, and how to say it; None: nothing to measure."""
        success = self.last_success
        if success is not None:
            return success.finished_at, f"last success {_ago(self.now, success.finished_at)}"
        if self.runs:
            first = self.runs[-1].started_at
            return first, (
                f"no success in the {len(self.runs)} recorded run(s), "
                f"the first {_ago(self.now, first)}"
            )
        if self.started_at is not None:
            return self.started_at, f"no run yet, started {_ago(self.now, self.started_at)}"
        return None

    def last_error_message(self) -> str:
        """The newest failed run's error, else the pipeline's last error."""
        for run in self.runs:
            if run.status in _FAILED_RESULTS and run.error:
                return _message(run.error)
        if self.last_error and self.last_error.get("message"):
            return _message(str(self.last_error["message"]))
        return "no error message recorded"


def _with_status_run(status: dict[str, Any], runs: list[RunRecord]) -> list[RunRecord]:
    """Add the run ``status`` reports when the store does not have it (no state store, or
    the run log write failed), so health never misses the latest run."""
    finished_at = status.get("last_sync_at")
    result = status.get("last_result")
    if finished_at is None or result not in ("success", "partial", "error"):
        return runs
    if runs and runs[0].finished_at >= float(finished_at) - 0.001:
        return runs
    duration_s = float(status.get("last_duration_ms") or 0.0) / 1000.0
    last_error = status.get("last_error") or {}
    run = RunRecord(
        pipeline=str(status.get("name", "?")),
        mode="unknown",
        started_at=float(finished_at) - duration_s,
        finished_at=float(finished_at),
        status=result,
        error=None if result == "success" else last_error.get("message"),
    )
    return [run, *runs]


# -- the checks --------------------------------------------------------------------------------


def _recent_success(v: _View) -> Check:
    name = "recent_success"
    if v.schedule.kind == "manual":
        return Check(name, "pass", "n/a: manual schedule, runs only when asked")
    if v.state in _NOT_STARTED:
        return Check(name, "pass", f"n/a: pipeline is {v.state} (see connection)")
    if v.schedule.kind == "stream":
        return _stream_success(v)
    clock = v.success_clock()
    if clock is None:
        return Check(name, "pass", "no run yet")
    if v.schedule.kind == "cron":
        return _cron_success(v, *clock)
    return _every_success(v, *clock)


def _every_success(v: _View, since: float, said: str) -> Check:
    interval_s = v.schedule.interval_s or 0.0
    period_s = interval_s + (v.last_duration_s or 0.0)
    age_s = v.now - since
    detail = f"{said} (interval {_span(interval_s)})"
    if age_s <= SUCCESS_WARN_PERIODS * period_s:
        return Check("recent_success", "pass", detail)
    level: CheckStatus = "fail" if age_s > SUCCESS_FAIL_PERIODS * period_s else "warn"
    advice = (
        f"no successful sync for {_span(age_s)} although it runs every {_span(interval_s)} "
        f"(schedule.every): {_why_no_success(v)}"
    )
    return Check("recent_success", level, detail, advice)


def _cron_success(v: _View, since: float, said: str) -> Check:
    expression = v.schedule.cron or ""
    ticks = croniter(expression, datetime.fromtimestamp(since, tz=UTC))
    due = [float(ticks.get_next(float)) for _ in range(SUCCESS_FAIL_PERIODS)]
    # A tick counts as missed once its run has had the last run's duration to finish.
    settled = v.now - (v.last_duration_s or 0.0)
    missed = sum(1 for tick in due if tick <= settled)
    detail = f"{said}, {missed} cron tick(s) since ({expression})"
    if missed < SUCCESS_WARN_PERIODS:
        return Check("recent_success", "pass", detail)
    level: CheckStatus = "fail" if missed >= SUCCESS_FAIL_PERIODS else "warn"
    advice = (
        f"no successful sync for {_span(v.now - since)} although schedule.cron is "
        f"{_quote(expression)}: {_why_no_success(v)}"
    )
    return Check("recent_success", level, detail, advice)


def _stream_success(v: _View) -> Check:
    last = v.last_run
    if last is None:
        return Check("recent_success", "pass", "no run recorded yet (recorded when work arrives)")
    if last.status == "success":
        return Check(
            "recent_success", "pass", f"last run succeeded {_ago(v.now, last.finished_at)}"
        )
    clock = v.success_clock()
    since, said = clock if clock is not None else (last.started_at, "no success")
    detail = f"last run failed {_ago(v.now, last.finished_at)}; {said}"
    if v.now - since <= STREAM_STALE_S:
        return Check("recent_success", "pass", detail)
    advice = (
        f"no successful batch for {_span(v.now - since)} and the last run failed with "
        f"{_quote(v.last_error_message())}: fix that cause; the records wait in the source "
        "and flow again once it is fixed"
    )
    return Check("recent_success", "warn", detail, advice)


def _why_no_success(v: _View) -> str:
    last = v.last_run
    if last is not None and last.status in _FAILED_RESULTS:
        return (
            f"the last run failed with {_quote(v.last_error_message())}; fix that cause, "
            "the next run retries what failed"
        )
    return (
        "no run has finished since; check that the engine is up with syncworker status "
        f"and start a run with POST /pipelines/{v.name}/sync"
    )


def _error_rate(v: _View) -> Check:
    window = v.runs[:ERROR_RATE_WINDOW]
    if not window:
        return Check("error_rate", "pass", "no runs recorded yet")
    failed = sum(1 for r in window if r.status in _FAILED_RESULTS)
    share = failed / len(window)
    detail = f"{failed} of the last {len(window)} run(s) failed ({share:.0%})"
    if share < ERROR_RATE_WARN:
        return Check("error_rate", "pass", detail)
    level: CheckStatus = "fail" if share >= ERROR_RATE_FAIL else "warn"
    advice = (
        f"{share:.0%} of recent runs failed, the latest with {_quote(v.last_error_message())}: "
        "fix that cause; failed batches went back to the source and are retried"
    )
    return Check("error_rate", level, detail, advice)


def _record_error_rate(v: _View) -> Check:
    name = "record_error_rate"
    window = v.runs[:ERROR_RATE_WINDOW]
    processed = sum(r.processed for r in window)
    if not processed:
        return Check(name, "pass", "no records processed in the recorded runs")
    refused = sum(r.dead_lettered for r in window)
    share = refused / processed
    detail = (
        f"{refused} of the {processed} records of the last {len(window)} run(s) "
        f"dead-lettered ({_percent(share)})"
    )
    if share <= RECORD_ERROR_RATE_WARN:
        return Check(name, "pass", detail)
    level: CheckStatus = "fail" if share > RECORD_ERROR_RATE_FAIL else "warn"
    advice = (
        f"{_percent(share)} of recent records were refused (over the {RECORD_ERROR_RATE_WARN:.0%} "
        f"threshold): see why with syncworker dlq list --pipeline {v.name} (and the "
        "sync_errors table where configured), fix the data, the mapping or the target's "
        f"schema, then syncworker dlq requeue --all --pipeline {v.name}"
    )
    return Check(name, level, detail, advice)


def _percent(share: float) -> str:
    """A share as a percentage that never shows a non-zero share as 0 %."""
    if share == 0 or share >= 0.1:
        return f"{share:.0%}"
    return f"{share:.2%}" if share >= 0.0001 else "<0.01%"


def _consecutive_failures(v: _View) -> Check:
    failures = int(v.circuit.get("consecutive_failures") or 0)
    if failures < CONSECUTIVE_FAILURES_WARN:
        return Check("consecutive_failures", "pass", "circuit closed, no failure in a row")
    resumes_in_s = v.circuit.get("resumes_in_s")
    next_try = f", next attempt in {_span(float(resumes_in_s))}" if resumes_in_s else ""
    detail = (
        f"{failures} failure(s) in a row, circuit open{next_try} (last: {v.last_error_message()})"
    )
    level: CheckStatus = "fail" if failures > CONSECUTIVE_FAILURES_FAIL else "warn"
    return Check("consecutive_failures", level, detail, _failing_part(v, failures))


def _failing_part(v: _View, failures: int) -> str:
    """Which dependency keeps failing, from the kind of the last error."""
    kind = (v.last_error or {}).get("type")
    resumes = "the pipeline resumes by itself"
    attempts = "1 attempt" if failures == 1 else f"{failures} attempts"
    if kind == "sink_unavailable":
        found = _SINK_IN_MESSAGE.search(str((v.last_error or {}).get("message", "")))
        sink = found.group(1) if found else (v.sinks[0] if len(v.sinks) == 1 else "?")
        return f"sink {_quote(sink)} unavailable for {attempts}: check its connectivity; {resumes}"
    if kind == "source_unavailable":
        source = _quote(v.source)
        return f"source {source} unavailable for {attempts}: check its connectivity; {resumes}"
    if kind == "connect_failed":
        sinks = ", ".join(_quote(s) for s in v.sinks)
        return (
            f"connecting failed {_times(failures)}: check that source {_quote(v.source)} and "
            f"sink(s) {sinks} are reachable and their URLs in pipelines.{v.name} are right; "
            f"{resumes}"
        )
    failed = "a whole batch failed" if failures == 1 else f"{failures} batches in a row failed"
    return f"{failed} with {_quote(v.last_error_message())}: fix that cause; {resumes}"


def _run_duration(v: _View) -> Check:
    kind = v.schedule.kind
    if kind == "stream" and _lookback_timed(v):
        return _lookback_duration(v)
    if kind not in ("every", "cron"):
        return Check("run_duration", "pass", f"n/a: {kind} schedule has no interval")
    duration_s = v.last_duration_s
    last = v.last_run
    if duration_s is None:
        return Check("run_duration", "pass", "no run yet")
    if kind == "every":
        room_s = v.schedule.interval_s or 0.0
        room = f"a {format_seconds(room_s)} s interval"
        change = "raise the interval or the batch size"
    else:
        started_at = last.started_at if last is not None else v.now - duration_s
        room_s = _cron_gap_s(v.schedule.cron or "", started_at)
        room = f"the {format_seconds(room_s)} s between cron ticks"
        change = "space the cron ticks further apart (schedule.cron) or raise the batch size"
    ratio = duration_s / room_s if room_s > 0 else float("inf")
    if ratio < v.warn_ratio:
        return Check(
            "run_duration",
            "pass",
            f"last run took {format_seconds(duration_s)} s of {room} ({ratio:.0%})",
        )
    detail = f"last run took {format_seconds(duration_s)} s, {ratio:.0%} of {room}"
    if v.last_paused_s > 0:
        detail += f", and waited {format_seconds(v.last_paused_s)} s paused after failures"
    change = _retries_to_blame(v) or change
    if ratio >= DURATION_FAIL_RATIO:
        advice = (
            f"sync takes {format_seconds(duration_s)} s of {room} and runs back to back: {change}"
        )
        return Check("run_duration", "fail", detail, advice)
    return Check(
        "run_duration",
        "warn",
        detail,
        f"sync takes {format_seconds(duration_s)} s of {room}: {change}",
    )


def _lookback_timed(v: _View) -> bool:
    lookback = v.source_status.get("lookback")
    return (
        isinstance(lookback, dict)
        and bool(lookback.get("interval_s"))
        and lookback.get("last_duration_ms") is not None
    )


def _lookback_duration(v: _View) -> Check:
    """The source's scheduled lookback (seed 004's scheduled sync) against its interval."""
    lookback = v.source_status["lookback"]
    interval_s = float(lookback["interval_s"])
    duration_s = float(lookback["last_duration_ms"]) / 1000.0
    ratio = duration_s / interval_s
    room = f"its {format_seconds(interval_s)} s interval"
    detail = f"last lookback took {format_seconds(duration_s)} s of {room} ({ratio:.0%})"
    if ratio < v.warn_ratio:
        return Check("run_duration", "pass", detail)
    advice = (
        f"the lookback of source {_quote(v.source)} takes {format_seconds(duration_s)} s of "
        f"{room}: raise lookback.interval (SYNC_INTERVAL_MINUTES) or index the updated_at "
        "column it scans"
    )
    level: CheckStatus = "fail" if ratio >= DURATION_FAIL_RATIO else "warn"
    return Check("run_duration", level, detail, advice)


def _retries_to_blame(v: _View) -> str | None:
    """What to fix when failures made the last run long: retries and their backoff, or the
    circuit breaker's pauses, not the interval. None when the run had no failure."""
    last = v.last_run
    failed = last is not None and last.status in _FAILED_RESULTS
    if not failed and v.last_paused_s <= 0:
        return None
    causes = []
    if v.last_paused_s > 0:
        causes.append(f"it waited {format_seconds(v.last_paused_s)} s paused after failures")
    if failed and last is not None:
        causes.append(f"it ended {last.status} with {_quote(v.last_error_message())}")
    return (
        f"retries after failures made it long ({'; '.join(causes)}): fix that cause; "
        "raising the interval would not help"
    )


def _cron_gap_s(expression: str, at: float) -> float:
    """Seconds between the cron ticks either side of ``at``."""
    after = float(croniter(expression, datetime.fromtimestamp(at, tz=UTC)).get_next(float))
    before = float(croniter(expression, datetime.fromtimestamp(after, tz=UTC)).get_prev(float))
    return after - before


def _connection(v: _View) -> Check:
    start = f"start it with POST /pipelines/{v.name}/start or syncworker start {v.name}"
    if v.state == "stopped" and (v.last_error or {}).get("type") == "open_failed":
        message = _message(str((v.last_error or {}).get("message", "")))
        return Check(
            "connection",
            "fail",
            f"pipeline stopped: its connectors refused to open ({message})",
            f"fix the source and sink settings of pipelines.{v.name} in the config, then {start}",
        )
    if v.state == "stopped" and (v.last_error or {}).get("type") == "config_refused":
        # Stopped mid-run: a dependency answered and refused the settings (credentials, role,
        # database, table, grant). Starting it again as it is would only be refused again.
        message = _message(str((v.last_error or {}).get("message", "")))
        return Check(
            "connection",
            "fail",
            f"pipeline stopped: a dependency refused its settings ({message})",
            f"fix what was refused (credentials, user or role, database, table, grants) in "
            f"pipelines.{v.name} of the config or on the dependency, then {start}",
        )
    if v.state == "stopped":
        return Check("connection", "warn", "pipeline is stopped", f"pipeline is stopped: {start}")
    if v.state == "created":
        return Check(
            "connection", "warn", "pipeline was never started", f"pipeline is not started: {start}"
        )
    if v.state == "paused":
        return Check(
            "connection", "pass", "paused by the circuit breaker (see consecutive_failures)"
        )
    return Check("connection", "pass", f"pipeline is {v.state}")


def _realtime(v: _View) -> Check:
    name = "realtime"
    listener = v.source_status.get("listener")
    if not isinstance(listener, dict) or listener.get("enabled") is False:
        return Check(name, "pass", "n/a: the source has no real-time listener")
    attempts = int(listener.get("reconnect_attempts") or 0)
    last_error = _message(str(listener.get("last_error") or "no error recorded"))
    down = listener.get("down_since")
    since = f" since {_ago(v.now, float(down))}" if down else ""
    if listener.get("gave_up"):
        return Check(
            name,
            "fail",
            f"listener down{since}: gave up after {attempts} reconnect attempt(s) "
            f"(last: {last_error})",
            f"the real-time listener of source {_quote(v.source)} could not reconnect "
            f"({last_error}): check that the source database is up and accepts this "
            "connection (URL, credentials, max_connections, pg_hba.conf); it keeps retrying "
            "every reconnect.max_delay and the change log keeps every change meanwhile, "
            "polled every poll_interval, so changes arrive late but none is lost",
        )
    if listener.get("connected"):
        return Check(name, "pass", "listener connected")
    if not attempts:
        return Check(name, "pass", "listener connecting")
    limit = listener.get("max_attempts")
    of = f" of {limit}" if limit else ""
    return Check(
        name,
        "warn",
        f"listener reconnecting{since}: attempt {attempts}{of} failed (last: {last_error})",
        f"the real-time listener of source {_quote(v.source)} lost its connection "
        f"({last_error}) and is reconnecting with backoff: changes arrive by polling the "
        "change log meanwhile; if it persists, check the source database's availability",
    )


def _snapshot(v: _View) -> Check:
    name = "snapshot"
    snapshot = v.source_status.get("snapshot")
    if not isinstance(snapshot, dict):
        return Check(name, "pass", "n/a: the source takes no snapshot")
    rows = int(snapshot.get("rows") or 0)
    if snapshot.get("done"):
        return Check(name, "pass", f"snapshot done ({rows:,} rows)")
    estimate = snapshot.get("rows_estimate")
    progress = f"{rows:,} rows copied"
    if estimate:
        progress += f" of about {int(estimate):,} ({min(1.0, rows / int(estimate)):.0%})"
    last_key = snapshot.get("last_key")
    after = f", up to key {_quote(str(last_key))}" if last_key is not None else ""
    if v.state in _NOT_STARTED:
        return Check(
            name,
            "warn",
            f"snapshot unfinished: {progress}{after}; the pipeline is {v.state}",
            f"the snapshot of source {_quote(v.source)} is unfinished ({progress}): the "
            "target lacks rows until it ends; start the pipeline (syncworker start "
            f"{v.name}) and it resumes after the last copied key",
        )
    return Check(name, "pass", f"snapshot in progress: {progress}{after}")


def _source_failed(v: _View, count: int | None) -> Check:
    if count is None:
        return Check("source_failed", "pass", "n/a: the source keeps no failed records")
    if count < DEAD_LETTERS_WARN:
        return Check("source_failed", "pass", f"no failed records in source {_quote(v.source)}")
    failed = "1 record" if count == 1 else f"{count} records"
    return Check(
        "source_failed",
        "warn",
        f"{failed} failed in source {_quote(v.source)} (dead_letter store 'source')",
        f"{failed} failed and kept in source {_quote(v.source)}: see why with syncworker "
        "outbox stats, send them again with syncworker outbox retry-failed",
    )


def _dead_letters(pipeline: str, count: int) -> Check:
    if count < DEAD_LETTERS_WARN:
        return Check("dead_letters", "pass", "no dead letters waiting")
    waiting = "1 dead letter waiting" if count == 1 else f"{count} dead letters waiting"
    return Check(
        "dead_letters",
        "warn",
        f"{waiting} (status 'dead')",
        f"{waiting}: inspect with syncworker dlq list --pipeline {pipeline}, "
        f"requeue with syncworker dlq requeue --all --pipeline {pipeline}",
    )


# -- wording -----------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """``text`` in quotes, as written: never Python's escapes (``sink \\'algolia\\'``)."""
    return f'"{text}"' if "'" in text else f"'{text}'"


def _message(text: str) -> str:
    """One line, secrets masked, at most MESSAGE_MAX_CHARS."""
    line = " ".join(redact_url(text).split())
    return line if len(line) <= MESSAGE_MAX_CHARS else line[: MESSAGE_MAX_CHARS - 3] + "..."


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _span(value_s: float) -> str:
    """A duration a person reads at a glance: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    value_s = max(0.0, value_s)
    if value_s < 120:
        return f"{format_seconds(value_s)} s"
    if value_s < 2 * 3600:
        return f"{value_s / 60:.0f} min"
    if value_s < 2 * 86400:
        return f"{value_s / 3600:.0f} h"
    return f"{value_s / 86400:.0f} d"


def _ago(now: float, at: float) -> str:
    return f"{_span(now - at)} ago"
