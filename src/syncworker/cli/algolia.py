"""Algolia: reindex."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from syncworker.cli import main
from syncworker.cli.common import _user_errors
from syncworker.config import load_config
from syncworker.errors import ConfigError


@main.group()
def algolia() -> None:
    """Algolia: rebuild an index from its PostgreSQL table."""


@algolia.command("reindex")
@click.argument("table")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A config with a pg_outbox -> algolia pipeline for TABLE.",
)
@click.option("--pipeline", help="Which pipeline of --config (when several fit).")
def algolia_reindex(table: str, config_file: Path, pipeline: str | None) -> None:
    """Rebuild TABLE's index into a temporary index, then move it into place at once."""
    with _user_errors():
        result = asyncio.run(_reindex(table, config_file, pipeline))
    click.echo(
        f"{table}: {result.written} object(s) written to {result.temporary_index}, "
        f"moved onto {result.index}; {len(result.failed)} refused"
    )


async def _reindex(table: str, config_file: Path, pipeline: str | None) -> Any:
    from psycopg import AsyncConnection, sql

    from syncworker.core import registry
    from syncworker.core.record import Record

    config = load_config(config_file)
    fits = [
        s
        for n, s in config.pipelines.items()
        if pipeline in (None, n)
        and s.source.type == "pg_outbox"
        and table in getattr(s.source, "tables", ())
        and any(k.type == "algolia" for k in s.sinks)
    ]
    if len(fits) != 1:
        raise ConfigError(
            f"expected exactly one pipeline reading {table!r} from pg_outbox "
            "into an algolia sink" + ("" if pipeline else "; use --pipeline"),
            file=str(config_file),
        )
    spec = fits[0]
    source: Any = spec.source
    sink_config = next(k for k in spec.sinks if k.type == "algolia")
    sink = registry.lookup("sink", "algolia")(sink_config, name="algolia")
    key_column = source.key_columns.get(table, "id")
    query = sql.SQL("SELECT {key}::text, to_jsonb(t) FROM {table} AS t").format(
        key=sql.Identifier("t", key_column), table=sql.Identifier(*table.split("."))
    )

    async def rows() -> Any:
        async with (
            await AsyncConnection.connect(source.url) as conn,
            conn.cursor(name="syncworker_reindex") as cursor,
        ):
            await cursor.execute(query)
            async for key, data in cursor:
                yield Record(key=key, data=data, stream=table)

    await sink.open()
    try:
        return await sink.reindex(table, rows())
    finally:
        await sink.close()
