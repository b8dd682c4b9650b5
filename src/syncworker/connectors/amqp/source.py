"""``amqp``: a source that consumes RabbitMQ queues bound to a topic exchange, manual ack.

Topology, declared at every connect (``declare: true``, idempotent): the ``exchange`` (topic,
durable; the seed's ``sup_exchange``); per configured queue a durable queue bound to it by
each of its routing keys, with ``x-dead-letter-exchange`` = ``dead_letter_exchange``
(default ``<exchange>.dlx``, direct, durable) and ``x-dead-letter-routing-key`` = the queue's
name; and ``<queue>.dead``, bound to the dead-letter exchange by that name, where dead
messages wait for an operator.

Delivery: one channel consumes every queue with ``basic.qos(prefetch, global)``, so at most
``prefetch`` messages are unacknowledged at once, buffered or in the pipeline's batches:
memory is bounded by ``prefetch`` messages, never by the backlog. The default, 500, keeps
the pipeline's default two batches of 100 in flight with the next three batches already
here, so claims never wait for the network; a pipeline with a larger ``batch.size *
max_in_flight`` needs a larger prefetch (claims otherwise come back short). A claim that
finds nothing buffered first lets the deliveries already on their way land (two round trips
on the channel), so "nothing available" means none was sent: a one-off run drains the queue.

Settling: ``ack`` sends ``basic.ack`` per delivery tag (only after every sink wrote the batch:
the runtime calls it then). ``nack`` requeues the batch and what is buffered behind it, with
the consumer paused, so RabbitMQ hands them out again in queue order. Refused records
(``ack_except``, with the pipeline's ``dead_letter: {store: source}``) are published to the
dead-letter exchange with their reason in the ``x-death-reason`` header, under publisher
confirms, then acked; a publish that fails falls back to ``basic.reject(requeue=false)``,
which dead-letters natively (RabbitMQ's ``x-death`` header, reason ``rejected``). With the
default ``store: state`` they go to the state store's dead letters instead and are acked.

Reconnecting: a lost connection (a broker restart, a network split seen by the heartbeat) is
logged (``amqp_connection_lost``) and its buffered messages are dropped: RabbitMQ requeues
every unacknowledged delivery of a dead channel. The next claim connects again (one attempt;
a failure raises ``ConnectionFailed`` and the runtime backs off) and resumes consuming. A
batch claimed on the old channel can no longer be acked (its delivery tags belong to that
channel; the same numbers on the new channel are other messages): its ack or nack is dropped
(``amqp_settle_dropped``) and the messages come again, which sinks idempotent by key absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pamqp.common import FieldTable
from pydantic import BaseModel, Field, field_validator, model_validator

from syncworker.connectors.amqp.client import (
    AmqpConnectionConfig,
    connect,
    describe,
    reason_of,
    translate_error,
)
from syncworker.core.record import (
    Batch,
    Decoded,
    Record,
    decode,
    decoded_key,
    key_from_bytes,
    key_text,
    log_wrapped,
)
from syncworker.errors import ConnectionClosed

log = structlog.get_logger(__name__)

REASON_HEADER = "x-death-reason"
"""The header carrying why a message was dead-lettered by this source."""

ON_THE_WAY_S = 1.0
"""How long a claim with nothing buffered waits for messages the broker still counts as ready
while the prefetch has room (they are being delivered): the first one ends the wait."""


class Binding(BaseModel):
    """One routing key consumed into one queue."""

    model_config = {"extra": "forbid", "frozen": True}

    routing_key: str = Field(
        description="Topic pattern bound to the exchange, e.g. 'media.*' or 'notification.#'."
    )
    queue: str = Field(description="Durable queue the messages of that key wait in.")

    @field_validator("queue")
    @classmethod
    def _queue_named(cls, value: str) -> str:
        if not value or value.startswith("amq."):
            raise ValueError("queue must be a non-empty name not starting with 'amq.'")
        return value


def _exchange_from_environment() -> str:
    return os.environ.get("RABBITMQ_EXCHANGE") or "sup_exchange"


class AmqpSourceConfig(AmqpConnectionConfig):
    """Settings of the ``amqp`` source."""

    type: Literal["amqp"] = Field(
        "amqp", description="Connector type: RabbitMQ queues (AMQP 0-9-1) as a source."
    )
    exchange: str = Field(
        default_factory=_exchange_from_environment,
        description="Exchange the producers publish to (default: RABBITMQ_EXCHANGE, else the "
        "seed's 'sup_exchange').",
    )
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = Field(
        "topic", description="Type of the exchange when this source declares it."
    )
    bindings: list[Binding] = Field(
        description="[{routing_key, queue}, ...]: which topics are consumed into which queues "
        "(a queue may take several routing keys).",
        min_length=1,
    )
    prefetch: int = Field(
        500,
        ge=1,
        le=65535,
        description="Most messages unacknowledged at once, buffered or in batches (basic.qos "
        "for the channel): bounds memory; keep it above batch.size * max_in_flight.",
    )
    dead_letter_exchange: str | None = Field(
        None,
        description="Exchange for dead messages (default '<exchange>.dlx'); each queue's dead "
        "messages wait in '<queue>.dead'.",
    )
    key_field: str | None = Field(
        None,
        description="Field of the JSON body used as the record key; when absent (or not "
        "set) the message_id property, else a hash of the body.",
    )
    stream: Literal["routing_key", "queue"] = Field(
        "routing_key", description="What Record.stream is: the message's routing key or queue."
    )
    declare: bool = Field(
        True,
        description="Declare the exchanges, queues and bindings (idempotent); false: they "
        "must exist (passive checks only).",
    )

    @field_validator("exchange")
    @classmethod
    def _exchange_named(cls, value: str) -> str:
        if not value:
            raise ValueError("exchange is empty; the default exchange cannot be bound")
        return value

    @model_validator(mode="after")
    def _queues_distinct_from_dead(self) -> AmqpSourceConfig:
        queues = {b.queue for b in self.bindings}
        clash = sorted(q for q in queues if f"{q}.dead" in queues)
        if clash:
            raise ValueError(f"queue {clash[0]!r}.dead is that queue's dead-letter queue")
        return self

    @property
    def dlx(self) -> str:
        return self.dead_letter_exchange or f"{self.exchange}.dlx"

    def queues(self) -> dict[str, list[str]]:
        """Queue name -> its routing keys, in config order."""
        grouped: dict[str, list[str]] = {}
        for binding in self.bindings:
            grouped.setdefault(binding.queue, []).append(binding.routing_key)
        return grouped


@dataclass(frozen=True, slots=True)
class _Deliveries:
    """A batch's token: the channel its messages came on, and each (queue, message)."""

    channel: aiormq.abc.AbstractChannel
    entries: tuple[tuple[str, AbstractIncomingMessage], ...]


