"""The ``jobs:`` section of ``syncworker.yaml``: the queue backend, queues, tasks and cron.

    jobs:
      backend: {type: redis, url: "${REDIS_URL}", prefix: "messenger:jobs"}
      queues:
        media: {concurrency: 2, timeout: 1m}
      tasks:
        process_video: {handler: "myapp.media:process_video", queue: media, timeout: 5m}
      cron:
        cleanup_hourly: {schedule: "0 * * * *", task: cleanup_messages}

The models only validate; ``build_jobs`` turns them into a registry, a ``Jobs`` client, a
``Worker`` and a ``CronScheduler``; ``jobs.service.JobsService`` runs them in the engine.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter
from pydantic import Field, ValidationInfo, field_validator

from syncworker.core.durations import DurationS
from syncworker.core.fields import StrictModel
from syncworker.errors import ConfigError
from syncworker.jobs.backoff import Backoff
from syncworker.jobs.cron import CronEntry, CronScheduler
from syncworker.jobs.enqueue import Jobs
from syncworker.jobs.kits.base import Kit, is_kit_handler, resolve_kit_handler, split_kit_handler
from syncworker.jobs.kits.config import KitsConfig
from syncworker.jobs.tasks import Task, TaskRegistry
from syncworker.jobs.worker import QueueSettings, Worker
from syncworker.queue.base import QueueBackend
from syncworker.queue.config import QueueBackendConfig, validate_backend

_Strict = StrictModel


class BackoffConfig(_Strict):
    base: DurationS = Field(5.0, ge=0, description="wait before the first retry (seed: 5s)")
    factor: float = Field(2.0, ge=1, description="each retry waits this much longer (5s, 10s, 20s)")
    max: DurationS = Field(3600.0, ge=0, description="longest wait between attempts")
    jitter: float = Field(0.1, ge=0, le=1, description="random spread of each wait, a fraction")


class QueueSettingsConfig(_Strict):
    concurrency: int = Field(1, ge=1, le=10_000, description="jobs of this queue run at once")
    timeout: DurationS = Field(
        60.0, gt=0, description="default time limit per job; a task's own timeout wins"
    )


class TaskConfig(_Strict):
    handler: str = Field(
        description="the function, as 'package.module:function', or a kit's handler as "
        "'kit:FAMILY.NAME' ('kit:media.image'; the kit configured under jobs.kits)"
    )
    queue: str = Field("default", min_length=1, description="the queue its jobs go to")
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    timeout: DurationS | None = Field(
        None, gt=0, description="time limit per run (default: the queue's)"
    )
    retries: int = Field(3, ge=0, le=100, description="runs after the first failed one")
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    cpu: bool = Field(
        False, description="run in the process pool (CPU-bound work that would block the loop)"
    )

    @field_validator("handler")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if is_kit_handler(value):
            split_kit_handler(value)
            return value
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"expected 'package.module:function', got {value!r}")
        return value


class CronConfig(_Strict):
    schedule: str = Field(description="a cron expression ('0 * * * *') or @hourly, @daily...")
    task: str = Field(min_length=1, description="the task to enqueue at each slot")
    payload: dict[str, Any] = Field(default_factory=dict, description="the job's payload")
    queue: str | None = Field(None, description="default: the task's queue")
    timezone: str = Field("UTC", description="the zone the schedule is read in")
    enabled: bool = Field(True, description="false: validated, never enqueued")

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"expected a cron expression like '*/5 * * * *', got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected e.g. UTC, Europe/Paris"
            ) from None
        return value


class JobsConfig(_Strict):
    backend: QueueBackendConfig = Field(
        description="the queue backend, by type: sqlite (path, table), postgres (url, schema, "
        "pool_size), redis (url, prefix) or memory (this process only)"
    )
    queues: dict[str, QueueSettingsConfig] = Field(
        default_factory=dict, description="queues this process works on, with their settings"
    )
    tasks: dict[str, TaskConfig] = Field(default_factory=dict, description="tasks by name")
    cron: dict[str, CronConfig] = Field(default_factory=dict, description="scheduled jobs")
    kits: KitsConfig = Field(
        default_factory=KitsConfig,
        description="ready-made handler families (media, notifications, cleanup) that "
        "tasks name as 'kit:FAMILY.NAME'",
    )
    worker: bool = Field(
        True, description="false: this process only enqueues (and schedules cron), never runs jobs"
    )
    lease: DurationS = Field(
        30.0, gt=0, description="a running job's lease; a live worker renews it every third"
    )
    shutdown_grace: DurationS = Field(
        10.0, ge=0, description="how long running jobs get at shutdown before they are handed back"
    )
    poll_interval: DurationS = Field(1.0, gt=0, description="fallback poll when no wake-up arrives")
    process_workers: int | None = Field(
        None, ge=1, le=256, description="processes for cpu tasks (default: the CPU count)"
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        return validate_backend(value)

    @field_validator("cron")
    @classmethod
    def _tasks_known(
        cls, value: dict[str, CronConfig], info: ValidationInfo
    ) -> dict[str, CronConfig]:
        tasks = info.data.get("tasks")
        if tasks is None:
            return value
        for name, entry in value.items():
            if entry.task not in tasks:
                known = ", ".join(tasks) or "none"
                raise ValueError(f"cron {name!r}: no task named {entry.task!r}; tasks: {known}")
        return value


@dataclass(slots=True)
class BuiltJobs:
    """What a ``jobs:`` section builds: not yet opened or running."""

    backend: QueueBackend
    registry: TaskRegistry
    jobs: Jobs
    worker: Worker | None
    scheduler: CronScheduler | None
    kits: dict[str, Kit] = field(default_factory=dict)


def build_registry(config: JobsConfig, kits: Mapping[str, Kit] | None = None) -> TaskRegistry:
    """The tasks of ``config``, their handlers imported or taken from ``kits`` (default: the
    kits ``config`` builds, not opened); ``ConfigError`` names the task."""
    registry = TaskRegistry()
    kits = kits if kits is not None else config.kits.build()
    for name, task in config.tasks.items():
        try:
            built = _task(name, task, kits)
        except ConfigError as exc:
            raise ConfigError(exc.reason, path=f"jobs.tasks.{name}.handler") from None
        registry.add(built)
    return registry


def _task(name: str, task: TaskConfig, kits: Mapping[str, Kit]) -> Task:
    defaults: dict[str, Any] = {
        "name": name,
        "queue": task.queue,
        "priority": task.priority,
        "timeout_s": task.timeout,
        "retries": task.retries,
        "backoff": Backoff(
            base_s=task.backoff.base,
            factor=task.backoff.factor,
            max_s=task.backoff.max,
            jitter=task.backoff.jitter,
        ),
        "cpu": task.cpu,
    }
    if is_kit_handler(task.handler):
        return Task(fn=resolve_kit_handler(task.handler, kits), **defaults)
    return Task.from_path(task.handler, **defaults)


def worker_queues(config: JobsConfig) -> dict[str, QueueSettings]:
    """The queues a worker of ``config`` runs: those configured, plus any a task names
    without settings (concurrency 1, the default timeout)."""
    queues = {
        name: QueueSettings(concurrency=settings.concurrency, timeout_s=settings.timeout)
        for name, settings in config.queues.items()
    }
    for task in config.tasks.values():
        queues.setdefault(task.queue, QueueSettings())
    return queues or {"default": QueueSettings()}


def build_jobs(
    config: JobsConfig,
    *,
    backend: QueueBackend | None = None,
    worker_id: str | None = None,
    kits: Mapping[str, Kit] | None = None,
) -> BuiltJobs:
    """The backend, a client, a worker (unless ``worker: false``), a cron scheduler (when
    entries are enabled) and the kits (default: those ``config`` names) for ``config``;
    nothing is opened."""
    kits = dict(kits) if kits is not None else config.kits.build()
    registry = build_registry(config, kits)
    backend = backend if backend is not None else config.backend.build()
    jobs = Jobs(backend, registry)
    worker = None
    if config.worker:
        worker = Worker(
            backend,
            registry,
            worker_queues(config),
            worker_id=worker_id,
            lease_s=config.lease,
            poll_interval_s=config.poll_interval,
            shutdown_grace_s=config.shutdown_grace,
            process_workers=config.process_workers,
        )
    entries = [
        CronEntry(
            name=name,
            schedule=entry.schedule,
            task=entry.task,
            payload=dict(entry.payload),
            queue=entry.queue,
            timezone=entry.timezone,
        )
        for name, entry in config.cron.items()
        if entry.enabled
    ]
    scheduler = CronScheduler(jobs, entries) if entries else None
    return BuiltJobs(backend, registry, jobs, worker, scheduler, kits)
