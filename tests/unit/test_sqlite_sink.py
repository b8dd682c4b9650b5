"""The ``sqlite`` sink: idempotent upserts and deletes by key, on real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from syncworker.connectors.sqlite import client
from syncworker.connectors.sqlite.sink import SqliteSink, SqliteSinkConfig
from syncworker.core.protocols import Sink
from syncworker.core.record import Record
from syncworker.errors import ConfigError, PermanentError, RetryableError


def make_sink(path: Path, **settings: Any) -> SqliteSink:
    return SqliteSink({"type": "sqlite", "path": str(path), **settings}, name="test.sqlite")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "out.db"


@pytest.fixture
async def sink(db: Path) -> AsyncIterator[SqliteSink]:
    opened = make_sink(db)
    await opened.open()
    yield opened
    await opened.close()


def rows(db: Path, sql: str = "SELECT key, stream, data FROM records ORDER BY key") -> list[Any]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def upsert(key: str, stream: str = "in", **data: Any) -> Record:
    return Record(key=key, data=data, stream=stream)


def delete(key: str, stream: str = "in") -> Record:
    return Record(key=key, data={}, stream=stream, op="delete")


async def test_default_layout_and_writing_twice_changes_nothing(db: Path, sink: SqliteSink) -> None:
    assert isinstance(sink, Sink)
    batch = [upsert("a", text="hi", n=1), upsert("b", stream="out", nested={"x": [1, 2]})]

    first = await sink.write(batch)
    after_first = rows(db)
    await sink.write(batch)

    assert first.failed == {}
    assert rows(db) == after_first
    assert [(key, stream, orjson.loads(data)) for key, stream, data in after_first] == [
        ("a", "in", {"text": "hi", "n": 1}),
        ("b", "out", {"nested": {"x": [1, 2]}}),
    ]
    columns = [row[1] for row in rows(db, "PRAGMA table_info(records)")]
    assert columns == ["key", "stream", "data", "synced_at"]
    [(synced_at,)] = rows(db, "SELECT DISTINCT substr(synced_at, 1, 4) FROM records")
    assert synced_at.isdigit()


async def test_duplicate_keys_in_a_batch_collapse_to_the_last_op(
    db: Path, sink: SqliteSink
) -> None:
    await sink.write([upsert("gone", v=0)])

    await sink.write(
        [
            upsert("a", v=1),
            upsert("b", v=1),
            upsert("a", v=2),
            delete("b"),  # last op for b: delete
            delete("c"),
            upsert("c", v=3),  # last op for c: upsert
            delete("gone"),
        ]
    )

    assert [(key, orjson.loads(data)) for key, _, data in rows(db)] == [
        ("a", {"v": 2}),
        ("c", {"v": 3}),
    ]


async def test_delete_removes_the_row_and_is_idempotent(db: Path, sink: SqliteSink) -> None:
    await sink.write([upsert("a", v=1), upsert("b", v=1)])

    await sink.write([delete("a")])
    await sink.write([delete("a"), delete("never-existed")])

    assert [key for key, *_ in rows(db)] == ["b"]


async def test_columns_map_fields_paths_and_special_values(db: Path) -> None:
    sink = make_sink(
        db,
        table="messages",
        key_column="id",
        columns={
            "stream": "$stream",
            "op": "$op",
            "copy_of_key": "$key",
            "synced": "$synced_at",
            "body": "text",
            "city": "user.address.city",
            "tags": "tags",
            "flag": "flag",
            "missing": "no.such.field",
            "everything": "$data",
        },
    )
    await sink.open()
    try:
        await sink.write(
            [
                Record(
                    key="k1",
                    stream="inbox",
                    data={
                        "text": "hello",
                        "user": {"address": {"city": "Lyon"}},
                        "tags": ["a", "b"],
                        "flag": True,
                    },
                )
            ]
        )
    finally:
        await sink.close()

    [row] = rows(
        db,
        "SELECT id, stream, op, copy_of_key, body, city, tags, flag, missing, "
        "everything, synced FROM messages",
    )
    assert row[:9] == ("k1", "inbox", "upsert", "k1", "hello", "Lyon", '["a","b"]', 1, None)
    assert orjson.loads(row[9])["user"] == {"address": {"city": "Lyon"}}
    assert row[10].endswith("+00:00")


async def test_a_row_the_table_refuses_is_named_and_the_rest_is_written(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT CHECK (length(text) <= 5))"
        )
        conn.execute("INSERT INTO messages VALUES ('old', 'keep')")
    sink = make_sink(db, table="messages", columns={"text": "text"})
    await sink.open()
    try:
        result = await sink.write(
            [upsert("a", text="ok"), upsert("b", text="far too long"), upsert("c", text="fine")]
        )
        again = await sink.write([upsert("old", text="new"), delete("old")])
    finally:
        await sink.close()

    assert set(result.failed) == {1}
    refused = result.failed[1]
    assert isinstance(refused, PermanentError) and "'b'" in str(refused) and "CHECK" in str(refused)
    assert isinstance(refused.__cause__, sqlite3.IntegrityError)
    assert again.failed == {}
    assert rows(db, "SELECT key, text FROM messages ORDER BY key") == [("a", "ok"), ("c", "fine")]


async def test_integer_beyond_64_bits_in_a_mapped_column_refuses_that_record(db: Path) -> None:
    # Before: OverflowError rolled the whole batch back. SQLite's REAL would round it.
    sink = make_sink(db, columns={"n": "n"})
    await sink.open()
    try:
        result = await sink.write([upsert("a", n=1), upsert("b", n=2**70)])
    finally:
        await sink.close()

    assert list(result.failed) == [1]
    assert "does not fit SQLite's 64-bit INTEGER" in str(result.failed[1])
    assert rows(db, "SELECT key, n FROM records") == [("a", 1)]


async def test_numbers_beyond_a_double_are_written_exactly_as_json(
    db: Path, sink: SqliteSink
) -> None:
    # Before: orjson refused 2**70 ("Integer exceeds 64-bit range") and the Decimal.
    big, long = 123456789012345678901234567890, Decimal("0.1000000000000000000000001")
    result = await sink.write([upsert("a", n=big, d=long, nested={"m": [-big]})])

    assert result.failed == {}
    assert rows(db, "SELECT data FROM records") == [
        (
            '{"n":123456789012345678901234567890,"d":0.1000000000000000000000001,'
            '"nested":{"m":[-123456789012345678901234567890]}}',
        )
    ]


async def test_data_that_is_not_json_is_reported_per_record(db: Path, sink: SqliteSink) -> None:
    result = await sink.write([upsert("a", n=1), upsert("b", n=object()), upsert("c", n=3)])

    assert list(result.failed) == [1]
    assert isinstance(result.failed[1], PermanentError)
    assert "'b'" in str(result.failed[1])
    assert [key for key, *_ in rows(db)] == ["a", "c"]


async def test_missing_table_without_create_table_is_a_config_error(db: Path) -> None:
    sink = make_sink(db, table="absent", create_table=False)
    with pytest.raises(ConfigError, match="no such table"):
        await sink.open()


async def test_key_column_without_unique_constraint_is_a_config_error(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE loose (key TEXT, v TEXT)")
    sink = make_sink(db, table="loose", columns={"v": "v"})
    with pytest.raises(ConfigError, match="ON CONFLICT"):
        await sink.open()


async def test_locked_database_raises_a_retryable_error(
    db: Path, sink: SqliteSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sink.close()
    monkeypatch.setattr(client, "BUSY_TIMEOUT_MS", 50)
    await sink.open()
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(RetryableError, match="locked"):
            await sink.write([upsert("a", v=1)])
        blocker.execute("ROLLBACK")
        await sink.write([upsert("a", v=1)])
    finally:
        blocker.close()
    assert [key for key, *_ in rows(db)] == ["a"]


@pytest.mark.parametrize(
    "bad",
    [
        {"table": 'rec"ords'},
        {"table": "rec\x00ords"},
        {"key_column": 'k"'},
        {"key_column": ""},
        {"columns": {'na"me': "name"}},
        {"columns": {"name": "$unknown"}},
        {"columns": {"name": "user..email"}},
        {"columns": {"KEY": "id"}},
        {"columns": {}},
        {"colums": {"a": "b"}},
    ],
)
def test_config_rejects_unsafe_identifiers_and_bad_columns(db: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SqliteSinkConfig(type="sqlite", path=db, **bad)


def test_config_accepts_identifiers_that_need_quoting(db: Path) -> None:
    config = SqliteSinkConfig(
        type="sqlite", path=db, table="my table", key_column="order", columns={"select": "$stream"}
    )
    assert (config.table, config.key_column) == ("my table", "order")


async def test_identifiers_that_need_quoting_work_end_to_end(db: Path) -> None:
    sink = make_sink(db, table="my table", key_column="order", columns={"select": "$stream"})
    await sink.open()
    try:
        await sink.write([upsert("a"), upsert("a", stream="other")])
    finally:
        await sink.close()
    assert rows(db, 'SELECT "order", "select" FROM "my table"') == [("a", "other")]
