"""PostgreSQL: the ``pg`` group. ``pg install`` installs the change capture of a ``pg_table``
source (change log, trigger function, triggers) or the outbox of a ``pg_outbox`` one;
``pg uninstall`` and ``pg status`` are about the ``pg_table`` capture."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from syncworker.cli import main
from syncworker.cli.common import EXIT_FAILURE, _json, _user_errors
from syncworker.cli.outbox import _outbox_target, _postgres_errors
from syncworker.config import load_sources
from syncworker.errors import ConfigError, SyncWorkerError


@main.group()
def pg() -> None:
    """PostgreSQL: install the change capture of a pg_table source, or the outbox."""


@dataclass(frozen=True, slots=True)
class TableTarget:
    """Which table's capture a command means, and how it is named."""

    url: str
    table: str
    key: str
    names: Any  # table_capture.CaptureNames (imported lazily: psycopg is an extra)


def _target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Which capture: a config's pg_table pipeline (PIPELINE), or given directly."""
    for option in reversed(
        [
            click.argument("pipeline_arg", metavar="[PIPELINE]", required=False),
            click.option(
                "--config",
                "config_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Take the settings from this config's pg_table (or pg_outbox) source.",
            ),
            click.option("--pipeline", help="The pipeline of --config (or give PIPELINE)."),
            click.option(
                "--url", envvar="DATABASE_URL", show_envvar=True, help="postgresql:// URL."
            ),
            click.option("--table", "tables", multiple=True, help="The source table."),
            click.option("--key", help="pg_table: the table's key column [id]."),
            click.option(
                "--change-table", help="pg_table: change log [syncworker_<table>_changes]."
            ),
            click.option("--trigger", help="pg_table: row trigger [<table>_changes_trigger]."),
            click.option("--function", help="pg_table: trigger function [notify_<table>_changes]."),
            click.option("--channel", help="pg_table: NOTIFY channel [the change log's name]."),
        ]
    ):
        fn = option(fn)
    return fn


def _table_options(options: dict[str, Any]) -> bool:
    return any(options[name] for name in ("key", "change_table", "trigger", "function", "channel"))


def _config_kind(config_file: Path, pipeline: str | None) -> str:
    """``pg_table`` or ``pg_outbox``: the type of the pipeline's source (the only one of
    those types when no pipeline is named)."""
    tables = load_sources(config_file, "pg_table")
    if pipeline is not None and pipeline in tables:
        return "pg_table"
    if pipeline is None and tables:
        if len(tables) > 1 or load_sources(config_file, "pg_outbox"):
            raise ConfigError(
                "several pipelines read PostgreSQL; name one (PIPELINE)", file=str(config_file)
            )
        return "pg_table"
    return "pg_outbox"


