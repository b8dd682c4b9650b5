"""The ``postgres`` sink against a real PostgreSQL: each test gets its own database (``pg_url``)."""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from syncworker.connectors.postgres import sink as sink_module
from syncworker.connectors.postgres.client import dependency_error
from syncworker.connectors.postgres.sink import PostgresSink, PostgresSinkConfig
from syncworker.coord import FENCING_TOKEN
from syncworker.core.record import Record
from syncworker.errors import (
    ConfigError,
    ConfigRefused,
    ConnectionClosed,
    ConnectionFailed,
    LockLost,
    PermanentError,
    RetryableError,
    is_transient,
)
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, params=["small", "copy"])
def merge_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both merges: a small batch's rows as parameters, and COPY into the
    staging table (what larger batches and any batch with an unusual type take)."""
    if request.param == "copy":
        monkeypatch.setattr(sink_module, "SMALL_BATCH_ROWS", 0)
    return str(request.param)


def up(key: str, stream: str = "in", **data: Any) -> Record:
    return Record(key=key, data=data, stream=stream)


def rm(key: str) -> Record:
    return Record(key=key, data={}, op="delete")


@asynccontextmanager
async def open_sink(url: str, **settings: Any) -> AsyncIterator[PostgresSink]:
    sink = PostgresSink({"type": "postgres", "url": url, **settings}, name="pg")
    await sink.open()
    try:
        yield sink
    finally:
        await sink.close()


async def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def execute(url: str, *statements: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for statement in statements:
            await conn.execute(statement)


async def table_rows(url: str, table: str = "records") -> dict[str, tuple[str, Any]]:
    found = await query(url, f"SELECT key, stream, data FROM {table}")
    return {key: (stream, data) for key, stream, data in found}


@contextmanager
def fencing_token(token: int) -> Iterator[None]:
    reset = FENCING_TOKEN.set(token)
    try:
        yield
    finally:
        FENCING_TOKEN.reset(reset)


# -- default layout, upserts and deletes ---------------------------------------------------


async def test_default_layout_is_created(pg_url: str) -> None:
    async with open_sink(pg_url):
        columns = await query(
            pg_url,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'records' ORDER BY ordinal_position",
        )
        primary_key = await query(
            pg_url,
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'records'::regclass AND i.indisprimary",
        )
    assert columns == [
        ("key", "text"),
        ("stream", "text"),
        ("data", "jsonb"),
        ("synced_at", "timestamp with time zone"),
    ]
    assert primary_key == [("key",)]


async def test_upsert_is_idempotent(pg_url: str) -> None:
    batch = [up("a", n=1, body="hi"), up("b", "out", n=2)]
    async with open_sink(pg_url) as sink:
        before = datetime.now(UTC)
        result = await sink.write(batch)
        first = await table_rows(pg_url)
        await sink.write(batch)
        second = await table_rows(pg_url)
        synced = await query(pg_url, "SELECT min(synced_at), max(synced_at) FROM records")
    assert result.failed == {}
    assert first == {"a": ("in", {"n": 1, "body": "hi"}), "b": ("out", {"n": 2})}
    assert second == first
    low, high = synced[0]
    assert before - timedelta(seconds=5) <= low <= high <= datetime.now(UTC)


async def test_upsert_replaces_changed_rows(pg_url: str) -> None:
    async with open_sink(pg_url) as sink:
        await sink.write([up("a", n=1), up("b", n=1)])
        await sink.write([up("a", "other", n=2)])
        assert await table_rows(pg_url) == {"a": ("other", {"n": 2}), "b": ("in", {"n": 1})}


async def test_duplicate_keys_in_one_batch_collapse_to_the_last(pg_url: str) -> None:
    async with open_sink(pg_url) as sink:
        await sink.write([up("a", n=1), up("b", n=1), up("a", n=2), up("a", "last", n=3)])
        assert await table_rows(pg_url) == {"a": ("last", {"n": 3}), "b": ("in", {"n": 1})}


async def test_deletes(pg_url: str) -> None:
    async with open_sink(pg_url) as sink:
        await sink.write([up("a", n=1), up("b", n=2), up("c", n=3)])
        await sink.write([rm("b"), rm("never-written")])
        assert set(await table_rows(pg_url)) == {"a", "c"}
        await sink.write([rm("b")])  # deleting again changes nothing
        assert set(await table_rows(pg_url)) == {"a", "c"}


async def test_upsert_and_delete_of_one_key_in_a_batch_last_wins(pg_url: str) -> None:
    async with open_sink(pg_url) as sink:
        await sink.write([up("kept", n=0), up("gone", n=0)])
        await sink.write(
            [up("gone", n=1), rm("gone"), rm("kept"), up("kept", n=2), up("new", n=3), rm("new")]
        )
        assert await table_rows(pg_url) == {"kept": ("in", {"n": 2})}


async def test_record_that_is_not_json_is_rejected_alone(pg_url: str) -> None:
    async with open_sink(pg_url) as sink:
        result = await sink.write([up("ok", n=1), up("bad", n=object()), up("ok2", n=2)])
        assert set(result.failed) == {1}
        assert isinstance(result.failed[1], PermanentError)
        assert set(await table_rows(pg_url)) == {"ok", "ok2"}


async def test_write_after_close_is_connection_closed(pg_url: str) -> None:
    sink = PostgresSink({"type": "postgres", "url": pg_url}, name="pg")
    await sink.open()
    await sink.close()
    with pytest.raises(ConnectionClosed):
        await sink.write([up("a")])


# -- explicit columns ----------------------------------------------------------------------


async def test_explicit_columns_mapping(pg_url: str) -> None:
    await execute(
        pg_url,
        "CREATE TABLE people (id text PRIMARY KEY, email varchar(100), city text, "
        "age int, active boolean, tags text[], profile jsonb, payload jsonb, src text, "
        "op text, at timestamptz, untouched text DEFAULT 'default')",
    )
    columns = {
        "email": "email",
        "city": "address.city",
        "age": "age",
        "active": "active",
        "tags": "tags",
        "profile": "profile",
        "payload": "$data",
        "src": "$stream",
        "op": "$op",
        "at": "$synced_at",
    }
    data = {
        "email": "ada@example.com",
        "address": {"city": "London", "zip": "N1"},
        "age": 36,
        "active": True,
        "tags": ["math", "engines"],
        "profile": {"title": "Countess"},
    }
    async with open_sink(pg_url, table="people", key_column="id", columns=columns) as sink:
        await sink.write([Record(key="u1", data=data, stream="users"), up("u2", "users")])
        found = await query(
            pg_url,
            "SELECT id, email, city, age, active, tags, profile, payload, src, op, at, untouched "
            "FROM people ORDER BY id",
        )
    u1, u2 = found
    assert u1[:10] == (
        "u1",
        "ada@example.com",
        "London",
        36,
        True,
        ["math", "engines"],
        {"title": "Countess"},
        data,
        "users",
        "upsert",
    )
    assert isinstance(u1[10], datetime)
    assert u1[11] == "default"
    assert u2[:10] == ("u2", None, None, None, None, None, None, {}, "users", "upsert")


async def test_non_text_key_column_upserts_and_deletes(pg_url: str) -> None:
    await execute(pg_url, "CREATE TABLE counters (id bigint PRIMARY KEY, value int)")
    settings = {"table": "counters", "key_column": "id", "columns": {"value": "value"}}
    async with open_sink(pg_url, **settings) as sink:
        await sink.write([up("1", value=10), up("2", value=20), up("3", value=30)])
        await sink.write([rm("2"), up("3", value=33)])
        assert await query(pg_url, "SELECT id, value FROM counters ORDER BY id") == [
            (1, 10),
            (3, 33),
        ]


@pytest.mark.parametrize(
    ("ddl", "settings", "expected"),
    [
        ("", {"table": "missing", "columns": {"a": "a"}}, "missing"),
        (
            "CREATE TABLE t (key text PRIMARY KEY, a text)",
            {"table": "t", "columns": {"a": "a", "nope": "b"}},
            "nope",
        ),
        (
            "CREATE TABLE t (key text, a text)",
            {"table": "t", "columns": {"a": "a"}},
            "UNIQUE",
        ),
        (
            "CREATE TABLE t (key text UNIQUE DEFERRABLE, a text)",
            {"table": "t", "columns": {"a": "a"}},
            "UNIQUE",
        ),
        (
            "CREATE TABLE t (key text, a text, UNIQUE (key, a))",
            {"table": "t", "columns": {"a": "a"}},
            "UNIQUE",
        ),
        (
            "CREATE TABLE t (key text PRIMARY KEY, a int)",
            {"table": "t", "columns": {"a": "$synced_at"}},
            "timestamp",
        ),
        (
            "CREATE TABLE t (key text PRIMARY KEY, a text)",
            {"table": "t", "columns": {"a": "a"}, "fencing_column": "fence"},
            "fence",
        ),
        ("", {"table": "nowhere.t"}, "nowhere"),
    ],
    ids=[
        "missing-table",
        "missing-column",
        "key-not-unique",
        "key-unique-deferrable",
        "key-unique-with-another-column",
        "type-mismatch",
        "missing-fencing-column",
        "missing-schema",
    ],
)
async def test_table_that_does_not_fit_is_a_config_error_at_open(
    pg_url: str, ddl: str, settings: dict[str, Any], expected: str
) -> None:
    if ddl:
        await execute(pg_url, ddl)
    sink = PostgresSink({"type": "postgres", "url": pg_url, **settings}, name="pg")
    with pytest.raises(ConfigError) as caught:
        await sink.open()
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    with pytest.raises(ConnectionClosed):
        await sink.write([up("a")])


async def test_existing_default_table_without_create(pg_url: str) -> None:
    sink = PostgresSink({"type": "postgres", "url": pg_url, "create_table": False}, name="pg")
    with pytest.raises(ConfigError, match="records"):
        await sink.open()
    assert await query(pg_url, "SELECT to_regclass('records')") == [(None,)]


# -- tables and identifiers ----------------------------------------------------------------


async def test_schema_qualified_table(pg_url: str) -> None:
    await execute(pg_url, "CREATE SCHEMA app", "CREATE TABLE public.messages (x int)")
    async with open_sink(pg_url, table="app.messages") as sink:
        await sink.write([up("a", n=1)])
        await sink.write([up("b", n=2), rm("a")])
        assert await table_rows(pg_url, "app.messages") == {"b": ("in", {"n": 2})}
    assert await query(pg_url, "SELECT count(*) FROM public.messages") == [(0,)]


async def test_identifiers_with_quotes_and_spaces_are_quoted(pg_url: str) -> None:
    await execute(pg_url, "CREATE TABLE victim (x int)", "INSERT INTO victim VALUES (1)")
    table = 'my "odd" table; DROP TABLE victim; --'
    settings = {"table": table, "key_column": 'the "key"', "fencing_column": "fence token"}
    with fencing_token(1):
        async with open_sink(pg_url, **settings) as sink:
            await sink.write([up("a", n=1), up("b", n=2)])
            await sink.write([rm("b")])
    created = await query(pg_url, "SELECT relname FROM pg_class WHERE relname = %s", (table,))
    assert created == [(table,)]
    stored = await query(
        pg_url, 'SELECT "the ""key""", "fence token" FROM "my ""odd"" table; DROP TABLE victim; --"'
    )
    assert stored == [("a", 1)]
    assert await query(pg_url, "SELECT x FROM victim") == [(1,)]


