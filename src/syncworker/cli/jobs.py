"""The job queue of a config's ``jobs:`` section: enqueue, list, show, requeue, counts, prune,
cron list. Each command talks to the backend directly (SQLite file, PostgreSQL, Redis), so it
works whether or not a worker is running."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from syncworker.cli import main
from syncworker.cli.common import EXIT_FAILURE, _console, _json, _user_errors, _when
from syncworker.core import jsonvalue
from syncworker.core.durations import parse_duration_s
from syncworker.errors import ConfigError
from syncworker.observe.logging import redact_value
from syncworker.queue.base import Job, JobState

T = TypeVar("T")
STATES = [state.value for state in JobState]


def _config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SYNCWORKER_CONFIG",
        show_envvar=True,
        default="syncworker.yaml",
        show_default=True,
        help="The config whose jobs: section names the backend and the tasks.",
    )(fn)


def _with_jobs(config_file: Path, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(built)`` with the config's backend open, then close it."""
    from syncworker.config import load_config
    from syncworker.jobs.config import build_jobs

    async def go() -> T:
        config = load_config(config_file)
        if config.app.jobs is None:
            raise ConfigError("no 'jobs' section", file=str(config_file), path="jobs")
        if config.app.jobs.backend.type == "memory":
            raise ConfigError(
                "the memory backend lives inside the worker's process; use the API of the "
                "running engine, or a sqlite, postgres or redis backend",
                file=str(config_file),
                path="jobs.backend.type",
            )
        try:
            built = build_jobs(config.app.jobs.model_copy(update={"worker": False}))
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=str(config_file), path=exc.path) from None
        await built.backend.open()
        try:
            return await work(built)
        except ConfigError as exc:  # an unknown task, a refused payload
            if exc.file is not None:
                raise
            raise ConfigError(exc.reason, file=str(config_file), path=exc.path) from None
        finally:
            await built.backend.close()

    with _user_errors():
        return asyncio.run(go())


@main.group()
def jobs() -> None:
    """The job queue: enqueue, inspect, requeue dead jobs, cron."""


@jobs.command("enqueue")
@click.argument("task")
@click.option("--json", "payload_json", default="null", help="The payload, as JSON.")
@click.option("--delay", help="Run after this long (e.g. 30s, 5m).")
@click.option("--priority", type=int, help="Higher runs first (default: the task's).")
@click.option("--queue", help="Default: the task's queue.")
@click.option("--unique-key", help="While a job with this key is queued or running, no other.")
@_config_option
def jobs_enqueue(
    task: str,
    payload_json: str,
    delay: str | None,
    priority: int | None,
    queue: str | None,
    unique_key: str | None,
    config_file: Path,
) -> None:
    """Enqueue one job of TASK; prints its id."""
    try:
        payload = jsonvalue.loads(payload_json.encode())
    except ValueError as exc:
        raise click.BadParameter(f"expected JSON: {exc}", param_hint="--json") from None
    try:
        delay_s = parse_duration_s(delay) if delay is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--delay") from None

    async def work(built: Any) -> str:
        try:
            job_id: str = await built.jobs.enqueue(
                task,
                payload,
                delay_s=delay_s,
                priority=priority,
                queue=queue,
                unique_key=unique_key,
            )
        except ValueError as exc:  # the task's model refused the payload
            raise ConfigError(f"task {task!r}: payload refused: {exc}", path="--json") from None
        return job_id

    click.echo(_with_jobs(config_file, work))


@jobs.command("list")
@click.option("--queue")
@click.option("--state", "state", type=click.Choice(STATES))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_config_option
def jobs_list(
    queue: str | None, state: str | None, limit: int, as_json: bool, config_file: Path
) -> None:
    """Jobs, newest first (dead ones with their error: --state dead)."""
    found = _with_jobs(
        config_file,
        lambda built: built.backend.list_jobs(
            queue=queue, state=JobState(state) if state else None, limit=limit
        ),
    )
    if as_json:
        click.echo(_json([_job_dict(job, stack=False) for job in found]))
        return
    table = Table(
        "id", "queue", "task", "state", "attempts", "run at", "error", title=f"{len(found)} job(s)"
    )
    for job in found:
        table.add_row(
            job.id,
            job.queue,
            job.task,
            job.state.value,
            f"{job.attempts}/{job.max_attempts}",
            _when(job.run_at),
            redact_value(job.error or "-")[:70],
        )
    _console().print(table)


