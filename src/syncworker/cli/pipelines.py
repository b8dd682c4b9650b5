"""Pipelines: run, validate, demo; status, sync, start, stop (here or in a running engine)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from syncworker.cli import main
from syncworker.cli.common import (
    EXIT_FAILURE,
    _console,
    _control,
    _json,
    _ms,
    _state_options,
    _user_errors,
    _when,
)
from syncworker.cli.progress import with_snapshot_progress
from syncworker.config import Config, load_config, parse_listen
from syncworker.core.engine import Engine
from syncworker.errors import ConfigError
from syncworker.observe.logging import redact_value
from syncworker.state import state_store_from_url

API_EXTRA_HINT = "install the api extra: pip install -e '.[api]' in the checkout (or make install)"


# -- run / validate -----------------------------------------------------------------------


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--once", is_flag=True, help="Run one sync of every pipeline, then exit.")
@click.option("--pipeline", "only", multiple=True, help="Run only this pipeline (repeatable).")
@click.option(
    "--api",
    "api_listen",
    metavar="HOST:PORT",
    help="Serve the control API and dashboard here (overrides api.listen).",
)
def run(file: Path, once: bool, only: tuple[str, ...], api_listen: str | None) -> None:
    """Run the pipelines of FILE until SIGTERM/SIGINT."""
    with _user_errors():
        config = load_config(file)
        sys.exit(
            asyncio.run(_run(config, once=once, only=list(only) or None, api_listen=api_listen))
        )


async def _run(
    config: Config, *, once: bool, only: list[str] | None, api_listen: str | None = None
) -> int:
    state = state_store_from_url(config.app.state)
    engine = Engine(
        config.build(state, only), state, shutdown_timeout_s=config.app.shutdown_timeout
    )
    if not once:
        # Before the API: started after the pipelines, stopped after the API. Lazy: the
        # verify engine's PostgreSQL side needs psycopg, an extra.
        from syncworker.reconcile.scheduled import verify_services

        engine.services.extend(verify_services(config, only))
        _add_jobs(engine, config)
        _add_api(engine, config, api_listen)
    try:
        if once:
            work = engine.run_once(install_signal_handlers=True)
            runs = await with_snapshot_progress(engine.pipelines, work)
            return 0 if all(r.status == "success" for r in runs) else EXIT_FAILURE
        return await engine.run()
    except ConfigError as exc:
        if exc.file is not None:
            raise
        # A connector refused its settings when it connected: name the file it came from.
        raise ConfigError(exc.reason, file=str(config.path), path=exc.path) from exc
    finally:
        _print_final_statistics(engine.final_stats)


def _print_final_statistics(stats: dict[str, dict[str, Any]]) -> None:
    """Seed 004's final statistics, for people, on stderr (stdout stays the logs' or the
    caller's); the same figures are the ``final_statistics`` log events."""
    if not stats:
        return
    table = Table(
        "pipeline",
        Column("synced", justify="right"),
        Column("processed", justify="right"),
        Column("errors", justify="right"),
        Column("dead letters", justify="right"),
        "last sync",
        Column("duration", justify="right"),
        "result",
        Column("uptime", justify="right"),
        title="Final statistics",
    )
    for name, figures in stats.items():
        uptime_s = figures.get("uptime_s")
        table.add_row(
            name,
            str(figures["synced"]),
            str(figures["processed"]),
            str(figures["errors"]),
            str(figures["dead_lettered"]),
            _when(figures.get("last_sync_at")),
            _ms(figures.get("last_duration_ms")),
            str(figures.get("last_result") or "-"),
            "-" if uptime_s is None else f"{uptime_s:.0f} s",
        )
    Console(stderr=True, width=160).print(table)


def _add_jobs(engine: Engine, config: Config) -> None:
    """The ``jobs:`` section's worker and cron, started after the pipelines, stopped before
    them (and after the API)."""
    if config.app.jobs is None:
        return
    from syncworker.jobs.service import JobsService

    with _config_file(config):
        engine.services.append(JobsService.from_config(config.app.jobs))


@contextmanager
def _config_file(config: Config) -> Iterator[None]:
    """A ``ConfigError`` raised inside names the config file."""
    try:
        yield
    except ConfigError as exc:
        if exc.file is not None:
            raise
        raise ConfigError(exc.reason, file=str(config.path), path=exc.path) from exc


