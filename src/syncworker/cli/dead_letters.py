"""Dead letters: list, show, requeue, purge."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from syncworker.cli import main
from syncworker.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    _console,
    _control,
    _json,
    _state_options,
)
from syncworker.observe.logging import redact_value


@main.group()
def dlq() -> None:
    """Dead letters: records no sink would take, kept with their error."""


@dlq.command("list")
@_state_options
@click.option("--pipeline")
@click.option("--status", "status_", type=click.Choice(["dead", "requeued", "replaying"]))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(
    pipeline: str | None, status_: str | None, limit: int, as_json: bool, **target: Any
) -> None:
    """List dead letters, oldest first."""
    letters = _control(target, lambda c: c.dead_letters(pipeline, status_, limit))
    if as_json:
        click.echo(_json(redact_value(letters)))
        return
    table = Table(
        "id",
        "pipeline",
        "stream",
        "key",
        "status",
        "where",
        "error",
        title=f"{len(letters)} dead letter(s)",
    )
    for d in letters:
        table.add_row(
            str(d["id"]),
            d["pipeline"],
            d["stream"],
            d["record_key"],
            d["status"],
            d["where"] or "-",
            redact_value(d["error"])[:70],
        )
    _console().print(table)


@dlq.command("show")
@click.argument("letter_id", type=int)
@_state_options
def dlq_show(letter_id: int, **target: Any) -> None:
    """Show one dead letter whole: record, error and stack."""
    letter = _control(target, lambda c: c.dead_letter(letter_id))
    if letter is None:
        click.echo(f"error: no dead letter with id {letter_id}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(_json(redact_value(letter)))


@dlq.command("requeue")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every dead letter (of --pipeline).")
@click.option("--pipeline")
@_state_options
def dlq_requeue(
    ids: tuple[int, ...], everything: bool, pipeline: str | None, **target: Any
) -> None:
    """Send dead letters back to their pipeline; it writes them again on its next run."""
    _require_selection(ids, everything)
    count = _control(target, lambda c: c.requeue(list(ids) if ids else None, pipeline))
    click.echo(f"requeued {count} dead letter(s)")


@dlq.command("purge")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every dead letter (of --pipeline).")
@click.option("--pipeline")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --all.")
@_state_options
def dlq_purge(
    ids: tuple[int, ...], everything: bool, pipeline: str | None, yes: bool, **target: Any
) -> None:
    """Delete dead letters for good."""
    _require_selection(ids, everything)
    if everything and not yes:
        scope = f"of pipeline {pipeline!r}" if pipeline else "of every pipeline"
        click.confirm(f"Delete every dead letter {scope}?", abort=True)
    count = _control(target, lambda c: c.purge(list(ids) if ids else None, pipeline))
    click.echo(f"purged {count} dead letter(s)")


def _require_selection(ids: tuple[int, ...], everything: bool) -> None:
    if bool(ids) == everything:
        click.echo("error: give dead letter ids, or --all", err=True)
        sys.exit(EXIT_CONFIG)
