"""Request and response bodies of the control API; they also make its OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, one line")
    detail: Any = Field(None, description="more context (validation errors, reasons)")


class Liveness(BaseModel):
    status: Literal["ok"]
    pid: int
    uptime_s: float | None


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(description="why not ready, one per pipeline problem")


class HealthCheck(BaseModel):
    name: str
    status: Literal["pass", "warn", "fail"]
    detail: str
    recommendation: str | None


class Health(BaseModel):
    status: Literal["HEALTHY", "DEGRADED", "UNHEALTHY"]
    checks: list[HealthCheck]
    recommendations: list[str]


class Totals(BaseModel):
    processed: int
    written: int
    dead_lettered: int = Field(description="refused records stored as dead letters")
    kept_by_source: int = Field(
        0,
        description="refused records handed back to a source that keeps failures "
        "(dead_letter store 'source'), each a failed attempt there",
    )
    filtered: int
    runs: int
    failed_batches: int
    added: int = Field(0, description="upserts that created a record (sinks that tell)")
    updated: int = Field(0, description="upserts that replaced a record (sinks that tell)")
    removed: int = Field(
        0, description="records removed at the end of a group's full read (gone from the source)"
    )
    succeeded_runs: int = Field(0, description="runs that ended 'success'")
    failed_runs: int = Field(0, description="runs that ended 'partial' or 'error'")


class CurrentSync(BaseModel):
    id: str = Field(description="the sync's id; the run record keeps it as sync_id")
    mode: str
    key: str | None = Field(None, description="the key or group of a force sync")
    started_at: float | None = Field(None, description="None: asked for, about to start")


class LastError(BaseModel):
    type: str
    message: str
    at: float


class Circuit(BaseModel):
    open: bool
    consecutive_failures: int
    resumes_in_s: float | None


class VerifyKeys(BaseModel):
    count: int = Field(description="keys of this kind (exact)")
    keys: list[int | str] = Field(description="the first of them (at most 20)")


class VerifySide(BaseModel):
    label: str = Field(description="host:port/database table (and filter); no credentials")
    rows: int


class VerifyResult(BaseModel):
    """The last scheduled verify's report, short form (``syncworker verify --json`` has all)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["consistent", "inconsistent"]
    source: VerifySide
    target: VerifySide
    difference: int = Field(description="source rows minus target rows")
    differences: int = Field(description="missing + extra + different keys")
    missing: VerifyKeys = Field(description="in the source (after its filter), not the target")
    extra: VerifyKeys = Field(description="in the target only")
    different: VerifyKeys = Field(description="in both, with compared columns differing")
    recent_updates_last_hour: int | None = None
    ignored_recent: int = Field(0, description="keys left out as changed recently (in flight)")
    started_at: str
    duration_s: float


class VerifyStatus(BaseModel):
    every_s: float
    ignore_recent_s: float
    repair: bool
    running: bool
    runs: int
    last_run_at: float | None
    next_run_at: float | None
    last_error: str | None = Field(description="why the last run could not compare, if so")
    last: VerifyResult | None


class PipelineStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    state: Literal["created", "starting", "running", "paused", "stopping", "stopped"]
    started_at: float | None
    running: bool
    schedule: str
    source: str
    sinks: list[str]
    in_flight: int
    current_sync: CurrentSync | None = Field(
        None, description="the sync under way (or asked for and about to start)"
    )
    totals: Totals
    last_sync_at: float | None
    last_duration_ms: float | None
    last_paused_ms: float | None = Field(
        None, description="time the last run waited out the circuit breaker, not in its duration"
    )
    last_result: Literal["success", "partial", "error"] | None
    last_error: LastError | None
    circuit: Circuit
    backlog: int | None = Field(None, description="records waiting, where the source counts")
    source_failed: int | None = Field(
        None,
        description="records the source keeps as failed (dead_letter store 'source'), where "
        "the source tells",
    )
    oldest_waiting_s: float | None = Field(
        None, description="age of the oldest record not delivered yet, where the source tells"
    )
    lock: dict[str, Any] | None = Field(None, description="lock holder, where a lock is set")
    health: Health
    verify: VerifyStatus | None = Field(
        None, description="the scheduled verify (pipelines with a verify: section only)"
    )


