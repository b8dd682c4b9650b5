"""``redis_stream`` against a real Redis: consumer groups, crash recovery and dead letters."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aredis
import redis.exceptions
from pydantic import ValidationError
from structlog.testing import capture_logs

from syncworker.connectors.redis.source_stream import RedisStreamSource
from syncworker.core.record import Batch, key_from_bytes
from syncworker.errors import ConnectionClosed
from tests.poison_payloads import PAYLOADS, assert_wrapping_logged, check
from tests.waiting import eventually

from .conftest import REDIS_URL

pytestmark = pytest.mark.integration

Factory = Callable[..., RedisStreamSource]
GROUP = "workers"


@pytest.fixture
async def make_source(redis_prefix: str) -> AsyncIterator[Factory]:
    """Builds sources reading ``<prefix>events`` (and ``<prefix>audit``) in group ``workers``;
    closes those still open afterwards."""
    sources: list[RedisStreamSource] = []

    def make(**overrides: Any) -> RedisStreamSource:
        config: dict[str, Any] = {
            "url": REDIS_URL,
            "streams": {"events": f"{redis_prefix}events"},
            "group": GROUP,
            "key_field": "id",
            "claim_idle": "200ms",
        }
        config.update(overrides)
        source = RedisStreamSource(config, name="redis_stream")
        sources.append(source)
        return source

    yield make
    for source in sources:
        await source.close()


async def crash(source: RedisStreamSource) -> None:
    """What a killed process leaves behind: pending entries, no clean-up, no close."""
    assert source._client is not None
    await source._client.aclose()
    source._client = None


async def add(client: aredis.Redis, key: str, *ids: int) -> list[bytes]:
    added: list[bytes] = []
    for message_id in ids:
        entry_id: Any = await client.xadd(key, {"data": orjson.dumps({"id": message_id})})
        added.append(entry_id)
    return added


def ids(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [record.data["id"] for record in batch.records]


async def claim_until(source: RedisStreamSource, limit: int) -> Batch:
    """Claim until something comes back (reclaims happen after claim_idle); bounded."""
    return await eventually(lambda: source.claim(limit), "a batch to claim")


async def pending_count(client: aredis.Redis, key: str) -> int:
    summary = await client.xpending(key, GROUP)
    return int(summary["pending"])


async def test_open_creates_the_group_and_reads_existing_entries(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    entry_ids = await add(redis_client, key, 1, 2)
    source = make_source()
    await source.open()

    groups = await redis_client.xinfo_groups(key)
    assert [g["name"] for g in groups] == [GROUP.encode()]
    batch = await source.claim(10)
    assert ids(batch) == [1, 2]
    assert batch is not None
    record = batch.records[0]
    assert record.stream == "events"
    assert record.key == "1"
    assert record.meta["id"] == entry_ids[0].decode()
    assert record.meta["stream_key"] == key
    assert record.meta["deliveries"] == 1


async def test_missing_stream_is_created_and_start_id_dollar_skips_old_entries(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    fresh = make_source()
    await fresh.open()
    assert await redis_client.exists(key) == 1  # MKSTREAM

    await add(redis_client, key, 1)
    late = make_source(group="late", start_id="$")
    await late.open()
    await add(redis_client, key, 2)
    assert ids(await late.claim(10)) == [2]
    assert ids(await fresh.claim(10)) == [1, 2]


async def test_two_consumers_each_get_every_entry_once(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await add(redis_client, f"{redis_prefix}events", *range(600))
    consumers = [make_source(consumer="c1"), make_source(consumer="c2")]
    for consumer in consumers:
        await consumer.open()

    async def drain(consumer: RedisStreamSource) -> list[int]:
        got: list[int] = []
        while (batch := await consumer.claim(25)) is not None:
            got += ids(batch)
            await consumer.ack(batch)
            await asyncio.sleep(0)
        return got

    first, second = await asyncio.gather(*(drain(c) for c in consumers))

    assert first and second
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(600))


async def test_ack_is_xack_and_entries_stay_in_the_stream(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    await add(redis_client, key, 1, 2, 3)
    source = make_source()
    await source.open()

    batch = await source.claim(10)
    assert batch is not None
    assert await pending_count(redis_client, key) == 3
    await source.ack(batch)

    assert await pending_count(redis_client, key) == 0
    assert await redis_client.xlen(key) == 3
    assert await source.claim(10) is None
    assert await source.backlog() == 0


async def test_entries_of_a_killed_consumer_go_to_another_after_claim_idle(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    await add(redis_client, key, 1, 2, 3, 4)
    killed = make_source(consumer="killed")
    await killed.open()
    assert ids(await killed.claim(3)) == [1, 2, 3]
    await crash(killed)
    survivor = make_source(consumer="survivor")
    await survivor.open()
    assert ids(await survivor.claim(10)) == [4]  # the killed one's entries are not idle yet

    batch = await claim_until(survivor, 10)

    assert ids(batch) == [1, 2, 3]
    assert [r.meta["deliveries"] for r in batch.records] == [2, 2, 2]
    await survivor.ack(batch)
    assert await pending_count(redis_client, key) == 1  # entry 4, never acked


async def test_nack_redelivers_promptly_in_order(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    await add(redis_client, key, *range(1, 8))
    source = make_source(claim_idle="60s", block="9s")
    await source.open()
    first = await source.claim(3)
    second = await source.claim(2)
    assert ids(first) == [1, 2, 3] and ids(second) == [4, 5]

    assert first is not None and second is not None
    await source.nack(second)
    await source.nack(first)
    # Returns at once (not after block=9s): entries are waiting to be redelivered.
    await asyncio.wait_for(source.wait(30), timeout=5)
    again = await source.claim(6)
    assert again is not None

    assert ids(again) == [1, 2, 3, 4, 5, 6]
    assert [r.meta["deliveries"] for r in again.records][:5] == [1] * 5  # a rollback is no delivery
    await source.ack(again)
    assert await pending_count(redis_client, key) == 0


async def test_entry_delivered_too_often_goes_to_the_dead_stream_and_is_acked(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    poison = await redis_client.xadd(key, {"data": b'{"id": 1}', "origin": b"app"})
    for life in ("first", "second"):  # two consumers die while holding the entry
        doomed = make_source(consumer=life, max_deliveries=2)
        await doomed.open()
        assert ids(await claim_until(doomed, 10)) == [1]
        await crash(doomed)
    last = make_source(consumer="last", max_deliveries=2)
    await last.open()

    async def dead_lettered() -> bool:
        if await redis_client.xlen(f"{key}:dead"):
            return True
        assert await last.claim(10) is None
        return False

    await eventually(dead_lettered, "the entry in the dead stream")
    dead_entries: Any = await redis_client.xrange(f"{key}:dead")
    [(_, fields)] = dead_entries
    assert fields[b"data"] == b'{"id": 1}'
    assert fields[b"origin"] == b"app"
    assert fields[b"dead_reason"] == b"max_deliveries exceeded"
    assert fields[b"dead_id"] == poison
    assert fields[b"dead_deliveries"] == b"2"
    assert await pending_count(redis_client, key) == 0
    assert await last.claim(10) is None


async def test_entries_of_a_claim_whose_reply_was_lost_come_back(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    await add(redis_client, key, 1, 2, 3)
    source = make_source(consumer="flaky")
    await source.open()
    scripts: dict[str, Any] = source._scripts
    script = scripts["stream_read"]

    async def runs_then_connection_drops(**kwargs: Any) -> Any:
        await script(**kwargs)  # Redis delivered the entries to this consumer ...
        raise redis.exceptions.ConnectionError("Connection closed by server.")  # ... reply lost

    scripts["stream_read"] = runs_then_connection_drops
    with pytest.raises(ConnectionClosed):
        await source.claim(2)
    scripts["stream_read"] = script

    batch = await claim_until(source, 10)  # entry 3 at once, entries 1 and 2 after claim_idle
    got = ids(batch)
    if got == [3]:
        got += ids(await claim_until(source, 10))
    assert sorted(got) == [1, 2, 3]
    assert source.consumer != "flaky"


async def test_payload_decoding(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    await redis_client.xadd(key, {"data": b"not json"})
    await redis_client.xadd(key, {"id": b"42", "name": b"field map"})
    await redis_client.xadd(key, {"data": b'{"name": "no id"}'})
    source = make_source()
    await source.open()

    batch = await source.claim(10)

    assert batch is not None
    wrapped, field_map, no_id = batch.records
    assert wrapped.data["raw"] == "not json"
    assert wrapped.data["wrapped"] is True
    assert wrapped.data["received_at"] == wrapped.meta["received_at"]
    assert wrapped.key == key_from_bytes(b"not json")
    assert field_map.data == {"id": "42", "name": "field map"}
    assert field_map.key == "42"
    assert no_id.key == key_from_bytes(b'{"name": "no id"}')


async def test_every_poison_payload_is_one_record_and_blocks_nothing(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    # Before: invalid UTF-8 became U+FFFD (bytes lost, no log), an object key a Python repr,
    # and big numbers floats (1.2345678901234568e+29, 0.1).
    key = f"{redis_prefix}events"
    for _, payload in PAYLOADS:
        await redis_client.xadd(key, {"data": payload})
    source = make_source()
    await source.open()

    with capture_logs() as logs:
        batch = await source.claim(100)

    assert batch is not None
    check(batch.records)
    assert_wrapping_logged(logs)
    await source.ack(batch)
    assert await source.claim(100) is None


async def test_a_field_map_that_is_not_utf8_keeps_its_bytes_and_id(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    # Before: the field map was decoded with U+FFFD replacements, silently.
    key = f"{redis_prefix}events"
    await redis_client.xadd(key, {"id": b"7", "photo": b"\xff\xd8\xff"})
    source = make_source()
    await source.open()

    with capture_logs() as logs:
        batch = await source.claim(10)

    assert batch is not None
    (record,) = batch.records
    assert record.key == "7"
    assert record.data["wrapped"] is True
    assert (record.data["reason"], record.data["encoding"]) == ("invalid_utf8", "base64")
    resp = b"*4\r\n$2\r\nid\r\n$1\r\n7\r\n$5\r\nphoto\r\n$3\r\n\xff\xd8\xff\r\n"
    assert base64.b64decode(record.data["raw"]) == resp
    (warning,) = [entry for entry in logs if entry["event"] == "payload_wrapped"]
    assert warning["log_level"] == "warning"
    assert warning["id"] == record.meta["id"]


async def test_limit_is_shared_fairly_between_streams(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await add(redis_client, f"{redis_prefix}events", *range(50))
    await add(redis_client, f"{redis_prefix}audit", *range(100, 103))
    streams = {"events": f"{redis_prefix}events", "audit": f"{redis_prefix}audit"}
    source = make_source(streams=streams)
    await source.open()

    batch = await source.claim(10)

    assert batch is not None
    names = [record.stream for record in batch.records]
    assert names.count("audit") == 3
    assert names.count("events") == 7
    assert ids(batch)[:7] == list(range(7))


async def test_restarted_consumer_with_same_name_takes_back_its_entries(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await add(redis_client, f"{redis_prefix}events", 1, 2, 3)
    first_life = make_source(consumer="fixed", claim_idle="60s")
    await first_life.open()
    assert ids(await first_life.claim(2)) == [1, 2]
    await crash(first_life)

    second_life = make_source(consumer="fixed", claim_idle="60s")
    await second_life.open()

    assert ids(await second_life.claim(10)) == [1, 2, 3]


async def test_wait_wakes_on_a_new_entry_without_consuming_it(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    source = make_source(block="5s")
    await source.open()
    waiting = asyncio.create_task(source.wait(60))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    await add(redis_client, key, 1)
    await asyncio.wait_for(waiting, timeout=10)

    assert await pending_count(redis_client, key) == 0
    assert await source.backlog() == 1
    assert ids(await source.claim(10)) == [1]


async def test_cancelled_wait_leaves_nothing_delivered(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    source = make_source(block="5s")
    await source.open()
    waiting = asyncio.create_task(source.wait(60))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    await add(redis_client, f"{redis_prefix}events", 1)
    assert ids(await source.claim(10)) == [1]


async def test_close_removes_consumer_without_pending_entries(
    make_source: Factory, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}events"
    await add(redis_client, key, 1, 2)
    done = make_source(consumer="done")
    holding = make_source(consumer="holding")
    for source in (done, holding):
        await source.open()
    batch = await done.claim(1)
    assert batch is not None
    await done.ack(batch)
    await holding.claim(1)

    await done.close()
    await holding.close()

    consumers = await redis_client.xinfo_consumers(key, GROUP)
    assert [c["name"] for c in consumers] == [b"holding"]


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="block"):
        RedisStreamSource(
            {"streams": {"s": "k"}, "block": "30s", "socket_timeout": "10s"}, name="x"
        )
    with pytest.raises(ValidationError, match="max_deliveries"):
        RedisStreamSource({"streams": {"s": "k"}, "max_deliveries": 0}, name="x")
    with pytest.raises(ValidationError, match="streams is empty"):
        RedisStreamSource({"streams": {}}, name="x")
