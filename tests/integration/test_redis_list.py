"""``redis_list`` against a real Redis: producers are plain LPUSH calls, as in the seed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aredis
import redis.exceptions
from pydantic import ValidationError
from structlog.testing import capture_logs

from syncworker.connectors.redis.source_list import RedisListSource
from syncworker.core.record import Batch, key_from_bytes
from syncworker.errors import ConnectionClosed
from tests.poison_payloads import PAYLOADS, assert_wrapping_logged, check
from tests.waiting import eventually

from .conftest import REDIS_URL

pytestmark = pytest.mark.integration

Factory = Callable[..., RedisListSource]


@pytest.fixture
async def make_source(redis_prefix: str) -> AsyncIterator[Factory]:
    """Builds sources on this test's keys (lists ``<prefix>in`` and ``<prefix>out``, processing
    keys under ``<prefix>tmp:``); closes those still open afterwards."""
    sources: list[RedisListSource] = []

    def make(**overrides: Any) -> RedisListSource:
        config: dict[str, Any] = {
            "url": REDIS_URL,
            "lists": {"in": f"{redis_prefix}in", "out": f"{redis_prefix}out"},
            "processing_prefix": f"{redis_prefix}tmp:",
            "key_field": "id",
        }
        config.update(overrides)
        source = RedisListSource(config, name="redis_list")
        sources.append(source)
        return source

    yield make
    for source in sources:
        await source.close()


async def crash(source: RedisListSource) -> None:
    """What a killed process leaves behind: no heartbeat refresh, no clean-up, no close."""
    for task in source._tasks:
        task.cancel()
    await asyncio.gather(*source._tasks, return_exceptions=True)
    assert source._client is not None
    await source._client.aclose()
    source._client = None


async def push(client: aredis.Redis, key: str, *ids: int) -> None:
    """LPUSH one JSON message per id, in the given order (the first is the oldest)."""
    for message_id in ids:
        await client.lpush(key, orjson.dumps({"id": message_id, "text": f"message {message_id}"}))


def ids(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [record.data["id"] for record in batch.records]


async def processing_lists(client: aredis.Redis, prefix: str) -> list[bytes]:
    keys = [key async for key in client.scan_iter(match=f"{prefix}tmp:*")]
    return [key for key in keys if await client.type(key) == b"list"]


async def test_claims_oldest_first_across_batches(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", *range(1, 11))
    source = make_source()
    await source.open()

    first = await source.claim(3)
    second = await source.claim(3)
    rest = await source.claim(100)

    assert ids(first) == [1, 2, 3]
    assert ids(second) == [4, 5, 6]
    assert ids(rest) == [7, 8, 9, 10]
    assert await source.claim(10) is None
    assert rest is not None
    record = rest.records[0]
    assert record.stream == "in"
    assert record.key == "7"
    assert record.meta["list"] == f"{redis_prefix}in"
    assert datetime.fromisoformat(record.meta["received_at"]).utcoffset() is not None


async def test_limit_is_respected_and_shared_fairly_between_lists(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", *range(100))
    await push(redis_client, f"{redis_prefix}out", *range(1000, 1100))
    source = make_source()
    await source.open()

    batch = await source.claim(10)
    assert batch is not None
    streams = [record.stream for record in batch.records]
    assert len(streams) == 10
    assert streams.count("in") == 5
    assert streams.count("out") == 5

    # One item per claim: the lists take turns, so a busy list cannot starve the other.
    singles = [await source.claim(1) for _ in range(4)]
    assert sorted(b.records[0].stream for b in singles if b is not None) == [
        "in",
        "in",
        "out",
        "out",
    ]

    # A short list gives what it has; the rest of the limit goes to the other list.
    await redis_client.ltrim(f"{redis_prefix}out", 0, 1)
    uneven = await source.claim(10)
    assert uneven is not None
    assert [r.stream for r in uneven.records].count("out") == 2
    assert [r.stream for r in uneven.records].count("in") == 8


async def test_ack_deletes_the_processing_list(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", 1, 2, 3)
    await push(redis_client, f"{redis_prefix}out", 4)
    source = make_source()
    await source.open()

    first = await source.claim(2)
    second = await source.claim(10)
    assert first is not None and second is not None
    in_flight = await processing_lists(redis_client, redis_prefix)
    assert len(in_flight) == 3  # one per batch and list: first (in, out), second (in)
    assert sum([await redis_client.llen(key) for key in in_flight]) == 4

    await source.ack(first)
    assert len(await processing_lists(redis_client, redis_prefix)) == 1
    await source.ack(second)
    assert await processing_lists(redis_client, redis_prefix) == []
    registry = f"{redis_prefix}tmp:worker:{source.worker_id}:batches"
    assert await redis_client.hlen(registry) == 0
    assert await source.backlog() == 0


async def test_nack_puts_items_back_in_original_order_at_the_consuming_end(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}in"
    await push(redis_client, key, *range(1, 7))
    before = await redis_client.lrange(key, 0, -1)
    source = make_source()
    await source.open()

    batch = await source.claim(4)
    assert ids(batch) == [1, 2, 3, 4]
    await push(redis_client, key, 7)  # a producer keeps going meanwhile
    assert batch is not None
    await source.nack(batch)

    assert await redis_client.lrange(key, 0, -1) == [
        orjson.dumps({"id": 7, "text": "message 7"}),
        *before,
    ]
    assert await processing_lists(redis_client, redis_prefix) == []
    assert ids(await source.claim(5)) == [1, 2, 3, 4, 5]


async def test_payload_that_is_not_a_json_object_is_wrapped(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await redis_client.lpush(f"{redis_prefix}out", b"plain text", b"[1, 2]", b"\xff\xfe")
    source = make_source()
    await source.open()

    batch = await source.claim(10)

    assert batch is not None
    assert [r.data["raw"] for r in batch.records] == ["plain text", "[1, 2]", "//4="]
    assert [r.data["encoding"] for r in batch.records] == ["utf-8", "utf-8", "base64"]
    assert [r.data["reason"] for r in batch.records] == ["not_json", "not_object", "invalid_utf8"]
    for record in batch.records:
        assert record.data["wrapped"] is True
        assert record.stream == "out"
        assert datetime.fromisoformat(record.data["received_at"]).utcoffset() is not None
    assert batch.records[0].key == key_from_bytes(b"plain text")


async def test_every_poison_payload_is_one_record_and_blocks_nothing(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    # Before: invalid UTF-8 became U+FFFD (bytes and id lost, no log), an object key a
    # Python repr, and big numbers floats (1.2345678901234568e+29, 0.1).
    for _, payload in PAYLOADS:
        await redis_client.lpush(f"{redis_prefix}in", payload)
    source = make_source()
    await source.open()

    with capture_logs() as logs:
        batch = await source.claim(100)

    assert batch is not None
    check(batch.records)
    await source.ack(batch)
    assert await source.claim(100) is None
    assert_wrapping_logged(logs)


async def test_key_from_key_field_else_hash_of_payload(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    without_id = orjson.dumps({"text": "no id"})
    await redis_client.lpush(f"{redis_prefix}in", orjson.dumps({"id": "abc"}), without_id)
    source = make_source()
    await source.open()

    batch = await source.claim(10)

    assert batch is not None
    assert [r.key for r in batch.records] == ["abc", key_from_bytes(without_id)]


async def test_two_workers_never_claim_the_same_item(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", *range(1000))
    await push(redis_client, f"{redis_prefix}out", *range(1000, 2000))
    workers = [make_source(worker_id="w1"), make_source(worker_id="w2")]
    for worker in workers:
        await worker.open()

    async def drain(worker: RedisListSource) -> list[int]:
        got: list[int] = []
        while (batch := await worker.claim(37)) is not None:
            got += ids(batch)
            await worker.ack(batch)
        return got

    first, second = await asyncio.gather(*(drain(worker) for worker in workers))

    assert first and second
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(2000))


async def test_dead_workers_batches_return_in_order_exactly_once(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}in"
    await push(redis_client, key, *range(1, 9))
    dead = make_source(worker_id="dead")
    await dead.open()
    assert ids(await dead.claim(3)) == [1, 2, 3]
    assert ids(await dead.claim(3)) == [4, 5, 6]
    await crash(dead)
    await push(redis_client, key, 9)
    live = [make_source(worker_id="live-1"), make_source(worker_id="live-2")]
    for worker in live:
        await worker.open()
    assert await live[0].recover() == 0  # the dead worker's heartbeat has not lapsed yet

    await redis_client.delete(f"{redis_prefix}tmp:worker:dead")
    returned = await asyncio.gather(*(worker.recover() for worker in live))

    assert sorted(returned) == [0, 6]
    assert await redis_client.llen(key) == 9
    assert await processing_lists(redis_client, redis_prefix) == []
    assert not await redis_client.sismember(f"{redis_prefix}tmp:workers", "dead")
    assert ids(await live[1].claim(100)) == list(range(1, 10))


async def test_expired_heartbeat_is_recovered_by_a_live_workers_background_task(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}in"
    await push(redis_client, key, *range(1, 6))
    dead = make_source(worker_id="dead", heartbeat_ttl="300ms")
    await dead.open()
    assert ids(await dead.claim(2)) == [1, 2]
    assert ids(await dead.claim(2)) == [3, 4]
    await crash(dead)
    # The live worker's own TTL leaves room for a busy machine's stalls (it beats every third).
    live = make_source(worker_id="live", heartbeat_ttl="1s", recovery_interval="50ms")
    await live.open()

    async def recovered() -> bool:
        assert await redis_client.exists(f"{redis_prefix}tmp:worker:live") == 1
        return bool(await redis_client.llen(key) >= 5)

    await eventually(recovered, "the dead worker's batches back on the list")
    assert ids(await live.claim(10)) == [1, 2, 3, 4, 5]


async def test_live_heartbeat_keeps_batches_from_recovery(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", 1, 2)
    busy = make_source(worker_id="busy", heartbeat_ttl="600ms")  # beats every 200 ms
    await busy.open()
    batch = await busy.claim(10)
    other = make_source(worker_id="other")
    await other.open()

    for _ in range(5):  # well past the TTL (time passing is what is tested here)
        await asyncio.sleep(0.3)
        assert await other.recover() == 0
    assert batch is not None
    await busy.ack(batch)
    assert await redis_client.llen(f"{redis_prefix}in") == 0


async def test_restarted_worker_with_same_id_takes_back_its_batches_at_open(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", 1, 2, 3)
    first_life = make_source(worker_id="fixed")
    await first_life.open()
    assert ids(await first_life.claim(2)) == [1, 2]
    await crash(first_life)  # the heartbeat is still alive, as after a quick restart

    second_life = make_source(worker_id="fixed")
    await second_life.open()

    assert ids(await second_life.claim(10)) == [1, 2, 3]


async def test_claim_whose_reply_was_lost_is_rolled_back_before_the_next_claim(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", 1, 2, 3)
    source = make_source()
    await source.open()
    scripts: dict[str, Any] = source._scripts
    script = scripts["list_claim"]

    async def runs_then_connection_drops(**kwargs: Any) -> Any:
        await script(**kwargs)  # Redis moved the items ...
        raise redis.exceptions.ConnectionError("Connection closed by server.")  # ... reply lost

    scripts["list_claim"] = runs_then_connection_drops
    with pytest.raises(ConnectionClosed):
        await source.claim(2)
    scripts["list_claim"] = script

    assert ids(await source.claim(10)) == [1, 2, 3]
    assert len(await processing_lists(redis_client, redis_prefix)) == 1


async def test_close_deletes_heartbeat_and_leaves_unacked_batches_for_recovery(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await push(redis_client, f"{redis_prefix}in", 1, 2)
    closing = make_source(worker_id="closing")
    await closing.open()
    assert await redis_client.exists(f"{redis_prefix}tmp:worker:closing") == 1
    assert ids(await closing.claim(1)) == [1]
    await closing.close()
    assert await redis_client.exists(f"{redis_prefix}tmp:worker:closing") == 0

    other = make_source(worker_id="other")
    await other.open()  # recovery at open finds the closed worker's batch
    assert ids(await other.claim(10)) == [1, 2]


async def test_backlog_counts_every_list_and_wait_wakes_on_a_push(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    source = make_source(poll_interval="20ms")
    await source.open()
    assert await source.backlog() == 0
    waiting = asyncio.create_task(source.wait(60))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    await push(redis_client, f"{redis_prefix}in", 1, 2)
    await push(redis_client, f"{redis_prefix}out", 3)
    await asyncio.wait_for(waiting, timeout=10)

    assert await source.backlog() == 3
    await source.claim(2)
    assert await source.backlog() == 1


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        RedisListSource({"lists": {"in": "q"}, "batch_size": 5}, name="x")
    with pytest.raises(ValidationError, match="not both"):
        RedisListSource({"lists": {"in": "q"}, "url": REDIS_URL, "host": "h"}, name="x")
    with pytest.raises(ValidationError, match="lists is empty"):
        RedisListSource({"lists": {}}, name="x")
    source = RedisListSource(
        {"lists": {"in": "q"}, "host": "h", "password": "", "heartbeat_ttl": "5s"}, name="x"
    )
    assert source.config.password is None
    assert source.config.heartbeat_ttl == 5.0