def _table_target(options: dict[str, Any]) -> TableTarget:
    """The capture of the options: from the config's pg_table source, or given directly."""
    from syncworker.connectors.postgres.table_capture import CaptureNames

    config_file: Path | None = options["config_file"]
    pipeline = options["pipeline_arg"] or options["pipeline"]
    tables: tuple[str, ...] = options["tables"]
    if config_file is not None:
        sources = load_sources(config_file, "pg_table")
        found = [s for n, s in sources.items() if pipeline in (None, n)]
        if len(found) != 1:
            hint = f" named {pipeline!r}" if pipeline else "; name one (PIPELINE)"
            raise ConfigError(
                f"expected exactly one pipeline with a pg_table source{hint}",
                file=str(config_file),
            )
        source: Any = found[0]
        return TableTarget(options["url"] or source.url, source.table, source.key, source.names())
    if not options["url"]:
        raise ConfigError("give --url (or DATABASE_URL) or --config FILE PIPELINE", path="--url")
    if len(tables) != 1:
        raise ConfigError("give the source table once: --table TABLE", path="--table")
    try:
        names = CaptureNames.for_table(
            tables[0],
            change_table=options["change_table"],
            trigger=options["trigger"],
            function=options["function"],
            channel=options["channel"],
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return TableTarget(options["url"], tables[0], options["key"] or "id", names)


@pg.command("install")
@_target_options
@click.option("--queue", help="pg_outbox: queue table [syncworker_outbox].")
@click.option("--print", "print_only", is_flag=True, help="Print the SQL instead of applying.")
def pg_install(print_only: bool, queue: str | None, **options: Any) -> None:
    """Create (or update) the change capture of a pg_table source (change log, function,
    triggers), or the outbox of a pg_outbox one; running it again is harmless.

    \b
    syncworker pg install --config sync.yaml users
    syncworker pg install --url postgresql://... --table users --key id
    """
    with _user_errors():
        pipeline = options["pipeline_arg"] or options["pipeline"]
        config_file = options["config_file"]
        if config_file is not None:
            kind = _config_kind(config_file, pipeline)
        else:
            kind = "pg_table" if _table_options(options) and not queue else "pg_outbox"
        if kind == "pg_outbox":
            _install_outbox(options, queue, print_only)
            return
        _install_capture(_table_target(options), print_only)


def _install_capture(target: TableTarget, print_only: bool) -> None:
    from syncworker.connectors.postgres import table_capture

    if print_only:
        click.echo(table_capture.install_script(target.names, target.key))
        return
    with _capture_errors(target):
        asyncio.run(
            table_capture.install(
                target.url,
                target.table,
                target.key,
                change_table=target.names.change_table_qualified,
                trigger=target.names.trigger,
                function=target.names.function,
                channel=target.names.channel,
            )
        )
    click.echo(
        f"change capture of {target.table!r} installed: change log "
        f"{target.names.change_table_qualified!r}, trigger {target.names.trigger!r}, function "
        f"{target.names.function!r}, channel {target.names.channel!r}"
    )


def _install_outbox(options: dict[str, Any], queue: str | None, print_only: bool) -> None:
    from syncworker.connectors.postgres import outbox

    pipeline = options["pipeline_arg"] or options["pipeline"]
    url, queue, watched, keys = _outbox_target(
        options["url"], queue, options["config_file"], pipeline
    )
    watched = list(options["tables"]) or watched
    if print_only:
        click.echo(outbox.install_script(queue, watched, key_columns=keys))
        return
    with _postgres_errors(url, queue):
        asyncio.run(outbox.install(url, queue, watched, key_columns=keys))
    click.echo(f"outbox {queue!r} installed; watching {', '.join(watched) or 'no table yet'}")


@pg.command("uninstall")
@_target_options
@click.option(
    "--drop-log", is_flag=True, help="Drop the change log too (changes not synced are lost)."
)
def pg_uninstall(drop_log: bool, **options: Any) -> None:
    """Remove the triggers and the function of a pg_table capture (the change log stays
    unless --drop-log). Harmless when already removed."""
    from syncworker.connectors.postgres import table_capture

    with _user_errors():
        target = _table_target(options)
        with _capture_errors(target):
            asyncio.run(
                table_capture.uninstall(
                    target.url,
                    target.table,
                    change_table=target.names.change_table_qualified,
                    trigger=target.names.trigger,
                    function=target.names.function,
                    drop_log=drop_log,
                )
            )
    dropped = " and its change log" if drop_log else "; the change log is kept"
    click.echo(f"change capture of {target.table!r} removed{dropped}")


@pg.command("status")
@_target_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pg_status(as_json: bool, **options: Any) -> None:
    """Whether the triggers, function and change log of a pg_table capture are there, and
    how many changes wait in the log. Exits 1 when a part is missing or disabled."""
    from syncworker.connectors.postgres import table_capture

    with _user_errors():
        target = _table_target(options)
        with _capture_errors(target):
            found = asyncio.run(table_capture.status(target.url, target.names))
    if as_json:
        click.echo(_json(found))
    else:
        for line in _status_lines(found):
            click.echo(line)
    parts = ("table", "change_table", "function", "trigger", "truncate_trigger")
    if any(found[part] is not True for part in parts):
        sys.exit(EXIT_FAILURE)


def _status_lines(found: dict[str, Any]) -> list[str]:
    names = found["names"]

    def state(value: Any) -> str:
        return {True: "present", False: "MISSING"}.get(value, str(value).upper())

    lines = [
        f"table             {names['table']}: {state(found['table'])}",
        f"trigger           {names['trigger']}: {state(found['trigger'])}",
        f"truncate trigger  {names['truncate_trigger']}: {state(found['truncate_trigger'])}",
        f"function          {names['function']}(): {state(found['function'])}",
        f"change log        {names['change_table']}: {state(found['change_table'])}",
        f"channel           {names['channel']}",
    ]
    if found["backlog"] is not None:
        age = found["oldest_change_age_s"]
        oldest = "" if age is None else f", oldest {age:.1f} s old"
        lines.append(f"backlog           {found['backlog']} change(s) waiting{oldest}")
        if found["truncates"]:
            lines.append(f"truncates         {found['truncates']} waiting (see docs/guarantees.md)")
    return lines


@contextmanager
def _capture_errors(target: TableTarget) -> Iterator[None]:
    """What PostgreSQL refuses as one line, naming the database (never the password)."""
    import psycopg

    from syncworker.connectors.postgres.client import describe, describe_url

    try:
        yield
    except psycopg.Error as exc:
        where = describe_url(target.url)
        raise SyncWorkerError(f"PostgreSQL {where}: {describe(exc)}") from None