def test_config_validation() -> None:
    with pytest.raises(ValidationError) as caught:
        PostgresSinkConfig.model_validate({"type": "postgres", "url": "mysql://u:s3cret@h/db"})
    assert "s3cret" not in str(caught.value.errors()[0]["msg"])
    bad: list[dict[str, Any]] = [
        {"table": "a.b.c"},
        {"table": "x" * 64},
        {"columns": {}},
        {"columns": {"a": "$nope"}},
        {"columns": {"a": "x..y"}},
        {"columns": {"key": "$stream"}},
        {"fencing_column": "key"},
        {"pool_min": 5, "pool_max": 2},
        {"bath_size": 5},
    ]
    for settings in bad:
        with pytest.raises(ValidationError):
            PostgresSinkConfig.model_validate(
                {"type": "postgres", "url": "postgres://h/d", **settings}
            )
    config = PostgresSinkConfig.model_validate(
        {
            "type": "postgres",
            "url": "postgres://h/d",
            "connect_timeout": "2s",
            "statement_timeout": 500,
        }
    )
    assert (config.connect_timeout, config.statement_timeout) == (2.0, 0.5)
    assert all(field.description for field in PostgresSinkConfig.model_fields.values())


# -- bad data and failing database ---------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (up("bad", code="toolong", n=1), psycopg.errors.StringDataRightTruncation),
        (up("bad", code="ok", n=-1), psycopg.errors.CheckViolation),
        (up("bad", code="ok", n="not a number"), psycopg.errors.InvalidTextRepresentation),
        (
            up("bad", code="ok", n=1, note="nul \x00 in jsonb"),
            psycopg.errors.UntranslatableCharacter,
        ),
        (up(secrets.token_hex(5000), code="ok", n=1), psycopg.errors.ProgramLimitExceeded),
    ],
    ids=["too-long", "check", "bad-int", "nul-in-jsonb", "key-over-btree-limit"],
)
async def test_a_row_the_table_refuses_is_named_and_the_rest_commits(
    pg_url: str, record: Record, error: type[Exception]
) -> None:
    await execute(
        pg_url,
        "CREATE TABLE items (key text PRIMARY KEY, code varchar(5), n int CHECK (n >= 0), "
        "extra jsonb)",
    )
    settings = {"table": "items", "columns": {"code": "code", "n": "n", "extra": "note"}}
    async with open_sink(pg_url, **settings) as sink:
        await sink.write([up("old", code="x", n=0)])
        batch = [up("good", code="ok", n=1), rm("old"), record, up("also", n=2)]
        result = await sink.write(batch)
        assert set(result.failed) == {2}
        refused = result.failed[2]
        assert isinstance(refused, PermanentError) and not is_transient(refused)
        assert isinstance(refused.__cause__, error)
        assert len(str(refused)) < 1000  # a 10 kB key is not quoted whole
        assert await query(pg_url, "SELECT key FROM items ORDER BY key") == [("also",), ("good",)]
        await sink.write([up("good", code="ok", n=3)])  # the connection is still usable
        assert await query(pg_url, "SELECT n FROM items WHERE key = 'good'") == [(3,)]


