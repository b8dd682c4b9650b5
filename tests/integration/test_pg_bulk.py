"""The snapshot fast path (``connectors/postgres/bulk.py``) on its own: pages copied from a
source table into a ``postgres`` sink's table by binary COPY, exactly; straight into an empty
key range, through the sink's merge (stale-write guard) otherwise; soft deletes and the filter
applied; a page the target refuses raised as ``BulkRefused`` with nothing of it written; and
what the record path must carry instead."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql as pgsql
from structlog.testing import capture_logs

from syncworker.connectors.postgres.bulk import BulkRefused, SnapshotCopier, SnapshotSpec
from syncworker.connectors.postgres.client import ConnectSettings
from syncworker.connectors.postgres.sink import PostgresSink
from tests.integration.pg_table_support import differences, sql, target_url
from tests.integration.test_pg_table_exact import ROWS as TYPED_ROWS
from tests.integration.test_pg_table_exact import TYPED, TYPED_COLUMNS, script

__all__ = ["target_url"]

pytestmark = pytest.mark.integration

USERS = """
CREATE TABLE users (
    id bigint PRIMARY KEY, name text NOT NULL, status text, deleted_at timestamptz,
    updated_at timestamptz NOT NULL, source_updated_at timestamptz
)"""
COLUMNS = ["name", "status", "deleted_at", "updated_at"]


def spec(url: str, table: str = "users", key: str = "id", **extra: Any) -> SnapshotSpec:
    return SnapshotSpec(ConnectSettings(url, 10, 60), table, key, stream=table, **extra)


def sink(url: str, table: str = "users", columns: list[str] | None = None, **extra: Any) -> Any:
    mapping = {c: c for c in (columns or COLUMNS)}
    config = {"url": url, "table": table, "key_column": "id", "columns": mapping, **extra}
    return PostgresSink(config, name="bulk-sink")


async def copy_all(copier: SnapshotCopier, page_rows: int) -> int:
    after, written = None, 0
    while (plan := await copier.plan_page(after, page_rows)) is not None:
        written += await copier.copy_page(plan)
        after = plan.last_key
    return written


async def prepared(source_url: str, target: PostgresSink, **extra: Any) -> SnapshotCopier:
    await target.open()
    copier = await SnapshotCopier.prepare(spec(source_url, **extra), target)
    assert copier is not None
    return copier


async def test_every_type_is_copied_exactly(pg_url: str, target_url: str) -> None:
    for url in (pg_url, target_url):
        await sql(url, TYPED)
    await script(pg_url, TYPED_ROWS)
    target = sink(target_url, "typed", TYPED_COLUMNS)
    copier = await prepared(pg_url, target, table="typed")
    try:
        assert await copy_all(copier, 2) == 3
        assert copier.pages == 2 and copier.pages_direct == 2  # an empty target: straight in
    finally:
        await copier.close()
        await target.close()
    assert await differences(pg_url, target_url, "typed", "id", TYPED_COLUMNS) == []
    assert await sql(target_url, "SELECT count(*) FROM typed WHERE t <> ''") == [(1,)]


async def test_pages_over_rows_go_through_the_merge_and_its_guard(
    pg_url: str, target_url: str
) -> None:
    for url in (pg_url, target_url):
        await sql(url, USERS)
    await sql(
        pg_url,
        "INSERT INTO users (id, name, status, updated_at) SELECT n, 'user ' || n, 'active',"
        " timestamptz '2026-01-01' + n * interval '1 s' FROM generate_series(1, 50) n",
    )
    # Row 7 is newer in the target (streamed already): the snapshot must not overwrite it.
    await sql(
        target_url,
        "INSERT INTO users VALUES (7, 'newer', 'active', NULL, '2027-01-01', '2027-01-01'),"
        " (8, 'older', 'active', NULL, '2020-01-01', '2020-01-01')",
    )
    guarded: dict[str, Any] = {"version_column": "source_updated_at", "version": "updated_at"}
    target = sink(target_url, **guarded)
    copier = await prepared(pg_url, target)
    try:
        assert await copy_all(copier, 20) == 50
        assert copier.pages == 3 and copier.pages_direct == 2  # 1-20 holds rows 7 and 8
        assert target.rows_stale == 1
    finally:
        await copier.close()
        await target.close()
    rows = await sql(target_url, "SELECT id, name FROM users WHERE id IN (7, 8, 9) ORDER BY id")
    assert rows == [(7, "newer"), (8, "user 8"), (9, "user 9")]
    assert await sql(target_url, "SELECT count(*) FROM users") == [(50,)]


async def test_filter_and_soft_delete_as_the_record_path(pg_url: str, target_url: str) -> None:
    for url in (pg_url, target_url):
        await sql(url, USERS)
    await sql(
        pg_url,
        "INSERT INTO users (id, name, status, deleted_at, updated_at) SELECT n, 'u' || n,"
        " CASE WHEN n % 3 = 0 THEN 'inactive' ELSE 'active' END,"
        " CASE WHEN n % 5 = 0 THEN now() END, now() FROM generate_series(1, 30) n",
    )
    await sql(target_url, "INSERT INTO users VALUES (10, 'was here', 'active', NULL, now(), NULL)")
    keep = pgsql.SQL("t.deleted_at IS NULL")
    target = sink(target_url)
    copier = await prepared(pg_url, target, where="status = 'active'", keep=keep)
    try:
        await copy_all(copier, 7)
    finally:
        await copier.close()
        await target.close()
    ids = [row[0] for row in await sql(target_url, "SELECT id FROM users ORDER BY id")]
    assert ids == [n for n in range(1, 31) if n % 3 and n % 5]  # 10: soft-deleted, removed


async def test_a_refused_page_is_raised_with_nothing_written(pg_url: str, target_url: str) -> None:
    await sql(pg_url, USERS)
    await sql(target_url, USERS.replace("name text NOT NULL", "name varchar(6) NOT NULL"))
    await sql(
        pg_url,
        "INSERT INTO users (id, name, updated_at) SELECT n, CASE WHEN n = 15 THEN 'far too long'"
        " ELSE 'u' || n END, now() FROM generate_series(1, 30) n",
    )
    target = sink(target_url)
    copier = await prepared(pg_url, target)
    try:
        first = await copier.plan_page(None, 10)
        assert first is not None
        await copier.copy_page(first)
        second = await copier.plan_page(first.last_key, 10)
        assert second is not None
        with pytest.raises(BulkRefused, match="too long"):
            await copier.copy_page(second)
        third = await copier.plan_page(second.last_key, 10)  # the copier goes on after it
        assert third is not None
        await copier.copy_page(third)
    finally:
        await copier.close()
        await target.close()
    ids = [row[0] for row in await sql(target_url, "SELECT id FROM users ORDER BY id")]
    assert ids == [*range(1, 11), *range(21, 31)]


@pytest.mark.parametrize(
    ("source_ddl", "columns", "reason"),
    [
        ("id bigint PRIMARY KEY, doc json", {"doc": "doc"}, "json"),
        ("id bigint PRIMARY KEY, n numeric", {"n": "n"}, "differs"),
        ("id bigint PRIMARY KEY, name text", {"doc": "$data"}, "data"),
        ("id bigint PRIMARY KEY, name text", {"name": "profile.name"}, "nested"),
    ],
)
async def test_what_the_record_path_must_carry(
    pg_url: str,
    target_url: str,
    source_ddl: str,
    columns: dict[str, str],
    reason: str,
) -> None:
    await sql(pg_url, f"CREATE TABLE items ({source_ddl})")
    await sql(target_url, "CREATE TABLE items (id bigint PRIMARY KEY, doc json, n integer,"
              " name text)")  # fmt: skip
    config = {"url": target_url, "table": "items", "key_column": "id", "columns": columns}
    target = PostgresSink(config, name="bulk-sink")
    await target.open()
    try:
        with capture_logs() as logs:
            assert await SnapshotCopier.prepare(spec(pg_url, "items"), target) is None
    finally:
        await target.close()
    [event] = [e for e in logs if e["event"] == "pg_bulk_ineligible"]
    assert reason in event["reason"] and event["path"] == "records"


async def test_a_row_written_after_the_emptiness_check_is_merged_not_lost(
    pg_url: str, target_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for url in (pg_url, target_url):
        await sql(url, USERS)
    await sql(
        pg_url,
        "INSERT INTO users (id, name, updated_at) SELECT n, 'u' || n, timestamptz '2026-01-01'"
        " FROM generate_series(1, 10) n",
    )
    # A streamed row lands between the check and the COPY: seen as empty, it is not.
    await sql(target_url, "INSERT INTO users VALUES (4, 'newer', NULL, NULL, now(), '2030-01-01')")
    monkeypatch.setattr(SnapshotCopier, "_range_empty", lambda *_: True)
    guarded: dict[str, Any] = {"version_column": "source_updated_at", "version": "updated_at"}
    target = sink(target_url, **guarded)
    copier = await prepared(pg_url, target)
    try:
        assert await copy_all(copier, 10) == 10
        assert copier.pages_direct == 0 and target.rows_stale == 1
    finally:
        await copier.close()
        await target.close()
    rows = await sql(target_url, "SELECT id, name FROM users ORDER BY id")
    assert rows == [(n, "newer" if n == 4 else f"u{n}") for n in range(1, 11)]