class RunSummary(BaseModel):
    id: int | None
    pipeline: str
    mode: str
    status: Literal["success", "partial", "error", "skipped"]
    started_at: float
    finished_at: float
    duration_ms: float = Field(description="the run's work: wall time less paused_ms")
    paused_ms: float = Field(0.0, description="time the circuit breaker held the run paused")
    processed: int
    written: int
    dead_lettered: int
    filtered: int
    added: int = 0
    updated: int = 0
    removed: int = 0
    key: str | None = Field(None, description="the key or group of a force sync")
    sync_id: str | None = Field(None, description="the id the sync had while it ran")
    streams: dict[str, int]
    error: str | None


class PipelineDetail(PipelineStatus):
    recent_runs: list[RunSummary]


class EngineStatus(BaseModel):
    pid: int
    started_at: float | None
    uptime_s: float | None
    stopping: bool
    pipelines: dict[str, PipelineStatus]


class PipelineState(BaseModel):
    pipeline: str
    state: str


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["incremental", "full", "force"] = "incremental"
    key: str | None = Field(None, description="force: the key or group to sync now")
    wait: bool = Field(True, description="false: answer 202 at once, the run goes on")


class SyncAccepted(BaseModel):
    pipeline: str
    mode: str
    accepted: Literal[True]


class DeadLetterItem(BaseModel):
    id: int
    pipeline: str
    stream: str
    record_key: str
    op: str
    status: Literal["dead", "requeued", "replaying"]
    where: str | None
    error_type: str
    error: str
    attempts: int
    created_at: float | None


class DeadLetterDetail(DeadLetterItem):
    data: dict[str, Any]
    meta: dict[str, Any]
    stack: str | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetterItem]
    total: int = Field(description="dead letters matching the filter, all pages")


class Requeued(BaseModel):
    id: int
    status: Literal["requeued"]


class Deleted(BaseModel):
    id: int
    deleted: Literal[True]


class HistoryPoint(BaseModel):
    t: float = Field(description="start of the bucket, unix time")
    records: int = Field(description="records of the batches committed in it")
    written: int = Field(description="writes by all sinks")
    refused: int = Field(description="records a sink refused")
    batches: int
    failed_batches: int = Field(description="batches rolled back")
    batch_ms_avg: float | None
    batch_ms_max: float | None


class SinkActivity(BaseModel):
    written: int = Field(description="records written since the engine started")
    refused: int = Field(description="records refused since the engine started")


class BatchLatency(BaseModel):
    last: float
    p50: float
    p95: float
    max: float
    count: int = Field(description="batches measured (the most recent ones)")


class PipelineHistory(BaseModel):
    points: list[HistoryPoint] = Field(description="every bucket of the window, oldest first")
    rate_per_s: float = Field(description="records per second over rate_window_s")
    rate_window_s: float
    sinks: dict[str, SinkActivity]
    batch_ms: BatchLatency | None = Field(description="batch durations, milliseconds")
    last_batch_at: float | None


class HistoryPage(BaseModel):
    bucket_s: float
    now: float
    pipelines: dict[str, PipelineHistory]


class ErrorItem(BaseModel):
    id: int
    type: str
    pipeline: str
    record_key: str | None
    message: str
    created_at: float | None
    resolved: bool


class ErrorPage(BaseModel):
    items: list[ErrorItem]


class SystemMetrics(BaseModel):
    cpu_percent: float = Field(description="this process, since the previous call")
    cpu_count: int | None
    load_average: list[float]
    memory_total_bytes: int
    memory_available_bytes: int
    memory_percent: float
    process_rss_bytes: int
    process_threads: int
    process_open_files: int
    process_uptime_s: float
    pid: int


class ShuttingDown(BaseModel):
    shutting_down: Literal[True]


class LegacyStats(BaseModel):
    """Seed 002's sync stats, summed over the pipelines since the engine started."""

    model_config = ConfigDict(extra="allow")

    total_syncs: int
    successful_syncs: int
    failed_syncs: int
    records_added: int
    records_updated: int
    records_removed: int
    last_sync_duration: float = Field(description="milliseconds, the most recent run's")


class LegacyStatus(BaseModel):
    """Seed 002's status shape, for its curl commands and dashboards."""

    is_running: bool
    config: dict[str, Any]
    stats: LegacyStats
    last_sync_time: str | None
    current_syncs: dict[str, CurrentSync] = Field(
        default_factory=dict, description="pipelines with a sync under way"
    )
    pipelines: dict[str, PipelineStatus]