async def test_several_refused_rows_and_a_refused_delete_in_one_batch(pg_url: str) -> None:
    await execute(
        pg_url,
        "CREATE TABLE items (key text PRIMARY KEY, n int CHECK (n >= 0))",
        "CREATE TABLE refs (id int PRIMARY KEY, item text REFERENCES items (key))",
    )
    async with open_sink(pg_url, table="items", columns={"n": "n"}) as sink:
        await sink.write([up("kept", n=1), up("free", n=1)])
        await execute(pg_url, "INSERT INTO refs VALUES (1, 'kept')")
        batch = [up(f"r{i}", n=-1 if i in (3, 17, 18) else i) for i in range(40)]
        batch += [rm("kept"), rm("free"), up("x", n="NaN-not-int")]
        result = await sink.write(batch)
        assert set(result.failed) == {3, 17, 18, 40, 42}
        assert isinstance(result.failed[40].__cause__, psycopg.errors.ForeignKeyViolation)
        keys = {k for (k,) in await query(pg_url, "SELECT key FROM items")}
    assert keys == {f"r{i}" for i in range(40) if i not in (3, 17, 18)} | {"kept"}


async def test_errors_are_classified_by_sqlstate_class() -> None:
    def server_error(cls: type[psycopg.Error]) -> psycopg.Error:
        return cls("boom")

    data = [
        psycopg.errors.ProgramLimitExceeded,
        psycopg.errors.StringDataRightTruncation,
        psycopg.errors.UniqueViolation,
        psycopg.errors.RaiseException,
    ]
    for cls in data:
        assert dependency_error(server_error(cls), "ctx") is None, cls
    transient = [
        psycopg.errors.AdminShutdown,
        psycopg.errors.DiskFull,
        psycopg.errors.TooManyConnections,
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.QueryCanceled,
        psycopg.errors.CannotConnectNow,
    ]
    for cls in transient:
        assert is_transient(dependency_error(server_error(cls), "ctx")), cls  # type: ignore[arg-type]
    refused = [
        psycopg.errors.InvalidPassword,
        psycopg.errors.InvalidCatalogName,
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.UndefinedTable,
    ]
    for cls in refused:
        assert isinstance(dependency_error(server_error(cls), "ctx"), ConfigRefused), cls


