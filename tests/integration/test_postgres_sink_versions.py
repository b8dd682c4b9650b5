"""The ``postgres`` sink's stale-write guard (``version_column`` + ``version``) on a real
PostgreSQL: an older state of a row never overwrites a newer one, alone or with fencing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from syncworker.connectors.postgres import sink as sink_module
from syncworker.connectors.postgres.sink import PostgresSink, PostgresSinkConfig
from syncworker.core.record import Record
from syncworker.errors import ConfigError, LockLost, PermanentError, RetryableError
from tests.integration.test_postgres_sink import execute, fencing_token, query

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, params=["small", "copy"])
def merge_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both merges: a small batch's rows as parameters, and COPY into the
    staging table (what larger batches and any batch with an unusual type take)."""
    if request.param == "copy":
        monkeypatch.setattr(sink_module, "SMALL_BATCH_ROWS", 0)
    return str(request.param)


T0 = datetime(2026, 1, 1, tzinfo=UTC)
USERS = (
    "CREATE TABLE users (id bigint PRIMARY KEY, name text CHECK (name <> 'refused'), "
    "source_updated_at timestamptz, fence bigint)"
)
MAPPED = {
    "table": "users",
    "key_column": "id",
    "columns": {"name": "name"},
    "version_column": "source_updated_at",
    "version": "updated_at",
}


def at(minutes: int | None) -> datetime | None:
    return None if minutes is None else T0 + timedelta(minutes=minutes)


def user(key: int | str, name: str, minutes: int | None) -> Record:
    return Record(key=str(key), data={"name": name, "updated_at": at(minutes)})


def rm(key: int | str) -> Record:
    return Record(key=str(key), data={}, op="delete")


@asynccontextmanager
async def users_sink(url: str, **settings: Any) -> AsyncIterator[PostgresSink]:
    await execute(url, USERS)
    sink = PostgresSink({"type": "postgres", "url": url, **MAPPED, **settings}, name="pg")
    await sink.open()
    try:
        yield sink
    finally:
        await sink.close()


async def stored(url: str) -> dict[int, tuple[str, datetime | None]]:
    rows = await query(url, "SELECT id, name, source_updated_at FROM users")
    return {key: (name, version) for key, name, version in rows}


def stale_logs(logs: Sequence[Mapping[str, Any]]) -> list[int]:
    return [e["skipped"] for e in logs if e["event"] == "postgres_rows_stale"]


async def test_an_older_version_in_a_later_batch_never_overwrites(pg_url: str) -> None:
    async with users_sink(pg_url) as sink:
        await sink.write([user(1, "v2", 2), user(2, "v2", 2)])
        with capture_logs() as logs:
            result = await sink.write([user(1, "v1", 1), user(2, "v3", 3), user(3, "new", 1)])
        assert result.failed == {}  # skipped, not refused: nothing is dead-lettered
        assert await stored(pg_url) == {1: ("v2", at(2)), 2: ("v3", at(3)), 3: ("new", at(1))}
        assert sink.rows_stale == 1
        assert stale_logs(logs) == [1]
        await sink.write([user(1, "v2 again", 2)])  # the same version applies (a redelivery)
        assert (await stored(pg_url))[1] == ("v2 again", at(2))


async def test_an_older_version_later_in_the_same_batch_never_overwrites(pg_url: str) -> None:
    async with users_sink(pg_url) as sink:
        result = await sink.write(
            [user(1, "v5", 5), user(2, "v1", 1), user(1, "v4", 4), user(2, "v2", 2)]
        )
        assert result.failed == {}
        assert await stored(pg_url) == {1: ("v5", at(5)), 2: ("v2", at(2))}
        assert sink.rows_stale == 1
        # Against a stored row too: the newest of the batch wins only if newer than it.
        await sink.write([user(1, "v6", 6), user(1, "v3", 3), user(1, "v7", 7), user(1, "v0", 0)])
        assert (await stored(pg_url))[1] == ("v7", at(7))


async def test_out_of_order_batches_end_at_the_newest_version(pg_url: str) -> None:
    changes = [user(k, f"{k}@{v}", v) for k in range(30) for v in range(8)]
    random.Random(4).shuffle(changes)
    batches = [changes[i : i + 16] for i in range(0, len(changes), 16)]
    async with users_sink(pg_url) as sink:
        for batch in batches:
            assert (await sink.write(batch)).failed == {}
        assert await stored(pg_url) == {k: (f"{k}@7", at(7)) for k in range(30)}
        assert sink.rows_stale > 0