@jobs.command("show")
@click.argument("job_id")
@_config_option
def jobs_show(job_id: str, config_file: Path) -> None:
    """One job whole: payload, progress, result, error and stack."""
    job = _with_jobs(config_file, lambda built: built.backend.get(job_id))
    if job is None:
        click.echo(f"error: no job with id {job_id!r}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(_json(_job_dict(job, stack=True)))


@jobs.command("requeue")
@click.argument("ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Every dead job (of --queue).")
@click.option("--queue")
@_config_option
def jobs_requeue(
    ids: tuple[str, ...], all_dead: bool, queue: str | None, config_file: Path
) -> None:
    """Dead jobs back to the queue, attempts reset (their last error kept)."""
    if bool(ids) == all_dead:
        raise click.UsageError("give job ids or --all-dead, not both")

    async def work(built: Any) -> int:
        if not all_dead:
            return int(await built.backend.requeue(list(ids)))
        total = 0
        while True:  # pages of dead jobs: a requeued page leaves the dead state
            page = await built.backend.list_jobs(queue=queue, state=JobState.DEAD, limit=500)
            count = int(await built.backend.requeue([job.id for job in page])) if page else 0
            total += count
            if count == 0:
                return total

    count = _with_jobs(config_file, work)
    click.echo(f"requeued {count} job(s)")
    if ids and count < len(ids):
        click.echo(f"{len(ids) - count} id(s) were not dead jobs and were left alone", err=True)


@jobs.command("counts")
@click.option("--json", "as_json", is_flag=True)
@_config_option
def jobs_counts(as_json: bool, config_file: Path) -> None:
    """Jobs per queue and state."""
    counts = _with_jobs(config_file, lambda built: built.backend.counts())
    figures = {
        queue: {state.value: int(by_state.get(state, 0)) for state in JobState}
        for queue, by_state in sorted(counts.items())
    }
    if as_json:
        click.echo(_json(figures))
        return
    table = Table("queue", *STATES, title="jobs")
    for queue, by_state in figures.items():
        table.add_row(queue, *(str(by_state[state]) for state in STATES))
    _console().print(table)


@jobs.command("prune")
@click.option("--state", "state", type=click.Choice(["completed", "dead"]), required=True)
@click.option("--older-than", required=True, help="Finished longer ago than this (e.g. 7d).")
@_config_option
def jobs_prune(state: str, older_than: str, config_file: Path) -> None:
    """Delete finished jobs of one state."""
    try:
        older_than_s = parse_duration_s(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    count = _with_jobs(
        config_file, lambda built: built.backend.prune(JobState(state), older_than_s)
    )
    click.echo(f"deleted {count} {state} job(s)")


@jobs.group("cron")
def jobs_cron() -> None:
    """Scheduled jobs."""


@jobs_cron.command("list")
@click.option("--json", "as_json", is_flag=True)
@_config_option
def jobs_cron_list(as_json: bool, config_file: Path) -> None:
    """Each cron entry: schedule, zone, last slot enqueued and next run."""

    async def work(built: Any) -> list[dict[str, Any]]:
        if built.scheduler is None:
            return []
        last = await built.backend.cron_state()
        return [
            {
                "name": entry.name,
                "schedule": entry.schedule,
                "timezone": entry.timezone,
                "task": entry.task,
                "last_slot": _iso(last.get(entry.name), entry.tz),
                "next_run": slot.isoformat(),
            }
            for entry, slot in built.scheduler.next_runs()
        ]

    entries = _with_jobs(config_file, work)
    if as_json:
        click.echo(_json(entries))
        return
    table = Table("name", "schedule", "zone", "task", "last slot", "next run", title="cron")
    for entry in entries:
        table.add_row(
            entry["name"],
            entry["schedule"],
            entry["timezone"],
            entry["task"],
            entry["last_slot"] or "-",
            entry["next_run"],
        )
    _console().print(table)


def _iso(ts: float | None, tz: Any) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).isoformat()


def _job_dict(job: Job, *, stack: bool) -> dict[str, Any]:
    figures = job.describe(whole=stack)
    for name in ("run_at", "enqueued_at", "finished_at", "lease_until"):
        figures[name] = _utc(figures[name])
    redacted: dict[str, Any] = redact_value(figures)
    return redacted


def _utc(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