def _add_api(engine: Engine, config: Config, api_listen: str | None) -> None:
    api = config.app.api
    if api is None and api_listen is None:
        return
    try:
        host, port = parse_listen(api_listen or (api.listen if api else ""))
    except ValueError as exc:
        raise ConfigError(str(exc), path="--api") from None
    try:
        from syncworker.api.server import ApiServer
    except ImportError as exc:
        raise ConfigError(
            f"the API needs a package that is not installed ({exc.name}); {API_EXTRA_HINT}"
        ) from None
    engine.services.append(
        ApiServer(engine, host=host, port=port, token=api.token if api else None)
    )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check FILE without starting anything: every setting, and every connector built as
    `run` builds it (a transform's module imported, a lock's URL parsed), without connecting."""
    with _user_errors():
        config = load_config(file)
        config.build(state_store_from_url(config.app.state), list(config.pipelines))
        if config.app.jobs is not None:
            from syncworker.jobs.config import build_registry

            with _config_file(config):
                registry = build_registry(config.app.jobs)
        if config.app.api is not None:
            _check_api_installed(config)
    names = ", ".join(config.pipelines)
    summary = f"{len(config.pipelines)} pipeline(s)" + (f": {names}" if names else "")
    if config.app.jobs is not None:
        summary += f", {len(registry)} task(s)"
        summary += f", {len(config.app.jobs.cron)} cron entries"
    click.echo(f"{file}: ok ({summary})")


def _check_api_installed(config: Config) -> None:
    """What `run` refuses when the file has an `api` section and the api extra is missing."""
    try:
        import syncworker.api.server  # noqa: F401 - importing it is the check
    except ImportError as exc:
        raise ConfigError(
            f"the API needs a package that is not installed ({exc.name}); {API_EXTRA_HINT}",
            file=str(config.path),
            path="api",
            line=config.lines.get(("api",)),
        ) from None


# -- demo ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("syncworker-demo"),
    show_default=True,
    help="Workspace for the queue, the state store and the output files.",
)
@click.option("--messages", default=10_000, show_default=True, help="Sample messages to queue.")
@click.option(
    "--jobs", "job_count", default=1_000, show_default=True, help="Sample jobs (0: no jobs demo)."
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo(workdir: Path, messages: int, job_count: int, progress: bool) -> None:
    """Run the embedded demo, no services: a SQLite queue -> JSONL files + SQLite table
    pipeline, then seed 003's job queues (retries, dead jobs, a process pool) on SQLite."""
    from syncworker.demo import run_demo
    from syncworker.demo_jobs import run_jobs_demo

    with _user_errors():
        code = asyncio.run(run_demo(workdir, messages, progress=progress))
        if job_count > 0:
            code = code or asyncio.run(run_jobs_demo(workdir, job_count, progress=progress))
        sys.exit(code)


# -- status -------------------------------------------------------------------------------


@main.command()
@_state_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool, **target: Any) -> None:
    """Pipelines: state, health, counters (--api), or last runs and dead letters (state store)."""
    report = _control(target, lambda c: c.status())
    if as_json:
        click.echo(_json(redact_value(report)))
        return
    if report["source"] == "engine":
        _print_engine_status(report)
    else:
        _print_stored_status(report)


def _print_engine_status(report: dict[str, Any]) -> None:
    """The state store's columns, as ``status --config`` prints them, then the engine's."""
    extra = ("state", "health", "backlog", "failed in source")
    table = _status_table("syncworker engine status", extra)
    for name, p in report["pipelines"].items():
        backlog = "-" if p["backlog"] is None else str(p["backlog"])
        # Records a ``store: source`` pipeline handed back, kept failed by the source: not
        # dead letters, so they get their own column ("-": the source keeps none).
        failed = p.get("source_failed")
        kept = "-" if failed is None else str(failed)
        table.add_row(*_status_row(name, p), p["state"], p["health"]["status"], backlog, kept)
    console = _console()
    console.print(table)
    for name, p in report["pipelines"].items():
        if p["health"]["status"] != "HEALTHY":
            for line in p["health"]["recommendations"]:
                console.print(f"{name}: {line}")


def _print_stored_status(report: dict[str, Any]) -> None:
    table = _status_table("syncworker status (state store)")
    for name, item in report["pipelines"].items():
        table.add_row(*_status_row(name, item))
    _console().print(table)


def _status_table(title: str, extra: tuple[str, ...] = ()) -> Table:
    # Figures and times never fold (a folded "UTC" reads as another row); the error text may.
    columns = ("pipeline", "last run", "result", "processed", "duration", "dead letters")
    return Table(
        *(Column(name, no_wrap=True) for name in columns),
        Column("last error", overflow="fold"),
        *(Column(name, no_wrap=True) for name in extra),
        title=title,
    )


def _status_row(name: str, item: dict[str, Any]) -> list[str]:
    last = item["last_run"] or {}
    return [
        name,
        _when(last.get("finished_at")),
        last.get("status", "-"),
        str(last.get("processed", "-")),
        _ms(last.get("duration_ms")),
        str(item["dead_letters"].get("dead", 0)),
        ((item["last_error"] or {}).get("message") or "-")[:60],
    ]


@main.command()
@click.argument("pipeline")
@click.option(
    "--mode",
    type=click.Choice(["incremental", "full", "force"]),
    default="incremental",
    show_default=True,
)
@click.option("--key", default=None, help="force: the key or group to sync (seed 002: an event).")
@click.option("--no-wait", is_flag=True, help="With --api: return once the run is accepted.")
@_state_options
def sync(pipeline: str, mode: str, key: str | None, no_wait: bool, **target: Any) -> None:
    """Run one sync of PIPELINE now: in the running engine (--api) or here (--config)."""
    result = _control(target, lambda c: c.sync(pipeline, mode, not no_wait, key), needs="config")
    click.echo(_json(redact_value(result)))
    if result.get("status") not in (None, "success"):
        sys.exit(EXIT_FAILURE)


@main.command()
@click.argument("pipeline")
@_state_options
def start(pipeline: str, **target: Any) -> None:
    """Start PIPELINE in the running engine (--api)."""
    result = _control(target, lambda c: c.start(pipeline), needs="engine")
    click.echo(f"{result['pipeline']}: {result['state']}")


@main.command()
@click.argument("pipeline")
@_state_options
def stop(pipeline: str, **target: Any) -> None:
    """Stop PIPELINE in the running engine (--api); in-flight batches finish first."""
    result = _control(target, lambda c: c.stop(pipeline), needs="engine")
    click.echo(f"{result['pipeline']}: {result['state']}")
