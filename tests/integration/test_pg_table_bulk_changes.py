"""pg_table: big claims of changes copied in bulk (``SnapshotCopier.copy_keys``), exactly as
the record path would write them, with the record path as the fallback for refused data; and
the change-log claim, which must never run as a prepared (generic) plan."""

from __future__ import annotations

from typing import Any

from syncworker.connectors.postgres.bulk import CHANGES_MIN_KEYS
from syncworker.connectors.postgres.source_table import PgTableSource
from syncworker.core.pipeline import Pipeline
from syncworker.state.base import StateStore
from tests.integration.pg_table_support import (
    USER_COLUMNS,
    differences,
    fast_settings,
    setup_users,
    sql,
    target_url,
    users_sink,
    users_source,
)

__all__ = ["target_url"]

ROWS = CHANGES_MIN_KEYS * 3


def pipeline(pg_url: str, target_url: str, state: StateStore, **source: Any) -> Pipeline:
    settings = fast_settings(batch_size=ROWS * 2, max_in_flight=2)
    return Pipeline(
        "users",
        users_source(pg_url, **source),
        [users_sink(target_url)],
        settings=settings,
        state=state,
    )


def copied_claims(sync: Pipeline) -> int:
    source = sync.source
    assert isinstance(source, PgTableSource)
    return source._copier.changes if source._copier is not None else 0


async def change_everything(pg_url: str) -> None:
    """Updates (exact numbers, unicode, NULLs), deletes and inserts: far more changed keys
    than a copied claim needs."""
    await sql(
        pg_url,
        "UPDATE users SET name = CASE WHEN id %% 7 = 0 THEN NULL ELSE 'ñame ' || id || ' ✓' END,"
        " score = id * 1.000000000000000000000000000001, updated_at = now()"
        " WHERE id <= %s",
        (ROWS - 100,),
    )
    await sql(pg_url, "DELETE FROM users WHERE id > %s", (ROWS - 50,))
    await sql(
        pg_url,
        "INSERT INTO users (id, name, score) SELECT n, 'new ' || n, 12345678901234567890.5"
        " FROM generate_series(%s::int, %s::int) n",
        (ROWS + 1, ROWS + 300),
    )


async def test_many_changes_are_copied_exactly_with_their_deletes(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=ROWS)
    sync = pipeline(pg_url, target_url, state)
    try:
        await sync.run_once()
        before = copied_claims(sync)
        await change_everything(pg_url)
        run = await sync.run_once()
        assert run.status == "success", run
        assert copied_claims(sync) > before  # the changes went by the copier
    finally:
        await sync.close()
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == []
    assert await sql(pg_url, "SELECT count(*) FROM syncworker_users_changes") == [(0,)]


async def test_copied_changes_delete_rows_filtered_out_or_soft_deleted(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=ROWS)
    sync = pipeline(
        pg_url, target_url, state, where="status = 'active'", soft_delete={"column": "deleted_at"}
    )
    try:
        await sync.run_once()
        await sql(pg_url, "UPDATE users SET status = 'gone' WHERE id % 4 = 0")
        await sql(pg_url, "UPDATE users SET deleted_at = now() WHERE id % 4 = 1")
        await sql(pg_url, "UPDATE users SET name = 'kept' WHERE id % 4 >= 2")
        before = copied_claims(sync)
        assert (await sync.run_once()).status == "success"
        assert copied_claims(sync) > before
    finally:
        await sync.close()
    ids = [row[0] for row in await sql(target_url, "SELECT id FROM users ORDER BY id")]
    assert ids == [n for n in range(1, ROWS + 1) if n % 4 >= 2]
    names = await sql(target_url, "SELECT DISTINCT name FROM users")
    assert names == [("kept",)]


async def test_refused_copied_changes_come_again_as_records_and_only_the_bad_row_is_kept_out(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=ROWS)
    await sql(target_url, "ALTER TABLE users ADD CONSTRAINT no_bad CHECK (name <> 'bad')")
    sync = pipeline(pg_url, target_url, state)
    try:
        await sync.run_once()
        await sql(pg_url, "UPDATE users SET name = 'renamed ' || id")
        await sql(pg_url, "UPDATE users SET name = 'bad' WHERE id = 42")
        run = await sync.run_once()
        assert run.status == "success", run
    finally:
        await sync.close()
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == [("42", "name")]
    letters = await state.dead_letters("users")
    assert [letter.key for letter in letters] == ["42"]
    assert "no_bad" in letters[0].error
    assert await sql(pg_url, "SELECT count(*) FROM syncworker_users_changes") == [(0,)]


async def test_copied_changes_keep_the_stale_write_guard(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=ROWS)
    await sql(target_url, "ALTER TABLE users ADD COLUMN source_updated_at timestamptz")
    sink = users_sink(
        target_url,
        columns=USER_COLUMNS,
        version_column="source_updated_at",
        version="updated_at",
    )
    sync = Pipeline(
        "users",
        users_source(pg_url),
        [sink],
        settings=fast_settings(batch_size=ROWS * 2),
        state=state,
    )
    try:
        await sync.run_once()
        # A newer write reached the target by another path: the older change must not win.
        await sql(
            target_url,
            "UPDATE users SET name = 'newer', source_updated_at = now() + interval '1 day'"
            " WHERE id = 9",
        )
        await sql(pg_url, "UPDATE users SET name = 'older ' || id, updated_at = now()")
        before = copied_claims(sync)
        assert (await sync.run_once()).status == "success"
        assert copied_claims(sync) > before
    finally:
        await sync.close()
    assert await sql(target_url, "SELECT name FROM users WHERE id IN (8, 9) ORDER BY id") == [
        ("older 8",),
        ("newer",),
    ]


async def test_the_claim_is_planned_with_its_values_never_prepared(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    # psycopg prepares a statement run 5 times on a connection; prepared, the claim's
    # ``key <> ALL(busy)`` gets a generic plan that scans the whole busy array for every log
    # row: with thousands of keys in flight, seconds per claim.
    await setup_users(pg_url, target_url, rows=10)
    source = users_source(pg_url, pool_min=1, pool_max=1)
    sinks = [users_sink(target_url)]
    sync = Pipeline("users", source, sinks, settings=fast_settings(), state=state)
    try:
        await sync.run_once()
        for n in range(8):
            await sql(pg_url, "UPDATE users SET name = %s WHERE id = 1", (f"n{n}",))
            assert (await sync.run_once()).processed == 1
        async with source._connection() as conn:
            cursor = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [row[0] for row in await cursor.fetchall()]
    finally:
        await sync.close()
    assert prepared, "the pool's connection prepares its other statements"
    assert not [s for s in prepared if "<> ALL" in s], prepared
