"""The ``postgres`` sink writes lists into array columns exactly, whatever Python types the
list mixes (exact numeric arrays decode to ints, floats, Decimals and "NaN" together)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from syncworker.connectors.postgres import sink as sink_module
from syncworker.connectors.postgres.sink import PostgresSink
from syncworker.core.record import Record
from tests.integration.test_postgres_sink import execute, query

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, params=["small", "copy"])
def merge_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both merges: a small batch's rows as parameters, and COPY into the
    staging table (what larger batches and any batch with an unusual type take)."""
    if request.param == "copy":
        monkeypatch.setattr(sink_module, "SMALL_BATCH_ROWS", 0)
    return str(request.param)


AWKWARD_TEXT = ["a,b", "{x}", 'say "hi"', "back\\slash", "NULL", "", " padded ", "tab\tnl\n", "😀𝄞"]


@pytest.mark.parametrize(
    ("column_type", "value", "expected"),
    [
        (
            "numeric[]",
            [1.5, 123456789012345678901234567890, Decimal("0.1000000000000000000000001"), None],
            [
                Decimal("1.5"),
                Decimal(123456789012345678901234567890),
                Decimal("0.1000000000000000000000001"),
                None,
            ],
        ),
        ("numeric[]", ["NaN", 1.5], [Decimal("NaN"), Decimal("1.5")]),
        ("text[]", [*AWKWARD_TEXT, None], [*AWKWARD_TEXT, None]),
        ("int[]", [], []),
        ("bigint[][]", [[1, 2], [3, None]], [[1, 2], [3, None]]),
        ("boolean[]", [True, False, None], [True, False, None]),
        ("double precision[]", [0.1, float("inf"), -2.5e-300], [0.1, float("inf"), -2.5e-300]),
        ("jsonb[]", [{"a": [1, "x"]}, {"b": None}], [{"a": [1, "x"]}, {"b": None}]),
        ("bytea[]", [b"\x00\xff", b""], [b"\x00\xff", b""]),
        (
            "timestamptz[]",
            [datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "2026-01-01T00:00:00+02:00"],
            [
                datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
                datetime(2025, 12, 31, 22, tzinfo=UTC),
            ],
        ),
        ("text[]", ("a", 1, 2.5, True), ["a", "1", "2.5", "true"]),
    ],
    ids=[
        "numeric-mixed",
        "numeric-nan",
        "text-awkward",
        "empty",
        "two-dims",
        "boolean",
        "double",
        "jsonb",
        "bytea",
        "timestamptz",
        "text-from-mixed-tuple",
    ],
)
async def test_a_list_reaches_an_array_column_exactly(
    pg_url: str, column_type: str, value: Any, expected: Any
) -> None:
    await execute(pg_url, f"CREATE TABLE t (key text PRIMARY KEY, v {column_type})")
    sink = PostgresSink(
        {"type": "postgres", "url": pg_url, "table": "t", "columns": {"v": "v"}}, name="pg"
    )
    await sink.open()
    try:
        result = await sink.write([Record(key="k", data={"v": value})])
        assert result.failed == {}
    finally:
        await sink.close()
    [(stored,)] = await query(pg_url, "SELECT v FROM t")
    if column_type == "numeric[]" and expected[0].is_nan():
        assert stored[0].is_nan() and stored[1:] == expected[1:]
    elif column_type == "bytea[]":
        assert [bytes(b) for b in stored] == expected
    else:
        assert stored == expected


async def test_a_text_literal_for_an_array_column_is_passed_through(pg_url: str) -> None:
    await execute(pg_url, "CREATE TABLE t (key text PRIMARY KEY, v int[])")
    sink = PostgresSink(
        {"type": "postgres", "url": pg_url, "table": "t", "columns": {"v": "v"}}, name="pg"
    )
    await sink.open()
    try:
        await sink.write([Record(key="k", data={"v": "{7,8}"})])
    finally:
        await sink.close()
    assert await query(pg_url, "SELECT v FROM t") == [([7, 8],)]
