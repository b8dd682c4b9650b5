"""The PostgreSQL outbox: which outbox a command means, its errors; stats, retry-failed, cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from syncworker.cli import main
from syncworker.cli.common import _json, _user_errors
from syncworker.config import load_sources
from syncworker.errors import ConfigError, SyncWorkerError


def _outbox_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Which outbox: from a config's pg_outbox pipeline, or given directly."""
    fn = click.option("--pipeline", help="The pg_outbox pipeline of --config.")(fn)
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Take url, queue and tables from this config's pg_outbox source.",
    )(fn)
    fn = click.option("--queue", help="Queue table [syncworker_outbox].")(fn)
    fn = click.option("--url", envvar="DATABASE_URL", show_envvar=True, help="postgresql:// URL.")(
        fn
    )
    return fn


def _outbox_target(
    url: str | None, queue: str | None, config_file: Path | None, pipeline: str | None
) -> tuple[str, str, list[str], dict[str, str]]:
    """(url, queue, tables, key_columns) from the options, else the config's source."""
    from syncworker.connectors.postgres.outbox import DEFAULT_QUEUE_TABLE

    if config_file is not None:
        # Only the pg_outbox source is read: these commands touch PostgreSQL alone, so the
        # sinks' settings (ALGOLIA_APP_ID...) need not be set.
        sources = load_sources(config_file, "pg_outbox")
        found = [s for n, s in sources.items() if pipeline in (None, n)]
        if len(found) != 1:
            raise ConfigError(
                "expected exactly one pipeline with a pg_outbox source"
                + ("" if pipeline else "; choose one with --pipeline"),
                file=str(config_file),
            )
        source: Any = found[0]
        return (
            url or source.url,
            queue or source.queue_table,
            list(source.tables),
            dict(source.key_columns),
        )
    if not url:
        raise ConfigError("give --url (or DATABASE_URL) or --config FILE", path="--url")
    return url, queue or DEFAULT_QUEUE_TABLE, [], {}


@contextmanager
def _postgres_errors(url: str, queue: str) -> Iterator[None]:
    """What PostgreSQL refuses as one line: a missing outbox says how to install it."""
    import psycopg

    from syncworker.connectors.postgres.client import describe, describe_url

    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as exc:
        raise SyncWorkerError(
            f"outbox {queue!r} is not installed in {describe_url(url)} ({describe(exc)}); "
            "install it with: syncworker pg install"
        ) from None
    except psycopg.Error as exc:
        raise SyncWorkerError(f"PostgreSQL {describe_url(url)}: {describe(exc)}") from None


@main.group("outbox")
def outbox_group() -> None:
    """The PostgreSQL outbox: stats, failed rows, clean-up."""


@outbox_group.command("stats")
@_outbox_options
def outbox_stats(
    url: str | None, queue: str | None, config_file: Path | None, pipeline: str | None
) -> None:
    """Rows per status, oldest pending age, completed in the last hour."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, _, _ = _outbox_target(url, queue, config_file, pipeline)
        with _postgres_errors(url, queue):
            figures = asyncio.run(outbox.stats(url, queue))
    click.echo(_json(figures, default=str))


@outbox_group.command("retry-failed")
@_outbox_options
@click.option("--id", "ids", type=int, multiple=True, help="Only this queue row (repeatable).")
@click.option("--table", help="Only rows of this source table.")
def outbox_retry_failed(
    url: str | None,
    queue: str | None,
    config_file: Path | None,
    pipeline: str | None,
    ids: tuple[int, ...],
    table: str | None,
) -> None:
    """Put rows that ran out of retries back to pending (attempts from zero)."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, _, _ = _outbox_target(url, queue, config_file, pipeline)
        with _postgres_errors(url, queue):
            count = asyncio.run(outbox.retry_failed(url, queue, ids=list(ids) or None, table=table))
    click.echo(f"{count} failed row(s) back to pending")


@outbox_group.command("cleanup")
@_outbox_options
@click.option("--days", default=7, show_default=True, help="Keep this many days.")
def outbox_cleanup(
    url: str | None, queue: str | None, config_file: Path | None, pipeline: str | None, days: int
) -> None:
    """Delete completed rows and log rows older than --days."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, _, _ = _outbox_target(url, queue, config_file, pipeline)
        with _postgres_errors(url, queue):
            count = asyncio.run(outbox.cleanup(url, queue, days))
    click.echo(f"deleted {count} row(s) older than {days} day(s)")