async def test_concurrent_out_of_order_batches_end_at_the_newest_version(pg_url: str) -> None:
    changes = [user(k, f"{k}@{v}", v) for k in range(30) for v in range(8)]
    random.Random(5).shuffle(changes)
    batches = [changes[i : i + 16] for i in range(0, len(changes), 16)]

    async def write(sink: PostgresSink, batch: list[Record]) -> None:
        # Batches sharing keys, written at once, can deadlock on their rows: the database
        # breaks it and the batch is retried, as the pipeline retries a RetryableError.
        while True:
            try:
                await sink.write(batch)
                return
            except RetryableError:
                continue

    async with users_sink(pg_url, pool_max=4) as sink:
        await asyncio.gather(*(write(sink, batch) for batch in batches))
        assert await stored(pg_url) == {k: (f"{k}@7", at(7)) for k in range(30)}


async def test_null_versions(pg_url: str) -> None:
    async with users_sink(pg_url) as sink:
        await sink.write([user(1, "null", None), user(2, "v1", 1)])
        await sink.write([user(1, "null again", None)])  # NULL over NULL applies
        assert (await stored(pg_url))[1] == ("null again", None)
        await sink.write([user(1, "v1", 1)])  # any version over NULL applies
        result = await sink.write([user(1, "null later", None), user(2, "null later", None)])
        assert result.failed == {}
        # A NULL version cannot be shown newer than a stored one: skipped.
        assert await stored(pg_url) == {1: ("v1", at(1)), 2: ("v1", at(1))}
        assert sink.rows_stale == 2


async def test_deletes_are_not_version_guarded(pg_url: str) -> None:
    async with users_sink(pg_url) as sink:
        await sink.write([user(1, "v9", 9), user(2, "v9", 9)])
        result = await sink.write([rm(1), user(2, "v1", 1), rm(2)])
        assert result.failed == {}
        assert await stored(pg_url) == {}


async def test_a_refused_row_beside_a_stale_one_isolation_path(pg_url: str) -> None:
    async with users_sink(pg_url) as sink:
        await sink.write([user(1, "v5", 5)])
        result = await sink.write([user(1, "v1", 1), user(2, "refused", 1), user(3, "ok", 1)])
        assert set(result.failed) == {1}
        assert isinstance(result.failed[1], PermanentError)
        assert await stored(pg_url) == {1: ("v5", at(5)), 3: ("ok", at(1))}
        assert sink.rows_stale == 1


async def test_with_fencing_stale_is_never_lock_lost(pg_url: str) -> None:
    async with users_sink(pg_url, fencing_column="fence") as sink:
        with fencing_token(5):
            await sink.write([user(1, "v5", 5), user(2, "v5", 5)])
            with capture_logs() as logs:
                result = await sink.write([user(1, "v1", 1), user(2, "v2", 2)])  # all stale
            assert result.failed == {}
            assert stale_logs(logs) == [2]
            assert not [e for e in logs if e["event"] == "postgres_rows_fenced"]
        with fencing_token(3), pytest.raises(LockLost):  # every change fenced: lock lost
            await sink.write([user(1, "v9 from 3", 9), user(2, "v9 from 3", 9)])
        with fencing_token(7):
            await sink.write([user(3, "v5 from 7", 5)])
        with fencing_token(5):  # one stale, one fenced, one new: neither LockLost nor refused
            with capture_logs() as logs:
                result = await sink.write(
                    [user(1, "v0", 0), user(3, "v9 from 5", 9), user(4, "new", 1)]
                )
            assert result.failed == {}
            assert stale_logs(logs) == [1]
            [fenced] = [e for e in logs if e["event"] == "postgres_rows_fenced"]
            assert fenced["refused"] == 1
        rows = await query(pg_url, "SELECT id, name, fence FROM users ORDER BY id")
        assert rows == [(1, "v5", 5), (2, "v5", 5), (3, "v5 from 7", 7), (4, "new", 5)]
        assert sink.rows_stale == 3


