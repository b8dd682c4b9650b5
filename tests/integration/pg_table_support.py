"""What the ``pg_table`` tests share: a second fresh database (the target), SQL helpers, a
pipeline from a source table to the ``postgres`` sink, and an exact comparison of two tables
in SQL (the target's rows are copied back in binary, then compared column by column with
``IS NOT DISTINCT FROM``, on the values and on their text)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from syncworker.connectors.postgres import table_capture
from syncworker.connectors.postgres.sink import PostgresSink
from syncworker.connectors.postgres.source_table import PgTableSource
from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.state.base import StateStore
from tests.integration.conftest import PG_ADMIN_URL, _pg_admin

USERS = """
CREATE TABLE users (
    id bigint PRIMARY KEY,
    name text,
    status text NOT NULL DEFAULT 'active',
    score numeric,
    deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""
USER_COLUMNS = ["name", "status", "score", "deleted_at", "updated_at"]


@pytest.fixture
def target_url() -> Iterator[str]:
    """A second fresh database (the sync's target); dropped afterwards."""
    name = f"sw_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def sql(url: str, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def setup_users(source_url: str, target_url: str, rows: int = 0) -> None:
    """``users`` in both databases (the same shape), ``rows`` of them in the source, and the
    capture installed."""
    await sql(source_url, USERS)
    await sql(target_url, USERS)
    if rows:
        await sql(
            source_url,
            "INSERT INTO users (id, name, score) SELECT n, 'user ' || n, n * 1.5"
            " FROM generate_series(1, %s) AS n",
            (rows,),
        )
    await table_capture.install(source_url, "users")


def users_source(url: str, **settings: Any) -> PgTableSource:
    config = {"url": url, "table": "users", "poll_interval": "50ms", **settings}
    return PgTableSource(config, name="users-source")


def users_sink(url: str, columns: list[str] | None = None, **settings: Any) -> PostgresSink:
    mapping = {column: column for column in (columns or USER_COLUMNS)}
    config = {"url": url, "table": "users", "key_column": "id", "columns": mapping, **settings}
    return PostgresSink(config, name="users-sink")


def fast_settings(**overrides: Any) -> PipelineSettings:
    values: dict[str, Any] = {
        "batch_size": 100,
        "max_wait_s": 0.02,
        "idle_wait_s": 0.2,
        "retry": RetryPolicy(attempts=2, delay_s=0.01, jitter=0),
        "breaker": BreakerPolicy(delay_s=0.05, max_delay_s=0.2),
        **overrides,
    }
    return PipelineSettings(**values)


def users_pipeline(
    source_url: str,
    target_url: str,
    state: StateStore,
    *,
    settings: PipelineSettings | None = None,
    sink_columns: list[str] | None = None,
    **source_settings: Any,
) -> Pipeline:
    return Pipeline(
        "users",
        users_source(source_url, **source_settings),
        [users_sink(target_url, sink_columns)],
        settings=settings or fast_settings(),
        state=state,
    )


async def differences(
    source_url: str, target_url: str, table: str, key: str, columns: list[str]
) -> list[tuple[str, str]]:
    """``(key, column)`` for every cell where the target differs from the source (``key,
    '<missing>'``/``'<extra>'`` for a row only one side has), computed in SQL: the target
    table is copied (binary COPY, every value kept) next to the source one, then compared
    with ``IS NOT DISTINCT FROM`` on the values and on their text form."""
    mirror = f"{table}_target_copy"
    ident = pgsql.Identifier
    async with (
        await psycopg.AsyncConnection.connect(source_url, autocommit=True) as src,
        await psycopg.AsyncConnection.connect(target_url, autocommit=True) as dst,
    ):
        await src.execute(
            pgsql.SQL("DROP TABLE IF EXISTS {m}; CREATE TABLE {m} (LIKE {t})").format(
                m=ident(mirror), t=ident(table)
            )
        )
        listed = pgsql.SQL(", ").join(map(ident, [key, *columns]))
        copy_out = pgsql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(ident(table), listed)
        copy_in = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(ident(mirror), listed)
        async with dst.cursor().copy(copy_out) as reader, src.cursor().copy(copy_in) as writer:
            async for chunk in reader:
                await writer.write(chunk)
        found: list[tuple[str, str]] = []
        for column in columns:
            statement = pgsql.SQL(
                "SELECT s.{k}::text FROM {t} s JOIN {m} m USING ({k})"
                " WHERE NOT (s.{c} IS NOT DISTINCT FROM m.{c}"
                " AND s.{c}::text IS NOT DISTINCT FROM m.{c}::text)"
            ).format(k=ident(key), t=ident(table), m=ident(mirror), c=ident(column))
            found += [(row[0], column) for row in await (await src.execute(statement)).fetchall()]
        for side, left, right in (("<missing>", table, mirror), ("<extra>", mirror, table)):
            statement = pgsql.SQL(
                "SELECT l.{k}::text FROM {l} l WHERE NOT EXISTS"
                " (SELECT 1 FROM {r} r WHERE r.{k} = l.{k})"
            ).format(k=ident(key), l=ident(left), r=ident(right))
            found += [(row[0], side) for row in await (await src.execute(statement)).fetchall()]
        await src.execute(pgsql.SQL("DROP TABLE {}").format(ident(mirror)))
    return sorted(found)


async def user_rows(url: str) -> dict[int, tuple[Any, ...]]:
    rows = await sql(url, "SELECT id, name, status, score FROM users ORDER BY id")
    return {row[0]: row[1:] for row in rows}
