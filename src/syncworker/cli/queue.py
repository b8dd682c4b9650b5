"""The SQLite queue: enqueue."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from syncworker.cli import main
from syncworker.cli.common import _user_errors
from syncworker.config import load_sources
from syncworker.errors import ConfigError


@main.command()
@click.argument("messages", nargs=-1)
@click.option(
    "--queue",
    "queue_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite queue file.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the queue file from this config's sqlite_queue pipeline.",
)
@click.option("--pipeline", help="Which pipeline of --config (when it has several).")
@click.option("--stream", default="default", show_default=True)
@click.option(
    "--table", default=None, help="Queue table (default: the source's or the standard one)."
)
def enqueue(
    messages: tuple[str, ...],
    queue_path: Path | None,
    config_file: Path | None,
    pipeline: str | None,
    stream: str,
    table: str | None,
) -> None:
    """Queue MESSAGES (or one per line from stdin) on a SQLite queue."""
    from syncworker.connectors.sqlite.queue import DEFAULT_TABLE, SqliteQueue

    with _user_errors():
        path, config_table = _queue_target(queue_path, config_file, pipeline)
        payloads = list(messages) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
        with SqliteQueue(path, table=table or config_table or DEFAULT_TABLE) as queue:
            count = queue.enqueue(payloads, stream=stream)
    click.echo(f"queued {count} message(s) on stream {stream!r} in {path}")


def _queue_target(
    queue_path: Path | None, config_file: Path | None, pipeline: str | None
) -> tuple[Path, str | None]:
    if queue_path is not None:
        return queue_path, None
    if config_file is None:
        raise ConfigError("give --queue PATH or --config FILE")
    sources = load_sources(config_file, "sqlite_queue")
    candidates = {n: s for n, s in sources.items() if pipeline is None or n == pipeline}
    if len(candidates) != 1:
        raise ConfigError(
            "expected exactly one pipeline with a sqlite_queue source"
            + ("" if pipeline else "; choose one with --pipeline"),
            file=str(config_file),
        )
    source: Any = next(iter(candidates.values()))
    return Path(source.path), source.table