async def test_unreachable_server_is_connection_failed_at_open() -> None:
    url = "postgresql://sync:s3cret-pw@127.0.0.1:1/app"
    sink = PostgresSink({"type": "postgres", "url": url, "connect_timeout": "2s"}, name="pg")
    with pytest.raises(ConnectionFailed) as caught:
        await sink.open()
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


async def test_killed_connections_are_replaced(pg_url: str) -> None:
    async with open_sink(pg_url, pool_min=2) as sink:
        await sink.write([up("a", n=1)])
        dbname = pg_url.rsplit("/", 1)[1]
        killed = await query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        assert killed and all(ok for (ok,) in killed)
        try:
            await sink.write([up("b", n=2)])
        except Exception as exc:  # only "the database is unavailable" is acceptable here
            assert is_transient(exc), exc
        await sink.write([up("c", n=3)])
        rows = await table_rows(pg_url)
    assert {"a", "c"} <= set(rows)


async def test_connection_killed_during_a_write_is_transient(pg_url: str) -> None:
    async with open_sink(pg_url) as sink:
        await sink.write([up("a", n=1)])
        async with await psycopg.AsyncConnection.connect(pg_url) as blocker:
            await blocker.execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
            write = asyncio.create_task(sink.write([up("b", n=2)]), name="blocked-write")
            # This database only: other suites' sinks on the same server are not ours to kill.
            waiting = await eventually(
                lambda: query(
                    pg_url,
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'syncworker:pg' AND datname = current_database()",
                ),
                "the write to block on the table lock",
            )
            await query(pg_url, "SELECT pg_terminate_backend(%s)", waiting[0])
            with pytest.raises(ConnectionClosed):
                await write
            await blocker.rollback()
        await sink.write([up("c", n=3)])
        assert set(await table_rows(pg_url)) == {"a", "c"}


