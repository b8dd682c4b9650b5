"""The harnesses of the sources: sqlite_queue, redis_list, redis_stream, pg_outbox, pg_table."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, ClassVar

import psycopg
import redis.asyncio as aredis

from syncworker.connectors.postgres import outbox, table_capture
from syncworker.connectors.sqlite.queue import SqliteQueue
from syncworker.core.record import Record
from tests.conformance.exact import Payload
from tests.conformance.harness import Expected, Service, SourceHarness
from tests.conformance.services import CLOSED_PORT, PrivatePostgres, PrivateRedis


def byte_expectations(payloads: list[Payload]) -> list[Expected]:
    """A queue carries bytes: a JSON object arrives as it is, anything else wrapped with its
    bytes kept."""
    return [
        Expected(p, "exact", p.value, key=p.key) if p.is_object else Expected(p, "bytes")
        for p in payloads
    ]


class SqliteQueueHarness(SourceHarness):
    type_name = "sqlite_queue"
    reasons: ClassVar[dict[str, str]] = {
        "deletes": "a queue carries messages, not changes: every record is an upsert",
        "restart": "embedded: a SQLite file, no server to restart",
        "credentials": "a local file: nothing to log in with",
    }

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or str(self.ctx.tmp_path / "queue.db")
        SqliteQueue(self.target).close()

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "sqlite_queue",
            "path": self.target,
            "key_field": "id",
            "poll_interval": "20ms",
            **overrides,
        }

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        def enqueue() -> None:
            with SqliteQueue(self.target) as queue:
                queue.enqueue([p.raw for p in payloads], stream="in")

        await asyncio.to_thread(enqueue)
        return byte_expectations(payloads)


class RedisService(Service):
    def __init__(self, harness: SourceHarness, password: str | None) -> None:
        self.server = PrivateRedis(harness.ctx.tmp_path, password)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop)

    async def destroy(self) -> None:
        await asyncio.to_thread(self.server.kill)


class _RedisHarness(SourceHarness):
    services = frozenset({"redis"})
    restart = "a private redis-server with AOF (SHUTDOWN, then started again)"
    credentials = True
    reasons: ClassVar[dict[str, str]] = {
        "deletes": "a queue carries messages, not changes: every record is an upsert",
    }

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.ctx.redis_url

    def private_service(self, password: str | None = None) -> Service:
        return RedisService(self, password)

    async def secret_setup(self, secret: str) -> tuple[dict[str, Any], Service | None]:
        service = await self.open_private(password=secret)  # requirepass: the secret counts
        return {"url": service.url}, service

    async def secret_failures(self, secret: str) -> list[BaseException]:
        wrong = self.target.replace(f":{secret}@", f":{secret}-wrong@", 1)
        return await _failed_open(self.build(url=wrong))

    async def _client(self) -> aredis.Redis:
        return aredis.Redis.from_url(self.target)


class RedisListHarness(_RedisHarness):
    type_name = "redis_list"
    crash_settings: ClassVar[dict[str, Any]] = {
        "heartbeat_ttl": "1s",
        "recovery_interval": "200ms",
    }

    @property
    def key(self) -> str:
        return f"{self.ctx.redis_prefix}in"

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "redis_list",
            "url": self.target,
            "lists": {"in": self.key},
            "processing_prefix": f"{self.ctx.redis_prefix}tmp:",
            "key_field": "id",
            "poll_interval": "20ms",
            **overrides,
        }

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        client = await self._client()
        try:
            for payload in payloads:  # LPUSH one by one, as the seed's producers do
                await client.lpush(self.key, payload.raw)
        finally:
            await client.aclose()
        return byte_expectations(payloads)


class RedisStreamHarness(_RedisHarness):
    type_name = "redis_stream"
    crash_settings: ClassVar[dict[str, Any]] = {"claim_idle": "500ms"}

    @property
    def key(self) -> str:
        return f"{self.ctx.redis_prefix}stream"

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "redis_stream",
            "url": self.target,
            "streams": {"in": self.key},
            "group": "conformance",
            "key_field": "id",
            "field": "data",
            "block": "100ms",
            **overrides,
        }

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        client = await self._client()
        try:
            for payload in payloads:
                await client.xadd(self.key, {"data": payload.raw})
        finally:
            await client.aclose()
        return byte_expectations(payloads)


class PostgresService(Service):
    def __init__(self) -> None:
        self.cluster = PrivatePostgres()

    async def start(self) -> None:
        if not self.url:
            await asyncio.to_thread(self.cluster.init)
        await asyncio.to_thread(self.cluster.start)
        if not self.url:
            self.url = await asyncio.to_thread(self.cluster.create_database, "conformance")

    async def stop(self) -> None:
        await asyncio.to_thread(self.cluster.stop)

    async def destroy(self) -> None:
        await asyncio.to_thread(self.cluster.destroy)


QUEUE = "conformance_queue"
TABLE = "items"


class PgOutboxHarness(SourceHarness):
    """Rows of ``items (id text PRIMARY KEY, doc jsonb, raw bytea)``: a payload is the row's
    ``doc``; one PostgreSQL refuses there goes in ``raw`` instead, as its bytes."""

    type_name = "pg_outbox"
    services = frozenset({"pg"})
    deletes = True
    restart = "a private PostgreSQL cluster (pg_ctl stop -m fast, then start)"
    credentials = True
    crash_settings: ClassVar[dict[str, Any]] = {"lease": "1s"}
    restart_settings: ClassVar[dict[str, Any]] = {"connect_timeout": "2s"}
    refused_by_service: ClassVar[dict[str, str]] = {
        "non_json": "22P02: invalid input syntax for type json",
        "invalid_utf8": "not UTF-8: a UTF8 database cannot hold the text",
        "nul_raw": "22P02: a raw NUL is no JSON (and text cannot hold NUL)",
        "nul_escaped": "22P05: jsonb cannot hold \\u0000",
        "deep_100k": "54001: stack depth limit exceeded",
        "long_key": "54000: index row size exceeds the btree maximum (the table's key)",
        "empty": "22P02: an empty text is no JSON",
    }
    """Payloads PostgreSQL itself refuses in a jsonb column or a text key, checked by the
    poison case: they reach the source as bytes in the ``raw`` column."""

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.ctx.pg_url
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, doc jsonb, raw bytea)"
            )
        await outbox.install(self.target, QUEUE, [TABLE])

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "pg_outbox",
            "url": self.target,
            "queue_table": QUEUE,
            "tables": [TABLE],
            "poll_interval": "50ms",
            **overrides,
        }

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        expected: list[Expected] = []
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as conn:
            for payload in payloads:
                expected.append(await self._insert(conn, payload))
        return expected

    async def _insert(self, conn: psycopg.AsyncConnection[Any], payload: Payload) -> Expected:
        key = payload.key if payload.key is not None else f"p-{payload.name}"
        upsert = (
            f"INSERT INTO {TABLE} (id, doc, raw) VALUES (%s, %s::jsonb, %s) "
            "ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc, raw = EXCLUDED.raw"
        )
        try:
            text = payload.raw.decode("utf-8")
            async with conn.transaction():
                await conn.execute(upsert, (key, text, None))
        except (UnicodeDecodeError, psycopg.Error) as exc:
            reason = getattr(getattr(exc, "diag", None), "sqlstate", None) or type(exc).__name__
            fallback = f"p-{payload.name}"
            await conn.execute(upsert, (fallback, None, payload.raw))
            row = {"id": fallback, "doc": None, "raw": "\\x" + payload.raw.hex()}
            return Expected(payload, "refused", row, key=fallback, reason=str(reason))
        return Expected(payload, "exact", payload.value, key=key)

    def message(self, record: Record) -> Any:
        return record.data.get("doc")

    async def delete(self, key: str) -> None:
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as conn:
            await conn.execute(f"DELETE FROM {TABLE} WHERE id = %s", (key,))

    async def failed_by_source(self) -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as conn:
            cursor = await conn.execute(
                f"SELECT record_id, last_error FROM {QUEUE} WHERE status = 'failed'"
            )
            return {key: error or "" for key, error in await cursor.fetchall()}

    def private_service(self, password: str | None = None) -> Service:
        return PostgresService()

    async def secret_setup(self, secret: str) -> tuple[dict[str, Any], Service | None]:
        # Trust authentication ignores the password: it only has to stay out of every line.
        return {"url": self.target.replace("postgres@", f"postgres:{secret}@", 1)}, None

    async def secret_failures(self, secret: str) -> list[BaseException]:
        url = f"postgresql://postgres:{secret}@127.0.0.1:{CLOSED_PORT}/nowhere"
        return await _failed_open(self.build(url=url, connect_timeout="2s"))


class PgTableHarness(PgOutboxHarness):
    """The same ``items`` rows as ``pg_outbox``, read by ``pg_table`` through its change log
    (``snapshot: never``: the cases produce after the source exists, as changes; the snapshot
    has its own tests in tests/integration/test_pg_table.py).

    A value nested deeper than sinks write (``deep_2k``) arrives wrapped, column by column,
    with the text PostgreSQL holds for it: jsonb keeps no producer's bytes, so the bytes the
    source can keep are those of the stored value (``doc::text``)."""

    type_name = "pg_table"
    crash_settings: ClassVar[dict[str, Any]] = {}
    restart_settings: ClassVar[dict[str, Any]] = {
        "connect_timeout": "2s",
        "reconnect": {"initial_delay": "100ms", "max_delay": "500ms"},
    }

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.ctx.pg_url
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, doc jsonb, raw bytea)"
            )
        await table_capture.install(self.target, TABLE)

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "pg_table",
            "url": self.target,
            "table": TABLE,
            "updated_at": None,
            "snapshot": "never",
            "poll_interval": "50ms",
            **overrides,
        }

    async def _insert(self, conn: psycopg.AsyncConnection[Any], payload: Payload) -> Expected:
        expected = await super()._insert(conn, payload)
        if expected.how != "exact" or not payload.facts.get("may_wrap"):
            return expected
        cursor = await conn.execute(f"SELECT doc::text FROM {TABLE} WHERE id = %s", (expected.key,))
        row = await cursor.fetchone()
        assert row is not None
        stored = dataclasses.replace(payload, raw=row[0].encode())
        return dataclasses.replace(expected, payload=stored)

    async def failed_by_source(self) -> dict[str, str]:
        return {}  # pg_table fails nothing on its own: unreadable values arrive wrapped


async def _failed_open(source: Any) -> list[BaseException]:
    try:
        await source.open()
    except Exception as exc:
        return [exc]
    finally:
        await source.close()
    raise AssertionError("a wrong login was accepted")
