"""PostgreSQL: the ``pg`` group and ``pg install``; further ``pg`` commands belong here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from syncworker.cli import main
from syncworker.cli.common import _user_errors
from syncworker.cli.outbox import _outbox_options, _outbox_target, _postgres_errors


@main.group()
def pg() -> None:
    """PostgreSQL: install the outbox (queue table, triggers, stats view, log, clean-up)."""


@pg.command("install")
@_outbox_options
@click.option("--table", "tables", multiple=True, help="Source table to watch (repeatable).")
@click.option("--print", "print_only", is_flag=True, help="Print the SQL instead of applying.")
def pg_install(
    url: str | None,
    queue: str | None,
    config_file: Path | None,
    pipeline: str | None,
    tables: tuple[str, ...],
    print_only: bool,
) -> None:
    """Create (or update) the outbox; running it again is harmless."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, watched, keys = _outbox_target(url, queue, config_file, pipeline)
        watched = list(tables) or watched
        if print_only:
            click.echo(outbox.install_script(queue, watched, key_columns=keys))
            return
        with _postgres_errors(url, queue):
            asyncio.run(outbox.install(url, queue, watched, key_columns=keys))
    click.echo(f"outbox {queue!r} installed; watching {', '.join(watched) or 'no table yet'}")