async def test_blocked_statement_times_out_as_retryable(pg_url: str) -> None:
    async with open_sink(pg_url, statement_timeout="300ms") as sink:
        await sink.write([up("a", n=1)])
        async with await psycopg.AsyncConnection.connect(pg_url) as blocker:
            await blocker.execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(RetryableError):
                await sink.write([up("b", n=2)])
            await blocker.rollback()
        await sink.write([up("b", n=2)])
        assert set(await table_rows(pg_url)) == {"a", "b"}


async def test_concurrent_writes_share_the_pool(pg_url: str) -> None:
    async with open_sink(pg_url, pool_max=3) as sink:
        batches = [[up(f"{i}-{j}", n=j) for j in range(50)] for i in range(6)]
        await asyncio.gather(*(sink.write(batch) for batch in batches))
        assert await query(pg_url, "SELECT count(*) FROM records") == [(300,)]


# -- fencing -------------------------------------------------------------------------------


async def test_stale_lock_holder_cannot_overwrite_newer_rows(pg_url: str) -> None:
    async with open_sink(pg_url, fencing_column="fence") as sink:
        with fencing_token(5):
            await sink.write([up("a", v="five"), up("b", v="five")])
        with fencing_token(3), pytest.raises(LockLost):
            await sink.write([up("a", v="three"), up("b", v="three")])
        with fencing_token(3), pytest.raises(LockLost):
            await sink.write([rm("a")])
        stored = await query(pg_url, "SELECT key, data->>'v', fence FROM records ORDER BY key")
        assert stored == [("a", "five", 5), ("b", "five", 5)]

        with fencing_token(3):  # partly refused: the new row applies, the newer one stays
            result = await sink.write([up("a", v="three"), up("c", v="three")])
        assert result.failed == {}
        with fencing_token(5):  # the same holder may write again
            await sink.write([up("b", v="five again")])
        with fencing_token(6):
            await sink.write([up("a", v="six"), rm("c")])
        stored = await query(pg_url, "SELECT key, data->>'v', fence FROM records ORDER BY key")
        assert stored == [("a", "six", 6), ("b", "five again", 5)]


async def test_fencing_with_explicit_columns_and_token_column(pg_url: str) -> None:
    await execute(
        pg_url,
        "CREATE TABLE docs (id text PRIMARY KEY, body text, fence bigint, written_by bigint)",
    )
    settings = {
        "table": "docs",
        "key_column": "id",
        "columns": {"body": "body", "written_by": "$fencing_token"},
        "fencing_column": "fence",
    }
    async with open_sink(pg_url, **settings) as sink:
        with fencing_token(9):
            await sink.write([up("d", body="nine")])
        with fencing_token(8), pytest.raises(LockLost):
            await sink.write([up("d", body="eight")])
        assert await query(pg_url, "SELECT id, body, fence, written_by FROM docs") == [
            ("d", "nine", 9, 9)
        ]


async def test_probe_answers_while_the_table_is_there(pg_url: str) -> None:
    async with open_sink(pg_url) as sink:
        await sink.probe()
        await execute(pg_url, "DROP TABLE records")
        with pytest.raises(psycopg.errors.UndefinedTable):
            await sink.probe()


