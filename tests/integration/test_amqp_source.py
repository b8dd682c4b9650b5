"""The ``amqp`` source against the shared RabbitMQ (names ``swtest_h4_<random>``, deleted after):
record shape, ack only after the sinks, nack in order, dead letters with their reason, the
prefetch bound, a connection cut under a claimed batch, and no password in errors."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from syncworker.connectors.amqp.source import REASON_HEADER, AmqpSource
from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.record import Batch, Record, key_from_bytes
from syncworker.errors import ConfigRefused, ConnectionFailed
from syncworker.testing import MemorySink
from tests.conformance.amqp import (
    RABBITMQCTL,
    SHARED_URL,
    Namespace,
    Publisher,
    get_all,
    ready_count,
)
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def ns() -> AsyncIterator[Namespace]:
    namespace = Namespace()
    yield namespace
    await namespace.cleanup([namespace.queue("media"), namespace.queue("notify")])


def source_for(ns: Namespace, **overrides: Any) -> AmqpSource:
    config = {
        "type": "amqp",
        "url": SHARED_URL,
        "exchange": ns.exchange,
        "bindings": [
            {"routing_key": "media.*", "queue": ns.queue("media")},
            {"routing_key": "notification.#", "queue": ns.queue("notify")},
        ],
        "key_field": "id",
        "connect_timeout": "2s",
        **overrides,
    }
    return AmqpSource(config, name="amqp-test")


async def claim_n(source: AmqpSource, count: int, limit: int = 100) -> list[Batch]:
    batches: list[Batch] = []

    async def more() -> bool:
        held = sum(len(b) for b in batches)
        if held < count:
            batch = await source.claim(min(limit, count - held))
            if batch is not None and batch.records:
                batches.append(batch)
            else:
                await source.wait(0.2)
        return sum(len(b) for b in batches) >= count

    await eventually(more, f"{count} records claimed", timeout_s=20, interval_s=0)
    return batches


def records_of(batches: list[Batch]) -> list[Record]:
    return [r for b in batches for r in b.records]


async def test_records_keys_streams_and_ack(ns: Namespace) -> None:
    source = source_for(ns)
    await source.open()  # declares the topology, so the messages below are routed
    try:
        async with Publisher(SHARED_URL, ns.exchange) as pub:
            await pub.publish("media.image", b'{"id": "img-1", "size": 12345678901234567890}')
            await pub.publish("media.video", b'{"no_id": true}', message_id="msg-7")
            await pub.publish("notification.push.ios", b"not json at all")
            await pub.publish("unbound.key", b'{"id": "lost"}')  # no queue takes it
        batches = await claim_n(source, 3)
        records = sorted(records_of(batches), key=lambda r: r.stream)
        image, video, push = records
        assert (image.key, image.stream) == ("img-1", "media.image")
        assert image.data == {"id": "img-1", "size": 12345678901234567890}  # exact
        assert image.meta["queue"] == ns.queue("media") and image.meta["delivery_tag"] >= 1
        assert (video.key, video.stream) == ("msg-7", "media.video")  # message_id
        assert push.stream == "notification.push.ios"
        # aio-pika's publisher always sets a message_id: that is the key, not a body hash
        assert push.key == push.meta["message_id"] != key_from_bytes(b"not json at all")
        assert push.data["wrapped"] is True and push.data["raw"] == "not json at all"
        # Not acked yet: nothing ready, everything held by this consumer.
        assert await source.backlog() == 0
        for batch in batches:
            await source.ack(batch)
    finally:
        await source.close()
    again = source_for(ns)
    await again.open()
    try:
        assert await again.claim(10) is None
        assert await ready_count(SHARED_URL, ns.queue("media")) == 0
        assert await ready_count(SHARED_URL, ns.queue("notify")) == 0
    finally:
        await again.close()


async def test_unacked_batches_come_back_after_close(ns: Namespace) -> None:
    source = source_for(ns)
    await source.open()
    async with Publisher(SHARED_URL, ns.exchange) as pub:
        for n in range(5):
            await pub.publish("media.image", orjson.dumps({"id": f"m-{n}"}))
    await claim_n(source, 5)
    await source.close()  # no ack: RabbitMQ requeues
    again = source_for(ns)
    await again.open()
    try:
        batches = await claim_n(again, 5)
        assert [r.key for r in records_of(batches)] == [f"m-{n}" for n in range(5)]
        assert all(r.meta["redelivered"] for r in records_of(batches))
    finally:
        await again.close()


async def test_nack_requeues_in_queue_order(ns: Namespace) -> None:
    source = source_for(ns, prefetch=50)
    await source.open()
    try:
        async with Publisher(SHARED_URL, ns.exchange) as pub:
            await pub.publish_many(
                "media.image", [orjson.dumps({"id": f"m-{n}"}) for n in range(20)]
            )
        first = await claim_n(source, 6, limit=3)  # two batches, the rest buffered
        assert [r.key for r in records_of(first)] == [f"m-{n}" for n in range(6)]
        for batch in reversed(first):  # newest first, as the runtime hands batches back
            await source.nack(batch, RuntimeError("a sink is down"))
        again = await claim_n(source, 20, limit=7)
        assert [r.key for r in records_of(again)] == [f"m-{n}" for n in range(20)]
        for batch in again:
            await source.ack(batch)
    finally:
        await source.close()


async def test_refused_records_go_to_the_dead_letter_exchange_with_the_reason(
    ns: Namespace,
) -> None:
    source = source_for(ns)
    sink = MemorySink(name="memory", report_keys={"bad-1"})
    settings = PipelineSettings(
        batch_size=50,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=2, delay_s=0.01, jitter=0),
        breaker=BreakerPolicy(delay_s=0.05, max_delay_s=0.2),
        dead_letter_store="source",
    )
    await source.open()
    async with Publisher(SHARED_URL, ns.exchange) as pub:
        await pub.publish("media.image", b'{"id": "ok-1"}')
        await pub.publish("media.image", b'{"id": "bad-1"}', headers={"trace": "t-9"})
        await pub.publish("media.image", b'{"id": "ok-2"}')
    await source.close()
    run = Pipeline("amqp-dlx", source, [sink], settings=settings)
    try:
        result = await run.run_once()
    finally:
        await run.close()
    assert result.status == "success", result
    assert set(sink.rows) == {"ok-1", "ok-2"}
    dead = await get_all(SHARED_URL, f"{ns.queue('media')}.dead")
    assert len(dead) == 1
    (letter,) = dead
    assert letter.body == b'{"id": "bad-1"}'
    headers = letter.headers or {}
    assert "refused key 'bad-1'" in str(headers[REASON_HEADER])  # the sink's reason
    assert headers["x-original-routing-key"] == "media.image"
    assert headers["x-original-queue"] == ns.queue("media")
    assert headers["trace"] == "t-9"  # the producer's headers are kept
    assert await ready_count(SHARED_URL, ns.queue("media")) == 0  # the rest acked


async def test_prefetch_bounds_what_is_held(ns: Namespace) -> None:
    source = source_for(ns, prefetch=10)
    await source.open()
    try:
        async with Publisher(SHARED_URL, ns.exchange) as pub:
            await pub.publish_many("media.image", [orjson.dumps({"id": n}) for n in range(50)])
        await eventually(lambda: source.status()["buffered"] == 10, "10 messages buffered")
        assert await ready_count(SHARED_URL, ns.queue("media")) == 40
        batch = await source.claim(100)
        assert batch is not None and len(batch) == 10
        await source.ack(batch)
        await eventually(lambda: source.status()["buffered"] == 10, "the next 10 buffered")
        assert await ready_count(SHARED_URL, ns.queue("media")) == 30
    finally:
        await source.close()


def close_connections_named(name: str) -> int:
    """Close the broker's connections of the source called ``name`` (rabbitmqctl), as a
    broker-side failure would: only this test's connections."""
    listing = subprocess.run(
        [RABBITMQCTL, "list_connections", "pid", "client_properties", "-q"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    pids = [
        line.split("\t", 1)[0] for line in listing.splitlines() if f"syncworker {name} " in line
    ]
    for pid in pids:
        subprocess.run(
            [RABBITMQCTL, "close_connection", pid, "test: connection cut"],
            capture_output=True,
            check=True,
            timeout=30,
        )
    return len(pids)


async def test_a_cut_connection_drops_old_acks_and_redelivers(ns: Namespace) -> None:
    # The validated config itself, not a model_dump of it: a dump holds durations as
    # seconds, and validating that again reads them as milliseconds (a 2 ms connect
    # timeout, which is what made this test time out).
    source = AmqpSource(source_for(ns).config, name=f"amqp-cut-{ns.prefix}")
    await source.open()
    try:
        async with Publisher(SHARED_URL, ns.exchange) as pub:
            await pub.publish_many(
                "media.image", [orjson.dumps({"id": f"m-{n}"}) for n in range(10)]
            )
        held = await claim_n(source, 4)
        assert await asyncio.to_thread(close_connections_named, source.name) == 1
        await eventually(lambda: not source.status()["connected"], "the source to see the cut")
        for batch in held:
            await source.ack(batch)  # dropped: those tags belonged to the dead channel
        batches = await claim_n(source, 10)  # reconnects, everything comes again
        keys = [r.key for r in records_of(batches)]
        assert sorted(keys) == sorted(f"m-{n}" for n in range(10))
        assert source.status()["connects"] == 2
        for batch in batches:
            await source.ack(batch)
        assert await ready_count(SHARED_URL, ns.queue("media")) == 0
    finally:
        await source.close()


async def test_errors_carry_no_password(ns: Namespace) -> None:
    secret = "Hx7-secret-word"
    wrong = source_for(ns, url=f"amqp://guest:{secret}@127.0.0.1:5672/")
    with pytest.raises(ConfigRefused) as refused:
        await wrong.open()
    assert secret not in str(refused.value) and secret not in repr(refused.value)
    assert refused.value.__cause__ is None
    closed = source_for(ns, url=f"amqp://guest:{secret}@127.0.0.1:17599/")
    with pytest.raises(ConnectionFailed) as failed:
        await closed.open()
    assert secret not in str(failed.value)
    await wrong.close()
    await closed.close()
