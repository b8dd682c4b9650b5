"""The ``pg_outbox`` source and its install against a real PostgreSQL (``pg_url``: a fresh
database per test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from syncworker.connectors import postgres as pg_package
from syncworker.connectors.postgres import outbox
from syncworker.connectors.postgres.source_outbox import PgOutboxSource, PgOutboxSourceConfig
from syncworker.core import jsonvalue
from syncworker.core.protocols import Countable, Source
from syncworker.core.record import Batch
from syncworker.errors import ConfigError
from tests.waiting import eventually

pytestmark = pytest.mark.integration

QUEUE = "algolia_sync_queue"
TABLES = ["products", "categories"]

SCHEMA = """
CREATE TABLE products (
    id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2),
    updated_at timestamptz NOT NULL DEFAULT '2026-01-02T03:04:05Z'
);
CREATE TABLE categories (slug text PRIMARY KEY, title text);
"""


async def sql(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def setup_outbox(url: str, queue: str = QUEUE) -> None:
    await sql(url, SCHEMA)
    await outbox.install(url, queue, TABLES, key_columns={"categories": "slug"})


@asynccontextmanager
async def open_source(url: str, **settings: Any) -> AsyncIterator[PgOutboxSource]:
    config: dict[str, Any] = {
        "url": url,
        "queue_table": QUEUE,
        "tables": TABLES,
        "key_columns": {"categories": "slug"},
        **settings,
    }
    source = PgOutboxSource(config, name="outbox")
    await source.open()
    try:
        yield source
    finally:
        await source.close()


async def queue_rows(url: str, queue: str = QUEUE) -> list[tuple[Any, ...]]:
    return await sql(
        url,
        f"SELECT table_name, record_id, operation, status, attempts FROM {queue} ORDER BY id",
    )


def test_config_defaults_and_validation() -> None:
    config = PgOutboxSourceConfig.model_validate({"url": "postgresql://u@h/db"})
    assert config.queue_table == "syncworker_outbox"
    assert config.poll_interval == 5.0
    assert config.lease == 60.0
    assert config.max_retries == 5
    parsed = PgOutboxSourceConfig.model_validate(
        {"url": "postgresql://u@h/db", "poll_interval": "5000", "lease": "30s"}
    )
    assert parsed.poll_interval == 5.0
    assert parsed.lease == 30.0
    with pytest.raises(ValidationError, match="extra"):
        PgOutboxSourceConfig.model_validate({"url": "postgresql://u@h/db", "bath_size": 1})
    with pytest.raises(ValidationError, match="key_columns"):
        PgOutboxSourceConfig.model_validate(
            {"url": "postgresql://u@h/db", "tables": ["a"], "key_columns": {"b": "id"}}
        )
    with pytest.raises(ValidationError, match="longer than"):
        PgOutboxSourceConfig.model_validate({"url": "postgresql://u@h/db", "queue_table": "q" * 50})
    assert "source:pg_outbox" in pg_package.CONNECTORS


def test_names_follow_the_seed() -> None:
    seed = outbox.OutboxNames.for_queue("algolia_sync_queue")
    assert (seed.log, seed.stats, seed.cleanup_function) == (
        "algolia_sync_log",
        "algolia_sync_stats",
        "algolia_sync_cleanup",
    )
    default = outbox.OutboxNames.for_queue("syncworker_outbox")
    assert (default.log, default.stats) == ("syncworker_outbox_log", "syncworker_outbox_stats")
    script = outbox.install_script("algolia_sync_queue", ["products"])
    assert 'CREATE TABLE IF NOT EXISTS "algolia_sync_queue"' in script
    assert "cleanup_old_sync_records" in script
    assert "cleanup_old_sync_records" not in outbox.install_script("other_queue", ["products"])


async def test_install_twice_is_harmless_and_triggers_enqueue(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await outbox.install(pg_url, QUEUE, TABLES, key_columns={"categories": "slug"})
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a'), (2, 'b')")
    await sql(pg_url, "UPDATE products SET name = 'c' WHERE id = 2")
    await sql(pg_url, "DELETE FROM products WHERE id = 1")
    await sql(pg_url, "INSERT INTO categories VALUES ('shoes', 'Shoes')")
    await sql(pg_url, "UPDATE categories SET slug = 'boots' WHERE slug = 'shoes'")
    assert await queue_rows(pg_url) == [
        ("products", "1", "INSERT", "pending", 0),
        ("products", "2", "INSERT", "pending", 0),
        ("products", "2", "UPDATE", "pending", 0),
        ("products", "1", "DELETE", "pending", 0),
        ("categories", "shoes", "INSERT", "pending", 0),
        ("categories", "shoes", "DELETE", "pending", 0),
        ("categories", "boots", "UPDATE", "pending", 0),
    ]
    triggers = await sql(
        pg_url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'algolia_sync_queue_trigger'"
    )
    assert triggers == [(2,)]
    stats = await outbox.stats(pg_url, QUEUE)
    assert stats["pending"] == 7
    assert stats["completed"] == 0
    assert stats["oldest_pending_age_s"] is not None


async def test_open_without_install_is_a_config_error(pg_url: str) -> None:
    source = PgOutboxSource({"url": pg_url, "queue_table": "missing_queue"}, name="outbox")
    with pytest.raises(ConfigError, match="syncworker pg install"):
        await source.open()


async def test_claim_reads_current_state_and_collapses_bursts(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name, price) VALUES (1, 'a', 9.50), (2, 'b', 1)")
    for name in ("x", "y", "z"):
        await sql(pg_url, "UPDATE products SET name = %s WHERE id = 1", (name,))
    await sql(pg_url, "DELETE FROM products WHERE id = 2")
    await sql(pg_url, "INSERT INTO categories VALUES ('shoes', 'Shoes')")
    async with open_source(pg_url) as source:
        assert isinstance(source, Source)
        assert isinstance(source, Countable)
        assert await source.backlog() == 7
        batch = await source.claim(100)
        assert batch is not None
        by_key = {(r.stream, r.key): r for r in batch.records}
        assert list(by_key) == [("products", "1"), ("products", "2"), ("categories", "shoes")]
        one = by_key[("products", "1")]
        assert one.op == "upsert"
        assert one.data == {
            "id": 1,
            "name": "z",
            "price": 9.5,
            "updated_at": "2026-01-02T03:04:05+00:00",
        }
        assert len(one.meta["queue_ids"]) == 4
        assert one.meta["operation"] == "UPDATE"
        assert one.meta["attempts"] == 1
        two = by_key[("products", "2")]
        assert (two.op, two.data, two.meta["operation"]) == ("delete", {}, "DELETE")
        assert by_key[("categories", "shoes")].data == {"slug": "shoes", "title": "Shoes"}
        assert await source.backlog() == 0
        assert await source.claim(100) is None
        statuses = {row[3] for row in await queue_rows(pg_url)}
        assert statuses == {"processing"}


async def test_claim_never_exceeds_limit(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) SELECT g, 'n' FROM generate_series(1, 25) g")
    async with open_source(pg_url) as source:
        sizes = []
        while (batch := await source.claim(10)) is not None:
            sizes.append(len(batch))
        assert sizes == [10, 10, 5]


async def test_concurrent_workers_claim_disjoint_rows(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(
        pg_url, "INSERT INTO products (id, name) SELECT g, 'n' FROM generate_series(1, 300) g"
    )
    async with (
        open_source(pg_url, worker_id="w1") as one,
        open_source(pg_url, worker_id="w2") as two,
        open_source(pg_url, worker_id="w3") as three,
    ):

        async def drain(source: PgOutboxSource) -> list[str]:
            keys: list[str] = []
            while (batch := await source.claim(7)) is not None:
                keys.extend(r.key for r in batch.records)
                await source.ack(batch)
            return keys

        results = await asyncio.gather(drain(one), drain(two), drain(three))
    claimed = [key for keys in results for key in keys]
    assert len(claimed) == len(set(claimed)) == 300
    logged = await sql(
        pg_url, "SELECT record_id, count(*) FROM algolia_sync_log GROUP BY 1 HAVING count(*) > 1"
    )
    assert logged == []
    workers = await sql(pg_url, "SELECT DISTINCT worker FROM algolia_sync_log ORDER BY 1")
    assert len(workers) >= 2


async def test_expired_lease_is_claimed_by_another_worker(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")
    async with (
        open_source(pg_url, worker_id="crashed", lease="60s") as crashed,
        open_source(pg_url, worker_id="rescuer") as rescuer,
    ):
        first = await crashed.claim(10)
        assert first is not None
        assert await rescuer.claim(10) is None
        await sql(pg_url, f"UPDATE {QUEUE} SET locked_until = now() - interval '1 second'")
        assert await rescuer.backlog() == 1
        second = await rescuer.claim(10)
        assert second is not None
        assert [r.key for r in second.records] == ["1"]
        assert second.records[0].meta["attempts"] == 2
        await rescuer.ack(second)
        await crashed.ack(first)  # too late: the row is the rescuer's
    rows = await sql(pg_url, "SELECT worker FROM algolia_sync_log")
    assert rows == [("rescuer",)]


async def test_ack_marks_completed_and_logs(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a'), (2, 'b')")
    await sql(pg_url, "UPDATE products SET name = 'c' WHERE id = 1")
    await sql(pg_url, "DELETE FROM products WHERE id = 2")
    async with open_source(pg_url, worker_id="w1") as source:
        batch = await source.claim(100)
        assert batch is not None
        await source.ack(batch)
    rows = await sql(pg_url, f"SELECT status, processed_at IS NOT NULL, locked_by FROM {QUEUE}")
    assert set(rows) == {("completed", True, None)}
    logged = await sql(
        pg_url,
        "SELECT table_name, record_id, operation, result, worker, cardinality(queue_ids)"
        " FROM algolia_sync_log ORDER BY record_id",
    )
    assert logged == [
        ("products", "1", "UPDATE", "success", "w1", 2),
        ("products", "2", "DELETE", "success", "w1", 2),
    ]
    stats = await outbox.stats(pg_url, QUEUE)
    assert stats["completed"] == 4
    assert stats["completed_last_hour"] == 4
    assert stats["pending"] == 0
    assert stats["oldest_pending_age_s"] is None


async def test_refused_record_backs_off_then_fails_and_retry_failed_restores(
    pg_url: str,
) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")
    refused = {0: "RuntimeError: algolia said no"}
    async with open_source(pg_url, max_retries=3, retry_delay="1s") as source:
        batch = await source.claim(10)
        assert batch is not None
        await source.ack_except(batch, refused)
        rows = await sql(
            pg_url,
            f"SELECT status, attempts, last_error,"
            f" extract(epoch FROM next_attempt_at - now()) FROM {QUEUE}",
        )
        status, attempts, error, delay_s = rows[0]
        assert (status, attempts, error) == ("pending", 1, "RuntimeError: algolia said no")
        assert 0.5 < delay_s <= 1.0
        assert await source.claim(10) is None  # backing off
        for expected_attempts in (2, 3):
            await sql(pg_url, f"UPDATE {QUEUE} SET next_attempt_at = now()")
            batch = await source.claim(10)
            assert batch is not None
            assert batch.records[0].meta["attempts"] == expected_attempts
            await source.ack_except(batch, refused)
        rows = await sql(pg_url, f"SELECT status, attempts, last_error FROM {QUEUE}")
        assert rows == [("failed", 3, "RuntimeError: algolia said no")]
        await sql(pg_url, f"UPDATE {QUEUE} SET next_attempt_at = now()")
        assert await source.claim(10) is None
        results = await sql(pg_url, "SELECT result, error FROM algolia_sync_log ORDER BY id")
        assert [r[0] for r in results] == ["retry", "retry", "failed"]
        assert results[-1][1] == "RuntimeError: algolia said no"
        assert (await outbox.stats(pg_url, QUEUE))["failed"] == 1

        assert await outbox.retry_failed(pg_url, QUEUE) == 1
        batch = await source.claim(10)
        assert batch is not None
        assert batch.records[0].meta["attempts"] == 1
        await source.ack(batch)
    rows = await sql(pg_url, f"SELECT status, last_error FROM {QUEUE}")
    assert rows == [("completed", None)]


async def test_ack_except_acks_the_rest_and_logs_each_record_with_its_error(
    pg_url: str,
) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    async with open_source(pg_url, max_retries=1, worker_id="w1") as source:
        batch = await source.claim(10)
        assert batch is not None and [r.key for r in batch.records] == ["1", "2", "3"]
        await source.ack_except(batch, {1: "ValueError: record 2 is too big"})
    rows = await sql(pg_url, f"SELECT record_id, status, last_error FROM {QUEUE} ORDER BY id")
    assert rows == [
        ("1", "completed", None),
        ("2", "failed", "ValueError: record 2 is too big"),
        ("3", "completed", None),
    ]
    log_rows = await sql(
        pg_url, "SELECT record_id, result, error, worker FROM algolia_sync_log ORDER BY record_id"
    )
    assert log_rows == [
        ("1", "success", None, "w1"),
        ("2", "failed", "ValueError: record 2 is too big", "w1"),
        ("3", "success", None, "w1"),
    ]


async def test_nack_hands_rows_back_without_counting_the_attempt(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")
    async with open_source(pg_url, max_retries=1) as source:
        for _ in range(3):  # more than max_retries: a sink outage never fails a row
            batch = await source.claim(10)
            assert batch is not None and batch.records[0].meta["attempts"] == 1
            await source.nack(batch, ConnectionError("algolia: 503"))
        batch = await source.claim(10)
        assert batch is not None
        await source.nack(batch)  # shutdown: no error, nothing logged, last error kept
        rows = await sql(pg_url, f"SELECT status, attempts, last_error FROM {QUEUE}")
        assert rows == [("pending", 0, "ConnectionError: algolia: 503")]
        results = await sql(pg_url, "SELECT result, error FROM algolia_sync_log ORDER BY id")
        assert results == [("retry", "ConnectionError: algolia: 503")] * 3
        batch = await source.claim(10)  # due at once: the breaker paces retries, not the row
        assert batch is not None
        await source.ack(batch)
    rows = await sql(pg_url, f"SELECT status, last_error FROM {QUEUE}")
    assert rows == [("completed", None)]


async def test_a_record_overtaken_by_a_later_change_in_flight_is_queued_again(
    pg_url: str,
) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'old')")
    async with open_source(pg_url) as source:
        older = await source.claim(10)
        await sql(pg_url, "UPDATE products SET name = 'new' WHERE id = 1")
        newer = await source.claim(10)
        assert older is not None and newer is not None
        assert older.records[0].data["name"] == "old" and newer.records[0].data["name"] == "new"
        await source.ack(newer)  # the newer state reached the sink first...
        await source.ack(older)  # ...then the older one: the sink may now hold 'old'
        again = await source.claim(10)
        assert again is not None and [r.data["name"] for r in again.records] == ["new"]
        await source.ack(again)
        assert await source.claim(10) is None  # nothing newer overtook it: no more
    rows = await sql(pg_url, f"SELECT operation, status FROM {QUEUE} ORDER BY id")
    assert rows == [("INSERT", "completed"), ("UPDATE", "completed"), ("UPDATE", "completed")]


async def test_a_row_whose_workers_keep_dying_ends_failed_after_max_retries(
    pg_url: str,
) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'crashes every worker')")
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (2, 'fine')")
    async with open_source(pg_url, max_retries=2, lease="300ms") as source:
        for attempt in (1, 2):
            batch = await source.claim(1)  # then "dies": never acked, the lease runs out
            assert batch is not None and batch.records[0].key == "1"
            assert batch.records[0].meta["attempts"] == attempt
            await asyncio.sleep(0.4)
        batch = await source.claim(10)
        assert batch is not None and [r.key for r in batch.records] == ["2"]
        await source.ack(batch)
    rows = await sql(pg_url, f"SELECT record_id, status, attempts, last_error FROM {QUEUE}")
    [(key, status, attempts, error)] = [r for r in rows if r[0] == "1"]
    assert (key, status, attempts) == ("1", "failed", 2)
    assert error.startswith("abandoned 2 time(s)")
    logged = await sql(pg_url, "SELECT record_id, result, error FROM algolia_sync_log")
    assert ("1", "failed", error) in logged
    assert await outbox.retry_failed(pg_url, QUEUE) == 1


async def test_claims_merged_into_one_batch_keep_the_newest_state_and_ack_at_once(
    pg_url: str,
) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'old'), (2, 'two')")
    async with open_source(pg_url, worker_id="w1") as source:
        first = await source.claim(10)
        await sql(pg_url, "UPDATE products SET name = 'new' WHERE id = 1")
        await sql(pg_url, "INSERT INTO categories (slug, title) VALUES ('c', 'C')")
        second = await source.claim(10)
        assert first is not None and second is not None
        merged = source.merge([first, second])
        assert [(r.stream, r.key) for r in merged.records] == [
            ("products", "1"),
            ("products", "2"),
            ("categories", "c"),
        ]
        assert merged.records[0].data["name"] == "new"
        assert merged.records[0].meta["queue_ids"] == [1, 3]
        assert merged.records[0].meta["operation"] == "UPDATE"
        await source.ack(merged)
        assert await source.claim(10) is None  # nothing overtaken: no row queued again
    rows = await sql(pg_url, f"SELECT status, count(*) FROM {QUEUE} GROUP BY status")
    assert rows == [("completed", 4)]
    logged = await sql(
        pg_url,
        "SELECT queue_ids, record_id, operation, result, worker FROM algolia_sync_log"
        " ORDER BY record_id",
    )
    assert logged == [
        ([1, 3], "1", "UPDATE", "success", "w1"),
        ([2], "2", "INSERT", "success", "w1"),
        ([4], "c", "INSERT", "success", "w1"),
    ]


async def test_backoff_grows_and_is_capped(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")
    async with open_source(pg_url, retry_delay="1s", retry_max_delay="5s", max_retries=10) as s:
        delays = []
        for _ in range(5):
            await sql(pg_url, f"UPDATE {QUEUE} SET next_attempt_at = now()")
            batch = await s.claim(10)
            assert batch is not None
            await s.ack_except(batch, {0: "ValueError: no"})
            rows = await sql(
                pg_url, f"SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM {QUEUE}"
            )
            delays.append(round(rows[0][0]))
        assert delays == [1, 2, 4, 5, 5]


async def test_notify_wakes_wait_quickly(pg_url: str) -> None:
    await setup_outbox(pg_url)
    async with open_source(pg_url, poll_interval="30s") as source:
        timeout_s = 10.0

        async def change() -> None:
            await asyncio.sleep(0.2)
            await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")

        writer = asyncio.create_task(change(), name="writer")
        started = time.monotonic()
        await source.wait(timeout_s)
        elapsed = time.monotonic() - started
        await writer
        assert elapsed < timeout_s / 2
        batch = await source.claim(10)
        assert batch is not None
        assert [r.key for r in batch.records] == ["1"]


async def test_wait_times_out_without_changes(pg_url: str) -> None:
    await setup_outbox(pg_url)
    async with open_source(pg_url) as source:
        started = time.monotonic()
        await source.wait(0.3)
        assert 0.2 < time.monotonic() - started < 3.0


async def test_listen_comes_back_after_terminate_backend(pg_url: str) -> None:
    await setup_outbox(pg_url)
    async with open_source(pg_url, poll_interval="30s") as source:
        old_pid = await source.listener_pid()
        assert old_pid is not None
        await sql(pg_url, "SELECT pg_terminate_backend(%s)", (old_pid,))

        async def listening_again() -> bool:
            await source.wait(0.5)  # notices the drop (once the backend is gone), listens again
            return await source.listener_pid() not in (None, old_pid)

        await eventually(listening_again, "a new listening connection")

        async def change() -> None:
            await asyncio.sleep(0.2)
            await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")

        writer = asyncio.create_task(change(), name="writer")
        started = time.monotonic()
        await source.wait(10.0)
        await writer
        assert time.monotonic() - started < 5.0


async def test_wait_polls_when_listen_is_off(pg_url: str) -> None:
    await setup_outbox(pg_url)
    async with open_source(pg_url, listen=False, poll_interval="200ms") as source:
        assert await source.listener_pid() is None
        started = time.monotonic()
        await source.wait(10.0)
        assert 0.1 < time.monotonic() - started < 5.0


async def test_cleanup_removes_old_rows(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await sql(pg_url, "INSERT INTO products (id, name) SELECT g, 'n' FROM generate_series(1, 4) g")
    async with open_source(pg_url) as source:
        batch = await source.claim(3)
        assert batch is not None
        await source.ack(batch)
    await sql(
        pg_url,
        f"UPDATE {QUEUE} SET processed_at = now() - interval '10 days'"
        " WHERE record_id IN ('1', '2')",
    )
    await sql(
        pg_url,
        "UPDATE algolia_sync_log SET synced_at = now() - interval '10 days' WHERE record_id = '1'",
    )
    assert await outbox.cleanup(pg_url, QUEUE, days=7) == 3
    remaining = await sql(pg_url, f"SELECT record_id, status FROM {QUEUE} ORDER BY id")
    assert remaining == [("3", "completed"), ("4", "pending")]
    logs = await sql(pg_url, "SELECT record_id FROM algolia_sync_log ORDER BY record_id")
    assert logs == [("2",), ("3",)]
    # The seed's own name works too.
    assert await sql(pg_url, "SELECT cleanup_old_sync_records(0)") == [(3,)]


async def test_uninstall_removes_triggers(pg_url: str) -> None:
    await setup_outbox(pg_url)
    await outbox.uninstall(pg_url, QUEUE, TABLES)
    await outbox.uninstall(pg_url, QUEUE, TABLES)
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")
    assert await queue_rows(pg_url) == []
    await outbox.uninstall(pg_url, QUEUE, TABLES, drop_tables=True)
    assert await sql(pg_url, f"SELECT to_regclass('{QUEUE}')") == [(None,)]


async def test_default_queue_name_and_channel(pg_url: str) -> None:
    await sql(pg_url, SCHEMA)
    await outbox.install(pg_url, tables=["products"], channel="changes")
    await sql(pg_url, "INSERT INTO products (id, name) VALUES (1, 'a')")
    source = PgOutboxSource(
        {"url": pg_url, "tables": ["products"], "channel": "changes"}, name="outbox"
    )
    await source.open()
    try:
        batch = await source.claim(10)
        assert batch is not None
        await source.ack(batch)
        assert isinstance(batch, Batch)
    finally:
        await source.close()
    assert (await outbox.stats(pg_url))["completed"] == 1
    assert await sql(pg_url, "SELECT count(*) FROM syncworker_outbox_log") == [(1,)]


# -- rows the source cannot read, exact numbers (issue 9 B, C) ---------------------------------

DOCS_SCHEMA = """
CREATE TABLE docs (id integer PRIMARY KEY, body jsonb, loose json, amount numeric);
"""


async def setup_docs(url: str) -> None:
    await sql(url, DOCS_SCHEMA)
    await outbox.install(url, QUEUE, ["docs"])


async def drain(source: PgOutboxSource, limit: int = 100) -> list[Any]:
    records = []
    while (batch := await source.claim(limit)) is not None:
        records += batch.records
        await source.ack(batch)
    return records


async def test_a_row_nested_deeper_than_the_json_parser_reads_fails_alone(pg_url: str) -> None:
    # PostgreSQL's jsonb takes 1,100 levels; orjson reads 1,024. Before: every claim raised
    # and the 300 rows behind it stayed pending with 0 attempts.
    await setup_docs(pg_url)
    deep = "[" * 1100 + "]" * 1100
    await sql(pg_url, "INSERT INTO docs (id, body) VALUES (1, %s::jsonb)", (deep,))
    await sql(pg_url, "INSERT INTO docs (id, body) SELECT n, '{}' FROM generate_series(2, 301) n")
    async with open_source(pg_url, tables=["docs"], key_columns={}) as source:
        records = await drain(source)
    assert [r.key for r in records] == [str(n) for n in range(2, 302)]
    failed = await sql(
        pg_url,
        f"SELECT record_id, status, attempts, last_error FROM {QUEUE} WHERE status <> 'completed'",
    )
    assert [row[:3] for row in failed] == [("1", "failed", 1)]
    assert "too_deep" in failed[0][3]
    logged = await sql(pg_url, "SELECT result, error FROM algolia_sync_log WHERE record_id = '1'")
    assert [(result, "too_deep" in error) for result, error in logged] == [("failed", True)]
    assert (await outbox.stats(pg_url, QUEUE))["failed"] == 1


async def test_a_row_postgres_cannot_turn_into_jsonb_fails_alone(pg_url: str) -> None:
    # A json column may hold \u0000, which to_jsonb refuses. The trigger refuses such a row
    # too, but one written before the install and queued by a backfill failed the table's
    # whole SELECT, so every claim.
    await sql(pg_url, DOCS_SCHEMA)
    await sql(pg_url, "INSERT INTO docs (id, loose) VALUES (1, '{\"a\": 1}')")
    await sql(pg_url, 'INSERT INTO docs (id, loose) VALUES (2, \'{"text": "a\\u0000b"}\')')
    await sql(pg_url, "INSERT INTO docs (id, loose) VALUES (3, '[1, 2]')")
    await outbox.install(pg_url, QUEUE, ["docs"])
    await sql(
        pg_url,
        f"INSERT INTO {QUEUE} (table_name, record_id, operation)"
        " SELECT 'docs', id::text, 'INSERT' FROM docs ORDER BY id",
    )
    async with open_source(pg_url, tables=["docs"], key_columns={}) as source:
        records = await drain(source)
    assert [(r.key, r.data["loose"]) for r in records] == [("1", {"a": 1}), ("3", [1, 2])]
    failed = await sql(
        pg_url, f"SELECT record_id, status, last_error FROM {QUEUE} WHERE status = 'failed'"
    )
    assert [row[:2] for row in failed] == [("2", "failed")]
    assert "cannot be read as JSON" in failed[0][2]


async def test_numbers_beyond_a_double_arrive_exactly(pg_url: str) -> None:
    # Before: 123456789012345678901234567890 arrived as 1.2345678901234568e+29 and
    # 0.1000000000000000000000001 as 0.1.
    await setup_docs(pg_url)
    body = '{"big": 123456789012345678901234567890, "long": 0.1000000000000000000000001, "f": 0.5}'
    await sql(
        pg_url,
        "INSERT INTO docs (id, body, amount) VALUES (1, %s::jsonb, %s::numeric)",
        (body, "-98765432109876543210.0000000000001"),
    )
    async with open_source(pg_url, tables=["docs"], key_columns={}) as source:
        (record,) = await drain(source)
    assert record.data["body"] == {
        "big": 123456789012345678901234567890,
        "long": Decimal("0.1000000000000000000000001"),
        "f": 0.5,
    }
    assert type(record.data["body"]["big"]) is int
    assert record.data["amount"] == Decimal("-98765432109876543210.0000000000001")
    assert jsonvalue.dumps(record.data["body"], sort_keys=True) == (
        b'{"big":123456789012345678901234567890,"f":0.5,"long":0.1000000000000000000000001}'
    )