class AmqpSource:
    """Consumes the configured queues (see the module docstring for topology and settling).

    Records: ``key`` is ``data[key_field]``, else the ``message_id`` property, else a hash of
    the body; ``data`` is the JSON object body with exact numbers, or the wrapper
    (``core.record.wrap``) for any other body (never dropped); ``stream`` is the routing key
    (or the queue, ``stream: queue``); ``meta`` has ``queue``, ``routing_key``,
    ``exchange``, ``delivery_tag``, ``redelivered``, ``message_id`` and ``received_at``.
    """

    config_model: ClassVar[type[AmqpSourceConfig]] = AmqpSourceConfig

    def __init__(self, config: AmqpSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, AmqpSourceConfig):
            config = AmqpSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self._label = f"amqp {describe(config)}"
        self._wanted = False  # open() called and close() not yet: reconnect when lost
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._queues: dict[str, AbstractQueue] = {}
        self._consumers: dict[str, str] = {}
        self._buffer: deque[tuple[str, AbstractIncomingMessage]] = deque()
        self._arrived = asyncio.Event()
        self._rewind = asyncio.Lock()
        self._held = 0  # deliveries of the open channel claimed and not yet settled
        self._connects = 0
        self._last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, declare the topology and start consuming. Idempotent.

        Raises ``ConnectionFailed`` when the broker is unreachable, ``ConfigRefused`` when it
        refuses the account, the vhost or a declaration (a queue with other arguments).
        """
        self._wanted = True
        if self._connection is None:
            await self._connect()

    async def close(self) -> None:
        """Disconnect. RabbitMQ requeues every unacknowledged delivery. Never raises."""
        self._wanted = False
        await self._drop_connection()

    # -- claiming ---------------------------------------------------------------------------

    async def claim(self, limit: int) -> Batch | None:
        """Up to ``limit`` delivered messages, in arrival order; ``None`` when none is here
        (nothing buffered, and none still on its way: ``_catch_up``).

        After a lost connection, connects again first. Raises ``ConnectionFailed`` /
        ``ConnectionClosed`` when the broker is unreachable, ``ConfigRefused`` when it
        refuses us, ``ConnectionClosed`` when the source is not open.
        """
        if not self._wanted:
            raise ConnectionClosed(f"{self._label}: source {self.name!r} is not open")
        if self._connection is None:
            await self._connect()
            log.info("amqp_reconnected", source=self.name, broker=self._label)
        if limit <= 0 or self._raw is None:
            return None
        if not self._buffer:
            await self._catch_up()
        if not self._buffer or self._raw is None:
            return None
        taken = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
        self._held += len(taken)
        received_at = datetime.now(UTC).isoformat()
        records = [self._record(queue, message, received_at) for queue, message in taken]
        return Batch(records, token=_Deliveries(self._raw, tuple(taken)))

    async def _catch_up(self) -> None:
        """Let the deliveries already on their way land before a claim says none is here.

        RabbitMQ pushes: right after a connect, or behind a large message, messages the
        broker gave this consumer are still on the wire, and "available now" means those
        too (else a one-off run ends at its first claim, the queue still full). A passive
        declare per queue on the consuming channel tells how many are still ready; a second
        round trip (``basic.qos``, unchanged) then comes back after every delivery the
        queues sent before answering. When some are still ready and the prefetch has room,
        they are coming: wait (bounded) for the first. Raises ``ConnectorError``.
        """
        channel, raw = self._channel, self._raw
        if channel is None:
            return
        try:
            ready = 0
            for queue in self._queues.values():
                declared = await channel.declare_queue(queue.name, passive=True)
                ready += declared.declaration_result.message_count or 0
            await channel.set_qos(prefetch_count=self.config.prefetch, global_=True)
        except Exception as exc:
            raise translate_error(exc, self._label, "claim") from None
        for _ in range(3):  # each delivery lands through two tasks (aiormq, then aio-pika)
            if self._buffer:
                return
            await asyncio.sleep(0)
        room = self.config.prefetch - self._held - len(self._buffer)
        if ready and room > 0 and self._raw is raw and not self._buffer:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), ON_THE_WAY_S)

    def _record(self, queue: str, message: AbstractIncomingMessage, received_at: str) -> Record:
        raw = message.body
        decoded = decode(raw, received_at)
        routing_key = message.routing_key or ""
        meta = {
            "queue": queue,
            "routing_key": routing_key,
            "exchange": message.exchange,
            "delivery_tag": message.delivery_tag,
            "redelivered": bool(message.redelivered),
            "message_id": message.message_id,
            "received_at": received_at,
        }
        stream = routing_key if self.config.stream == "routing_key" and routing_key else queue
        record = Record(
            self._key(decoded, raw, message.message_id), decoded.data, stream, meta=meta
        )
        if decoded.reason is not None:
            log_wrapped(decoded, record, self.name, queue=queue)
        return record

    def _key(self, decoded: Decoded, raw: bytes, message_id: str | None) -> str:
        key_field = self.config.key_field
        if key_field is not None:
            if decoded.reason is None:
                key = key_text(decoded.data.get(key_field))
                if key is not None:
                    return key
            elif decoded.reason == "invalid_utf8":
                key = decoded_key(decoded, raw, key_field)
                if key != key_from_bytes(raw):
                    return key
        return message_id or key_from_bytes(raw)

    async def wait(self, timeout_s: float) -> None:
        """Return when a message is buffered or the connection was lost (so the next claim
        reconnects), else after ``timeout_s``. Never raises."""
        if timeout_s <= 0 or self._buffer or self._connection is None:
            return
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout_s)

    async def backlog(self) -> int:
        """Messages ready in the queues (a passive declare each) plus those buffered here;
        deliveries in claimed batches are not counted. Raises ``ConnectorError``."""
        channel = self._require_channel()
        ready = 0
        try:
            for queue in self._queues:
                declared = await channel.declare_queue(queue, passive=True)
                ready += declared.declaration_result.message_count or 0
        except Exception as exc:
            raise translate_error(exc, self._label, "backlog") from None
        return ready + len(self._buffer)

    def status(self) -> dict[str, Any]:
        """Connection state for the pipeline's status (no I/O)."""
        return {
            "connected": self._connection is not None,
            "connects": self._connects,
            "buffered": len(self._buffer),
            "queues": sorted(self.config.queues()),
            "last_error": self._last_error,
        }

    # -- settling ---------------------------------------------------------------------------

    async def ack(self, batch: Batch) -> None:
        """``basic.ack`` each delivery of ``batch`` (every sink wrote it). A batch of a
        channel that died is dropped: RabbitMQ delivers it again. Raises ``ConnectorError``."""
        deliveries = self._live(batch, "ack")
        if deliveries is None:
            return
        self._held -= len(deliveries.entries)
        try:
            await _settle_all(deliveries, "ack")
        except Exception as exc:
            raise translate_error(exc, self._label, "ack") from None

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Requeue ``batch`` so it is delivered again in queue order.

        The consumers pause while the batch and the messages buffered behind it go back
        (each to its place in its queue), then consume again. Raises ``ConnectorError``;
        the messages then come back with the channel's end (RabbitMQ requeues them).
        """
        deliveries = self._live(batch, "nack")
        if deliveries is None:
            return
        self._held -= len(deliveries.entries)
        async with self._rewind:
            try:
                await self._cancel_consumers()
                behind = list(self._buffer)
                self._buffer.clear()
                back = _Deliveries(deliveries.channel, (*deliveries.entries, *behind))
                await _settle_all(back, "nack")
                await self._consume()
            except Exception as exc:
                raise translate_error(exc, self._label, "nack") from None

    async def ack_except(self, batch: Batch, failures: dict[int, str]) -> None:
        """Dead-letter the records at ``failures`` (index -> reason) and ack the rest.

        Each failed message is published to the dead-letter exchange (routing key: its
        queue) with the reason in ``x-death-reason`` and where it came from in
        ``x-original-*`` headers, confirmed by the broker, then acked; when the publish
        fails it is rejected without requeue (RabbitMQ dead-letters it, reason "rejected").
        Raises ``ConnectorError`` when the broker fails.
        """
        deliveries = self._live(batch, "ack")
        if deliveries is None:
            return
        self._held -= len(deliveries.entries)
        channel = self._require_channel()
        try:
            for index, (queue, message) in enumerate(deliveries.entries):
                reason = failures.get(index)
                if reason is None:
                    await deliveries.channel.basic_ack(message.delivery_tag or 0)
                else:
                    await self._dead_letter(channel, deliveries.channel, queue, message, reason)
        except Exception as exc:
            raise translate_error(exc, self._label, "dead-letter") from None

    async def _dead_letter(
        self,
        channel: AbstractChannel,
        raw: aiormq.abc.AbstractChannel,
        queue: str,
        message: AbstractIncomingMessage,
        reason: str,
    ) -> None:
        headers = dict(message.headers or {})
        headers.update(
            {
                REASON_HEADER: reason[:4000],
                "x-original-exchange": message.exchange or "",
                "x-original-routing-key": message.routing_key or "",
                "x-original-queue": queue,
                "x-dead-lettered-by": self.name,
            }
        )
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        exchange = await channel.get_exchange(self.config.dlx, ensure=False)
        try:
            await exchange.publish(copy, routing_key=queue, mandatory=True)
        except (aiormq.exceptions.DeliveryError, aiormq.exceptions.PublishError) as exc:
            log.error(
                "amqp_dead_letter_publish_failed",
                source=self.name,
                queue=queue,
                message_id=message.message_id,
                error=reason_of(exc),
                action="rejected without requeue: RabbitMQ dead-letters it (reason 'rejected')",
            )
            await raw.basic_reject(message.delivery_tag or 0, requeue=False)
            return
        await raw.basic_ack(message.delivery_tag or 0)
        log.warning(
            "amqp_dead_lettered",
            source=self.name,
            queue=queue,
            dead_letter_exchange=self.config.dlx,
            message_id=message.message_id,
            reason=reason,
        )

    def _live(self, batch: Batch, what: str) -> _Deliveries | None:
        """The batch's deliveries when their channel is still the open one, else None (the
        settle is dropped and logged: RabbitMQ redelivers what that channel held)."""
        deliveries = batch.token
        if not isinstance(deliveries, _Deliveries) or not deliveries.entries:
            return None
        if deliveries.channel is self._raw and not deliveries.channel.is_closed:
            return deliveries
        log.warning(
            "amqp_settle_dropped",
            source=self.name,
            settle=what,
            messages=len(deliveries.entries),
            reason="the channel these messages came on is closed; RabbitMQ delivers them again",
        )
        return None

    # -- connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        started = time.monotonic()
        try:
            connection = await connect(self.config, self._label, self.name)
        except Exception as exc:
            self._failed("connect", exc)
            raise
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self.config.prefetch, global_=True)
            queues = await self._declare(channel)
        except Exception as exc:
            await _close_quietly(connection)
            error = translate_error(exc, self._label, "declare", opening=True)
            self._failed("declare", error)
            raise error from None
        self._connection, self._channel = connection, channel
        self._raw = await channel.get_underlay_channel()
        self._queues = queues
        self._buffer.clear()
        self._held = 0
        connection.close_callbacks.add(self._on_closed)
        channel.close_callbacks.add(self._on_closed)
        try:
            await self._consume()
        except Exception as exc:
            await self._drop_connection()
            error = translate_error(exc, self._label, "consume", opening=True)
            self._failed("consume", error)
            raise error from None
        self._connects += 1
        self._last_error = None
        log.info(
            "amqp_connected",
            source=self.name,
            broker=self._label,
            queues=sorted(queues),
            prefetch=self.config.prefetch,
            connect_ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def _declare(self, channel: AbstractChannel) -> dict[str, AbstractQueue]:
        config = self.config
        passive = not config.declare
        exchange = await channel.declare_exchange(
            config.exchange, config.exchange_type, durable=True, passive=passive
        )
        dlx = await channel.declare_exchange(
            config.dlx, aio_pika.ExchangeType.DIRECT, durable=True, passive=passive
        )
        queues: dict[str, AbstractQueue] = {}
        for name, routing_keys in config.queues().items():
            arguments: FieldTable = {
                "x-dead-letter-exchange": config.dlx,
                "x-dead-letter-routing-key": name,
            }
            queue = await channel.declare_queue(
                name, durable=True, arguments=arguments, passive=passive
            )
            dead = await channel.declare_queue(f"{name}.dead", durable=True, passive=passive)
            if config.declare:
                for routing_key in routing_keys:
                    await queue.bind(exchange, routing_key)
                await dead.bind(dlx, name)
            queues[name] = queue
        return queues

    async def _consume(self) -> None:
        for name, queue in self._queues.items():
            self._consumers[name] = await queue.consume(self._receiver(name))

    async def _cancel_consumers(self) -> None:
        consumers, self._consumers = self._consumers, {}
        for name, tag in consumers.items():
            await self._queues[name].cancel(tag)
        # Deliveries read before the cancel-ok are dispatched as tasks; let them land in the
        # buffer so they are requeued with the rest, in order.
        await asyncio.sleep(0)

    def _receiver(self, queue: str) -> Any:
        raw = self._raw

        async def receive(message: AbstractIncomingMessage) -> None:
            if self._raw is raw:  # a late delivery of a dead channel: RabbitMQ requeued it
                self._buffer.append((queue, message))
                self._arrived.set()

        return receive

    def _on_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        if self._connection is None or sender not in (self._connection, self._channel):
            return  # a connection we already dropped (close, or an earlier loss)
        reason = reason_of(exc)
        log.warning(
            "amqp_connection_lost",
            source=self.name,
            broker=self._label,
            what="channel" if sender is self._channel else "connection",
            reason=reason,
            buffered_dropped=len(self._buffer),
            action="reconnect at the next claim; RabbitMQ redelivers what was not acked",
        )
        self._last_error = reason
        connection = self._connection
        self._forget()
        self._arrived.set()
        if not connection.is_closed:  # only the channel died: close its connection too
            asyncio.get_running_loop().create_task(
                _close_quietly(connection), name=f"amqp:{self.name}:close"
            )

    def _forget(self) -> None:
        self._connection = self._channel = self._raw = None
        self._queues, self._consumers = {}, {}
        self._buffer.clear()
        self._held = 0

    async def _drop_connection(self) -> None:
        connection = self._connection
        self._forget()
        if connection is not None:
            await _close_quietly(connection)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._last_error = reason_of(exc)
        log.warning(
            "amqp_connect_failed",
            source=self.name,
            broker=self._label,
            step=what,
            error=self._last_error,
        )

    def _require_channel(self) -> AbstractChannel:
        if self._channel is None:
            raise ConnectionClosed(f"{self._label}: source {self.name!r} is not connected")
        return self._channel


async def _settle_all(deliveries: _Deliveries, how: Literal["ack", "nack"]) -> None:
    """Ack or requeue every delivery; only the last write waits for the socket to drain
    (these frames have no reply), so a batch costs one flush, not one per message."""
    channel = deliveries.channel
    last = len(deliveries.entries) - 1
    for index, (_, message) in enumerate(deliveries.entries):
        tag = message.delivery_tag or 0
        if how == "ack":
            await channel.basic_ack(tag, wait=index == last)
        else:
            await channel.basic_nack(tag, requeue=True, wait=index == last)


async def _close_quietly(connection: AbstractConnection) -> None:
    try:
        await connection.close()
    except Exception as exc:
        log.debug("amqp_close_failed", error=reason_of(exc))