class SyncRunning(BaseModel):
    """409 of the seed's paths and of force: a sync of that pipeline is under way."""

    error: str
    detail: dict[str, Any] | None = Field(
        None,
        description="a sync under way: pipeline, sync_id, mode, key, started_at; a stopped "
        "pipeline: null",
    )


class DiscrepancyTotals(BaseModel):
    groups: int
    groups_differing: int
    source_only_groups: int
    target_only_groups: int
    source_rows: int
    target_rows: int
    missing: int
    extra: int
    different: int
    differences: int
    ignored_recent: int


class GroupDifferences(BaseModel):
    model_config = ConfigDict(extra="allow")

    group: str
    present: Literal["both", "source", "target"]
    source_rows: int
    target_rows: int
    missing: VerifyKeys
    extra: VerifyKeys
    different: VerifyKeys
    ignored_recent: int


class DiscrepancyReport(BaseModel):
    """A grouped pipeline's discrepancy check (``syncworker discrepancy-check --json``)."""

    model_config = ConfigDict(extra="allow")

    pipeline: str
    status: Literal["consistent", "inconsistent"]
    totals: DiscrepancyTotals
    groups: list[GroupDifferences] = Field(description="groups with differences only")
    repair: dict[str, Any] | None = None
    started_at: str
    duration_s: float


class LegacyDiscrepancies(BaseModel):
    success: bool
    has_discrepancies: bool
    total_discrepancies: int
    missing: int
    extra: int
    different: int
    results: dict[str, DiscrepancyReport]


class LegacySyncResult(BaseModel):
    success: bool
    results: dict[str, RunSummary]


class LegacyControl(BaseModel):
    success: bool
    pipelines: dict[str, str]


# -- the job queue (the config's jobs: section) ---------------------------------------------

JobStateName = Literal["delayed", "queued", "active", "completed", "dead"]
NO_NUL = r"^[^\x00]*$"


class QueueFigures(BaseModel):
    """Seed 003's queue metrics, one queue."""

    waiting: int = Field(description="jobs due, waiting for a worker (state queued)")
    active: int = Field(description="jobs running under a lease, on any worker")
    delayed: int = Field(description="jobs waiting for their run time or a retry's backoff")
    completed: int = Field(description="completed jobs kept (until pruned)")
    failed: int = Field(description="failed attempts (raised or timed out) since this started")
    dead: int = Field(description="jobs out of attempts or failed for good, kept until requeued")
    running: int | None = Field(description="jobs this process runs now (None: no worker here)")
    concurrency: int | None = Field(description="this process's limit for the queue")
    completed_since_start: int = Field(description="jobs this process completed since start")
    retried_since_start: int = Field(description="retries this process scheduled since start")
    dead_since_start: int = Field(description="jobs this process moved to dead since start")


class JobItem(BaseModel):
    id: str
    task: str
    queue: str
    state: JobStateName
    priority: int
    attempts: int = Field(description="attempts started, the current one included")
    max_attempts: int
    run_at: float = Field(description="when it is due, unix time")
    enqueued_at: float
    finished_at: float | None
    unique_key: str | None
    worker: str | None = Field(description="the worker holding it while active")
    lease_until: float | None
    payload: Any = Field(description="the payload (text when it is not JSON)")
    progress: Any
    result: Any
    error: str | None = Field(description="the last failure's reason")


class JobDetail(JobItem):
    stack: str | None = Field(description="the last failure's traceback")
    timeout_s: float | None


class JobPage(BaseModel):
    items: list[JobItem] = Field(description="newest first")


class EnqueueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # No NUL in names: PostgreSQL text refuses it, and no task or queue can be named so.
    task: str = Field(
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="a task of the jobs: section",
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="checked against the task's model when it has one"
    )
    delay_s: float | None = Field(None, ge=0, le=10 * 365 * 86_400, description="run later")
    priority: int | None = Field(None, ge=-1000, le=1000, description="default: the task's")
    queue: str | None = Field(
        None, min_length=1, max_length=200, pattern=NO_NUL, description="default: the task's"
    )
    unique_key: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        pattern=NO_NUL,
        description="while a job with this key is delayed, queued or active, its id is "
        "returned and nothing is added",
    )


class Enqueued(BaseModel):
    id: str = Field(description="the new job's id, or the held unique key's job")


class JobRequeued(BaseModel):
    id: str
    state: Literal["queued"]


class QueueRequeued(BaseModel):
    queue: str
    requeued: int = Field(description="dead jobs sent back to the queue")
