"""The ``postgres`` sink's small-batch merge (rows as parameters, one statement): which
batches take it, and what falls back to COPY. Both merges run every other sink test."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from syncworker.connectors.postgres import sink as sink_module
from syncworker.connectors.postgres.sink import SMALL_BATCH_ROWS, PostgresSink, SmallStatements
from syncworker.core.record import Record
from tests.integration.test_postgres_sink import execute, query

pytestmark = pytest.mark.integration


@pytest.fixture
def small_merges(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row counts of the batches merged with their rows as parameters."""
    taken: list[int] = []
    original = SmallStatements.rows_params

    def spy(self: SmallStatements, rows: Any) -> Any:
        found = original(self, rows)
        if found is not None:
            taken.append(len(rows))
        return found

    monkeypatch.setattr(sink_module.SmallStatements, "rows_params", spy)
    return taken


def up(key: str, **data: Any) -> Record:
    return Record(key=key, data=data)


async def test_small_batches_take_one_statement_and_large_ones_copy(
    pg_url: str, small_merges: list[int]
) -> None:
    await execute(pg_url, "CREATE TABLE t (key text PRIMARY KEY, n bigint, note varchar(5))")
    sink = PostgresSink(
        {"type": "postgres", "url": pg_url, "table": "t", "columns": {"n": "n", "note": "note"}},
        name="pg",
    )
    await sink.open()
    try:
        await sink.write([up(str(i), n=i, note="x") for i in range(SMALL_BATCH_ROWS)])
        await sink.write([up(str(i), n=-i, note="y") for i in range(SMALL_BATCH_ROWS + 1)])
        # A value too long for varchar(5) is refused on this path too, never cut.
        result = await sink.write([up("a", n=1, note="toolong"), up("b", n=2, note="ok")])
        assert set(result.failed) == {0}
        assert "too long" in str(result.failed[0])
    finally:
        await sink.close()
    assert small_merges == [SMALL_BATCH_ROWS, 2]
    rows = await query(pg_url, "SELECT count(*), sum(n) FROM t WHERE note = 'y'")
    assert rows == [(SMALL_BATCH_ROWS + 1, -sum(range(SMALL_BATCH_ROWS + 1)))]
    assert await query(pg_url, "SELECT key, n, note FROM t WHERE key IN ('a', 'b')") == [
        ("b", 2, "ok")
    ]


async def test_a_value_of_another_type_goes_by_copy(pg_url: str, small_merges: list[int]) -> None:
    await execute(pg_url, "CREATE TABLE t (key text PRIMARY KEY, wait interval)")
    sink = PostgresSink(
        {"type": "postgres", "url": pg_url, "table": "t", "columns": {"wait": "wait"}}, name="pg"
    )
    await sink.open()
    try:
        await sink.write([up("k", wait=timedelta(days=1, microseconds=5))])
    finally:
        await sink.close()
    assert small_merges == []
    assert await query(pg_url, "SELECT wait FROM t") == [(timedelta(days=1, microseconds=5),)]
