"""Every PostgreSQL type of issue 10's acceptance, from a ``pg_table`` source through the
``postgres`` sink into a second database, compared exactly in SQL: by snapshot, then by the
change stream (updates to other awkward values, inserts, a delete)."""

from __future__ import annotations

from typing import Any

import pytest

from syncworker.connectors.postgres import table_capture
from syncworker.connectors.postgres.sink import PostgresSink
from syncworker.connectors.postgres.source_table import PgTableSource
from syncworker.core.pipeline import Pipeline
from syncworker.state.base import StateStore
from tests.integration.pg_table_support import differences, fast_settings, sql, target_url

__all__ = ["target_url"]

pytestmark = pytest.mark.integration

# One character of every Unicode plane, 0 to 16 (plane 0 without surrogates), and a few that
# text formats trip on.
EVERY_PLANE = "".join(chr(plane * 0x10000 + 0x100 + plane) for plane in range(17))
AWKWARD = EVERY_PLANE + " \\ \" ' , { } NULL \t\n é 中 😀"

TYPED = """
CREATE TABLE typed (
    id uuid PRIMARY KEY,
    big bigint, small smallint, t text, vc varchar(200),
    n numeric, n30 numeric(40, 10), f8 double precision, f4 real,
    ts timestamptz, tsn timestamp, d date, tm time, iv interval,
    j jsonb, b boolean, raw bytea,
    arr_i integer[], arr_t text[], arr_n numeric[], arr_ts timestamptz[], grid integer[][],
    updated_at timestamptz
);
CREATE TABLE counters (id bigint PRIMARY KEY, label text, total numeric, updated_at timestamptz);
"""
TYPED_COLUMNS = [
    "big", "small", "t", "vc", "n", "n30", "f8", "f4", "ts", "tsn", "d", "tm", "iv",
    "j", "b", "raw", "arr_i", "arr_t", "arr_n", "arr_ts", "grid", "updated_at",
]  # fmt: skip

ROWS = """
INSERT INTO typed VALUES
 ('00000000-0000-0000-0000-000000000001', 9223372036854775807, -32768, %(text)s, %(text)s::text,
  123456789012345678901234567890, 12345678901234567890.1234567890, 0.1, 0.1,
  '2026-12-01 23:59:59.999999+05:30', '1999-12-31 23:59:59.123456', '0001-01-01', '24:00:00',
  '1 year 2 mons 3 days 04:05:06.789',
  %(json)s, true, '\\x00ff10',
  '{1,NULL,3}', %(texts)s,
  '{1.5,123456789012345678901234567890,-0.00000000000000000000000000000100000000000000000001,NULL,NaN}',
  '{"2026-01-01 00:00:00+00","infinity"}', '{{1,2},{3,NULL}}', now()),
 ('00000000-0000-0000-0000-000000000002', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ('ffffffff-ffff-ffff-ffff-ffffffffffff', -9223372036854775808, 0, '', '', 'NaN', 0, 'NaN',
  '-Infinity', '-infinity', 'infinity', '9999-12-31', '00:00:00', '-1 days',
  '{}', false, '', '{}', '{NULL}', '{}', '{NULL}', '{}', '2000-01-01 00:00:00+00');
INSERT INTO counters VALUES
 (9223372036854775807, %(text)s, 0.000000000000000000000000000001, now()),
 (-9223372036854775808, NULL, NULL, NULL),
 (1, 'one', 1e30, now());
"""
JSON_VALUE = (
    '{"big": 123456789012345678901234567890, "dec": 0.1000000000000000000000001,'
    ' "tiny": 1e-40, "nested": [1, {"a": null, "b": [true, false]}], "uni": "%s"}'
)
PARAMS = {
    "text": AWKWARD,
    "json": JSON_VALUE % EVERY_PLANE,
    "texts": ["NULL", None, "a,b", '"q"', "{x}", EVERY_PLANE, ""],
}

CHANGES = """
UPDATE typed SET n = -99999999999999999999.99999999999, j = '[1.0, 2.5, {"k": "v"}]',
    arr_t = '{"",NULL,"NULL"}', t = %(text)s, ts = '2026-06-30 12:00:00.000001+00'
WHERE id = '00000000-0000-0000-0000-000000000002';
UPDATE typed SET big = NULL, j = NULL, arr_i = NULL
WHERE id = '00000000-0000-0000-0000-000000000001';
INSERT INTO typed (id, t, n30, j) VALUES
 ('00000000-0000-0000-0000-000000000003', %(text)s, -1.0000000001, '{"deep": [[[[1]]]]}');
DELETE FROM typed WHERE id = 'ffffffff-ffff-ffff-ffff-ffffffffffff';
UPDATE counters SET total = 98765432109876543210987654321.0 WHERE id = 1;
"""


def pipeline(source_url: str, target_url: str, state: StateStore, table: str) -> Pipeline:
    columns = TYPED_COLUMNS if table == "typed" else ["label", "total", "updated_at"]
    source = PgTableSource(
        {"url": source_url, "table": table, "snapshot_page_rows": 2}, name=f"{table}-source"
    )
    sink = PostgresSink(
        {
            "url": target_url,
            "table": table,
            "key_column": "id",
            "columns": {column: column for column in columns},
        },
        name=f"{table}-sink",
    )
    return Pipeline(table, source, [sink], settings=fast_settings(), state=state)


async def script(url: str, text: str) -> None:
    """Statements one by one (a prepared statement holds one), with the shared values."""
    for statement in filter(str.strip, text.split(";\n")):
        await sql(url, statement, PARAMS if "%(" in statement else None)


async def run(source_url: str, target_url: str, state: StateStore, table: str) -> Any:
    sync = pipeline(source_url, target_url, state, table)
    try:
        return await sync.run_once()
    finally:
        await sync.close()


async def test_every_type_arrives_exactly_by_snapshot_and_by_stream(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    for url in (pg_url, target_url):
        await sql(url, TYPED)
    await script(pg_url, ROWS)
    for table in ("typed", "counters"):
        await table_capture.install(pg_url, table)
        snapshot = await run(pg_url, target_url, state, table)
        assert snapshot.status == "success" and snapshot.processed == 3, snapshot
    assert await differences(pg_url, target_url, "typed", "id", TYPED_COLUMNS) == []
    assert await differences(pg_url, target_url, "counters", "id", ["label", "total"]) == []

    await script(pg_url, CHANGES)
    for table, changed in (("typed", 4), ("counters", 1)):
        streamed = await run(pg_url, target_url, state, table)  # snapshot done: the log
        assert streamed.status == "success" and streamed.processed == changed, streamed
    assert await differences(pg_url, target_url, "typed", "id", TYPED_COLUMNS) == []
    assert await differences(pg_url, target_url, "counters", "id", ["label", "total"]) == []
    # The comparison saw the awkward values themselves, not two empty tables.
    texts = await sql(target_url, "SELECT t FROM typed WHERE t IS NOT NULL ORDER BY id")
    assert texts == [(AWKWARD,), (AWKWARD,), (AWKWARD,)]
