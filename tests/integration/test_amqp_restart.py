"""Issue 12's acceptance: RabbitMQ restarted while 10,000 messages are published, and every
one becomes a job, none twice.

A pipeline ``amqp`` source -> ``jobs`` sink (PostgreSQL backend) streams from a private
RabbitMQ node (``tests/conformance/amqp.py``: its own ports and data directory; the shared
broker is never restarted). A publisher sends 10,000 persistent messages, each with its
``message_id``, under publisher confirms, and publishes again whatever was not confirmed
(a message the broker stored but whose confirm was lost in the restart is then in the queue
twice). The node is restarted (``stop_app``, ``start_app``) once 3,000 are confirmed. The
source reconnects by itself and resumes consuming; batches whose acks died with the old
channel come again; the sink's unique key (the message id) absorbs every repeat. Checked from
the job rows afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import orjson
import pytest

from syncworker.connectors.amqp.source import AmqpSource
from syncworker.connectors.jobs.sink import JobsSink, record_key_of
from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.protocols import WriteResult
from syncworker.core.record import Record
from syncworker.queue.config import build_backend
from tests.conformance.amqp import Namespace, PrivateRabbit, ready_count
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MESSAGES = 10_000
RESTART_AFTER = 3_000
CHUNK = 250
TOPICS = {  # the seed's three queues, by routing key
    "media.image": ("media", "media"),
    "notification.push": ("notification", "notification"),
    "cleanup.stories": ("cleanup", "cleanup"),
}
ROUTING_KEYS = list(TOPICS)


@pytest.fixture
async def rabbit() -> AsyncIterator[PrivateRabbit]:
    node = PrivateRabbit()
    try:
        await node.start()
        yield node
    finally:
        await node.destroy()


class CountingSink(JobsSink):
    """The jobs sink, counting the records it was given (deliveries, repeats included)."""

    written = 0

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        result = await super().write(records)
        self.written += len(records)
        return result


class Publisher:
    """Publishes every message until the broker confirmed it, reconnecting as needed."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange
        self.confirmed: set[int] = set()
        self.pending: list[int] = []
        self.sends = 0
        self.reconnects = 0

    async def publish_all(self, count: int) -> None:
        self.pending = list(range(count))
        while self.pending:
            try:
                connection = await aio_pika.connect(self.url, timeout=5)
            except Exception:
                self.reconnects += 1
                await asyncio.sleep(0.1)  # the publisher's own retry pause: the broker is down
                continue
            try:
                async with connection:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await channel.get_exchange(self.exchange, ensure=True)
                    while self.pending:
                        await self._chunk(exchange)
            except Exception:
                self.reconnects += 1

    async def _chunk(self, exchange: aio_pika.abc.AbstractExchange) -> None:
        """Publish the next ``CHUNK`` pending messages; raise when some were not confirmed
        (the connection is gone: they are sent again on the next one)."""
        head = self.pending[:CHUNK]
        self.sends += len(head)
        results = await asyncio.gather(*(self._publish(exchange, n) for n in head))
        done = {n for n, error in zip(head, results, strict=True) if error is None}
        self.confirmed |= done
        self.pending = [n for n in self.pending if n not in done]
        if len(done) < len(head):
            raise ConnectionError(f"{len(head) - len(done)} messages not confirmed")

    async def _publish(self, exchange: aio_pika.abc.AbstractExchange, n: int) -> Any:
        try:
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps({"n": n, "id": f"msg-{n}"}),
                    message_id=f"msg-{n}",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=ROUTING_KEYS[n % len(ROUTING_KEYS)],
                timeout=10,
            )
        except Exception as exc:
            return exc
        return None


async def test_a_broker_restart_while_publishing_loses_no_message_and_doubles_none(
    rabbit: PrivateRabbit, pg_url: str
) -> None:
    started = time.monotonic()
    ns = Namespace(rabbit.url)
    source = AmqpSource(
        {
            "type": "amqp",
            "url": rabbit.url,
            "exchange": ns.exchange,
            "bindings": [
                {"routing_key": key, "queue": ns.queue(queue)} for key, (queue, _) in TOPICS.items()
            ],
            "connect_timeout": "2s",
            "prefetch": 1000,
        },
        name="bridge",
    )
    sink = CountingSink(
        {
            "type": "jobs",
            "backend": {"type": "postgres", "url": pg_url, "schema": "sw_h4_bridge"},
            "routes": [
                {"match": key, "task": task, "queue": queue}
                for key, (queue, task) in TOPICS.items()
            ],
            "retries": 2,
        },
        name="jobs",
    )
    settings = PipelineSettings(
        batch_size=200,
        max_wait_s=0.05,
        max_in_flight=2,
        retry=RetryPolicy(attempts=3, delay_s=0.05, jitter=0),
        breaker=BreakerPolicy(delay_s=0.1, max_delay_s=0.5),
        shutdown_timeout_s=20,
    )
    await source.open()  # the topology, so that nothing published is dropped unrouted
    await source.close()
    bridge = Pipeline("rabbit-bridge", source, [sink], settings=settings)
    await bridge.start()
    publisher = Publisher(rabbit.url, ns.exchange)

    async def restart_midway() -> None:
        await eventually(
            lambda: len(publisher.confirmed) >= RESTART_AFTER,
            f"{RESTART_AFTER} messages confirmed",
            timeout_s=60,
        )
        await rabbit.stop()
        await rabbit.start()

    try:
        await asyncio.gather(publisher.publish_all(MESSAGES), restart_midway())
        assert len(publisher.confirmed) == MESSAGES

        async def all_consumed() -> bool:
            ready = [await ready_count(rabbit.url, ns.queue(q)) for q, _ in TOPICS.values()]
            status = source.status()
            held = sum(sum(states.values()) for states in (await sink.backend.counts()).values())
            return sum(ready) == 0 and status["buffered"] == 0 and held >= MESSAGES

        await eventually(all_consumed, "every message consumed into jobs", timeout_s=60)
    finally:
        await bridge.stop()
    jobs = await _all_jobs(sink)
    ids = [record_key_of(job.unique_key or "") for job in jobs]
    assert len(jobs) == MESSAGES, f"{len(jobs) - len(set(ids))} messages became two jobs"
    assert sorted(ids) == sorted(f"msg-{n}" for n in range(MESSAGES)), "messages were lost"
    for job in jobs:
        n = job.payload["n"]
        queue, task = TOPICS[ROUTING_KEYS[n % len(ROUTING_KEYS)]]
        assert (job.queue, job.task, job.payload["id"]) == (queue, task, f"msg-{n}")
    for queue, _ in TOPICS.values():  # everything acked: nothing left for the next consumer
        assert await ready_count(rabbit.url, ns.queue(queue)) == 0
    print(
        f"\n{MESSAGES} messages, {publisher.sends} sends ({publisher.reconnects} publisher "
        f"reconnects), {sink.written} deliveries to the sink "
        f"({sink.written - MESSAGES} repeats absorbed), source connects "
        f"{source.status()['connects']}, {time.monotonic() - started:.1f} s"
    )


async def _all_jobs(sink: JobsSink) -> list[Any]:
    backend = build_backend(sink.config.backend, where="test")  # the pipeline closed its own
    await backend.open()
    try:
        return await backend.list_jobs(limit=MESSAGES * 2)
    finally:
        await backend.close()