# -- values a float column cannot hold -------------------------------------------------------

BIG = 2**53 + 1  # the first integer a double cannot hold


@pytest.mark.parametrize(
    ("column_type", "value", "stored_as"),
    [
        ("double precision", BIG, "9007199254740992"),
        ("double precision", -BIG, "-9007199254740992"),
        ("double precision", 10**400, "out of the range of double precision"),
        ("double precision", Decimal("0.1000000000000000000000001"), "0.1"),
        ("double precision", Decimal("3.14159265358979323846"), "3.141592653589793"),
        ("real", 2**24 + 1, "16777216"),
        ("real", Decimal("0.123456789"), "0.12345679"),
        ("real", 0.123456789, "0.12345679"),
        ("real", 1e39, "out of the range of real"),
    ],
    ids=[
        "int-past-2**53",
        "negative-int-past-2**53",
        "int-past-double-range",
        "long-decimal",
        "pi-decimal",
        "int-past-2**24-in-real",
        "decimal-in-real",
        "float-in-real",
        "float-past-real-range",
    ],
)
async def test_a_float_column_refuses_what_it_would_round(
    pg_url: str, column_type: str, value: Any, stored_as: str
) -> None:
    await execute(pg_url, f"CREATE TABLE scores (key text PRIMARY KEY, v {column_type})")
    async with open_sink(pg_url, table="scores", columns={"v": "v"}) as sink:
        result = await sink.write([up("ok", v=1.5), up("rounded", v=value), up("also", v=2)])
        assert set(result.failed) == {1}
        refused = result.failed[1]
        assert isinstance(refused, PermanentError) and not is_transient(refused)
        message = str(refused)
        assert "'rounded'" in message and "column 'v'" in message and column_type in message
        assert stored_as in message, message
        rows = await query(pg_url, "SELECT key, v FROM scores ORDER BY key")
    assert rows == [("also", 2.0), ("ok", 1.5)]


@pytest.mark.parametrize(
    ("column_type", "value"),
    [
        ("double precision", 0.1),  # a Python float is a double: exact by definition
        ("double precision", 2**53),
        ("double precision", -(2**60)),  # a power of two: a double holds it
        ("double precision", Decimal("0.1")),  # reads back as written
        ("double precision", Decimal("1E+300")),
        ("double precision", 1e308),
        ("double precision", float("inf")),
        ("double precision", Decimal("-Infinity")),
        ("real", 0.5),
        ("real", 0.1),  # PostgreSQL prints a real as its shortest digits: 0.1 reads back
        ("real", 2**24),
        ("real", 100_000_000),
        ("real", Decimal("1.25")),
    ],
)
async def test_a_float_column_takes_what_it_holds_exactly(
    pg_url: str, column_type: str, value: Any
) -> None:
    await execute(pg_url, f"CREATE TABLE scores (key text PRIMARY KEY, v {column_type})")
    async with open_sink(pg_url, table="scores", columns={"v": "v"}) as sink:
        result = await sink.write([up("k", v=value)])
        assert result.failed == {}
    [(read,)] = await query(pg_url, "SELECT v FROM scores")
    assert reads_back_as_sent(read, value), read


def reads_back_as_sent(read: float, sent: Any) -> bool:
    """The float psycopg reads is the number sent: the same value, or (a decimal sent) the
    same digits, as PostgreSQL prints them."""
    if not math.isfinite(read):
        return read == float(sent)
    if isinstance(sent, Decimal):
        return Decimal(repr(read)) == sent
    return read == sent


async def test_a_float_domain_and_a_nested_field_are_checked_too(pg_url: str) -> None:
    await execute(
        pg_url,
        "CREATE DOMAIN score AS double precision CHECK (VALUE >= 0)",
        "CREATE TABLE scores (key text PRIMARY KEY, v score, w real)",
    )
    async with open_sink(pg_url, table="scores", columns={"v": "v", "w": "m.w"}) as sink:
        result = await sink.write(
            [up("a", v=BIG, m={"w": 1}), up("b", v=1, m={"w": 2**25 + 1}), up("c", v=3)]
        )
        assert set(result.failed) == {0, 1}
        assert "column 'v'" in str(result.failed[0]) and "column 'w'" in str(result.failed[1])
        rows = await query(pg_url, "SELECT key, v, w FROM scores")
    assert rows == [("c", 3.0, None)]