async def test_with_fencing_in_the_isolation_path(pg_url: str) -> None:
    async with users_sink(pg_url, fencing_column="fence") as sink:
        with fencing_token(7):
            await sink.write([user(1, "v5 from 7", 5)])
        with fencing_token(5):
            await sink.write([user(2, "v5", 5)])
            with capture_logs() as logs:
                result = await sink.write(
                    [user(1, "v9", 9), user(2, "v1", 1), user(3, "refused", 1), user(4, "ok", 1)]
                )
        assert set(result.failed) == {2}
        assert stale_logs(logs) == [1]
        assert [e["refused"] for e in logs if e["event"] == "postgres_rows_fenced"] == [1]
        rows = await query(pg_url, "SELECT id, name, fence FROM users ORDER BY id")
        assert rows == [(1, "v5 from 7", 7), (2, "v5", 5), (4, "ok", 5)]
        with fencing_token(3), pytest.raises(LockLost):  # all fenced, one of them refused
            await sink.write([user(1, "x", 10), user(2, "x", 10), user(3, "refused", 1)])


async def test_default_layout_gets_the_version_column(pg_url: str) -> None:
    settings = {"version_column": "source_updated_at", "version": "meta.updated_at"}
    sink = PostgresSink({"type": "postgres", "url": pg_url, **settings}, name="pg")
    await sink.open()
    try:
        newer = {"n": 2, "meta": {"updated_at": "2026-01-01T10:00:00+02:00"}}
        # 06:30 UTC, older, though its text sorts after the newer one's
        older = {"n": 1, "meta": {"updated_at": "2026-01-01T11:30:00+05:00"}}
        await sink.write([Record(key="a", data=newer)])
        await sink.write([Record(key="a", data=older)])
        rows = await query(pg_url, "SELECT key, data->>'n', source_updated_at FROM records")
    finally:
        await sink.close()
    assert rows == [("a", "2", datetime(2026, 1, 1, 8, tzinfo=UTC))]
    types = await query(
        pg_url,
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'records' "
        "AND column_name = 'source_updated_at'",
    )
    assert types == [("timestamp with time zone",)]


async def test_an_integer_version_column(pg_url: str) -> None:
    await execute(pg_url, "CREATE TABLE docs (id text PRIMARY KEY, body text, rev bigint)")
    settings = {
        "table": "docs",
        "key_column": "id",
        "columns": {"body": "body"},
        "version_column": "rev",
        "version": "rev",
    }
    sink = PostgresSink({"type": "postgres", "url": pg_url, **settings}, name="pg")
    await sink.open()
    try:
        await sink.write([Record(key="d", data={"body": "ten", "rev": 10})])
        await sink.write(
            [Record(key="d", data={"body": "nine", "rev": 9})]
        )  # 9 < 10, not "9" > "10"
        assert await query(pg_url, "SELECT body, rev FROM docs") == [("ten", 10)]
    finally:
        await sink.close()


@pytest.mark.parametrize(
    ("ddl", "expected"),
    [
        (
            "CREATE TABLE users (id bigint PRIMARY KEY, name text)",
            "version_column 'source_updated_at' is not a column of the table",
        ),
        (
            "CREATE TABLE users (id bigint PRIMARY KEY, name text, source_updated_at json)",
            "version_column 'source_updated_at' is of type json, which has no order",
        ),
    ],
    ids=["missing", "json"],
)
async def test_a_version_column_that_cannot_guard_is_a_config_error_at_open(
    pg_url: str, ddl: str, expected: str
) -> None:
    await execute(pg_url, ddl)
    sink = PostgresSink({"type": "postgres", "url": pg_url, **MAPPED}, name="pg")
    with pytest.raises(ConfigError) as caught:
        await sink.open()
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"version_column": "v"},
        {"version": "updated_at"},
        {"version_column": "v", "version": "$synced_at"},
        {"version_column": "v", "version": "a..b"},
        {"version_column": "v", "version": "v", "columns": {"v": "v"}},
        {"version_column": "key", "version": "v"},
        {"version_column": "f", "version": "v", "fencing_column": "f"},
    ],
)
def test_version_settings_are_validated(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PostgresSinkConfig.model_validate({"type": "postgres", "url": "postgres://h/d", **settings})
