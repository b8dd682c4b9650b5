"""The ``amqp`` source under the conformance cases, and the RabbitMQ helpers its integration
tests share: names of the test's own (``swtest_h4_<random>``), a confirming publisher, clean-up.

The shared broker (127.0.0.1:5672) is never restarted here: the restart and secret cases run
a private RabbitMQ node (``PrivateRabbit``) on ports of its own, with its own data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import pamqp.body
import pamqp.frame
import pamqp.header
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp import commands
from yarl import URL

from tests.conformance.exact import Payload
from tests.conformance.harness import Expected, Service, SourceHarness
from tests.conformance.services import free_port, wait_until
from tests.conformance.sources import byte_expectations

SHARED_URL = os.environ.get("SYNCWORKER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
AMQP_PORTS = range(17600, 17640)
DIST_PORTS = range(17640, 17680)


class Namespace:
    """Exchange and queue names of one test, deleted at the end (and only those)."""

    def __init__(self, url: str = SHARED_URL) -> None:
        self.url = url
        self.prefix = f"swtest_h4_{secrets.token_hex(4)}"
        self.exchange = f"{self.prefix}.ex"

    @property
    def dlx(self) -> str:
        return f"{self.exchange}.dlx"

    def queue(self, name: str = "q") -> str:
        return f"{self.prefix}.{name}"

    async def cleanup(self, queues: Sequence[str]) -> None:
        """Delete the exchanges and ``queues`` (with their ``.dead`` queues)."""
        with contextlib.suppress(Exception):
            connection = await aio_pika.connect(self.url, timeout=10)
            async with connection:
                channel = await connection.channel()
                for queue in queues:
                    for name in (queue, f"{queue}.dead"):
                        with contextlib.suppress(Exception):
                            await channel.queue_delete(name)
                for exchange in (self.exchange, self.dlx):
                    with contextlib.suppress(Exception):
                        await channel.exchange_delete(exchange)


class Publisher:
    """Publishes persistent messages to the test's exchange under publisher confirms."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange_name = exchange
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None

    async def __aenter__(self) -> Publisher:
        self.connection = await aio_pika.connect(self.url, timeout=10)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str = "", **props: Any
    ) -> None:
        """One message; no ``message_id`` sends an empty one (aio-pika would make one up,
        and the record key would then be that, not a hash of the body)."""
        assert self.channel is not None
        exchange = await self.channel.get_exchange(self.exchange_name, ensure=False)
        message = aio_pika.Message(
            body,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **props,
        )
        await exchange.publish(message, routing_key=routing_key)

    async def publish_many(self, routing_key: str, bodies: Sequence[bytes]) -> None:
        """All of ``bodies`` in order, confirmed together (one wait for the lot)."""
        assert self.channel is not None
        exchange = await self.channel.get_exchange(self.exchange_name, ensure=False)
        confirms = [
            exchange.publish(
                aio_pika.Message(
                    body, message_id="", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=routing_key,
            )
            for body in bodies
        ]
        await asyncio.gather(*confirms)


class PlainPublisher:
    """Publishes as a producer that sets no ``message_id`` (Node's amqplib, which the seed's
    services use): aio-pika cannot, since aiormq gives every message without an id a random
    one, and the source would then key the message by that id, not by its body.

    AMQP 0-9-1 spoken directly with pamqp's frames: one connection, one channel in confirm
    mode, persistent messages; ``publish_all`` returns when the broker confirmed every one.
    """

    def __init__(self, url: str, exchange: str) -> None:
        self.url = URL(url)
        self.exchange = exchange
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.frame_max = 131_072
        self.published = 0  # the channel's delivery tags so far

    async def __aenter__(self) -> PlainPublisher:
        url = self.url
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(url.host or "127.0.0.1", url.port or 5672), 10
        )
        self.writer.write(pamqp.frame.marshal(pamqp.header.ProtocolHeader(), 0))
        await self._expect(commands.Connection.Start)
        login = f"\0{url.user or 'guest'}\0{url.password or 'guest'}"
        self._send(0, commands.Connection.StartOk(response=login))
        tune = await self._expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or self.frame_max
        self._send(0, commands.Connection.TuneOk(tune.channel_max, self.frame_max, 0))
        vhost = url.path[1:] if len(url.path) > 1 else "/"
        self._send(0, commands.Connection.Open(virtual_host=vhost))
        await self._expect(commands.Connection.OpenOk)
        self._send(1, commands.Channel.Open())
        await self._expect(commands.Channel.OpenOk)
        self._send(1, commands.Confirm.Select())
        await self._expect(commands.Confirm.SelectOk)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is None:
            return
        with contextlib.suppress(Exception):
            self._send(0, commands.Connection.Close())
            await asyncio.wait_for(self._expect(commands.Connection.CloseOk), 10)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def publish_all(self, routing_key: str, bodies: Sequence[bytes]) -> None:
        """Publish ``bodies`` in order, then wait until the broker confirmed them all."""
        assert self.writer is not None
        chunk = self.frame_max - 8  # a frame's header and end byte
        for body in bodies:
            properties = commands.Basic.Properties(delivery_mode=2)
            self._send(1, commands.Basic.Publish(exchange=self.exchange, routing_key=routing_key))
            self._send(1, pamqp.header.ContentHeader(0, len(body), properties))
            for start in range(0, len(body), chunk):
                self._send(1, pamqp.body.ContentBody(body[start : start + chunk]))
        await self.writer.drain()
        waiting = set(range(self.published + 1, self.published + len(bodies) + 1))
        self.published += len(bodies)
        while waiting:
            frame = await self._expect(commands.Basic.Ack)
            if frame.multiple:
                waiting = {tag for tag in waiting if tag > frame.delivery_tag}
            else:
                waiting.discard(frame.delivery_tag)

    def _send(self, channel: int, frame: Any) -> None:
        assert self.writer is not None
        self.writer.write(pamqp.frame.marshal(frame, channel))

    async def _expect(self, kind: type[Any]) -> Any:
        assert self.reader is not None
        head = await asyncio.wait_for(self.reader.readexactly(7), 30)
        size = int.from_bytes(head[3:7], "big")
        rest = await self.reader.readexactly(size + 1)
        _, _, frame = pamqp.frame.unmarshal(head + rest)
        if not isinstance(frame, kind):
            raise AssertionError(f"expected {kind.__name__} from the broker, got {frame!r}")
        return frame


async def ready_count(url: str, queue: str) -> int:
    """Messages ready (not delivered) in ``queue``."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def get_all(url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message of ``queue`` (acked: gone), in order."""
    taken = []
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


RABBIT_SERVER = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


class PrivateRabbit(Service):
    """A RabbitMQ node of the suite's own (its own node name, ports and data directory), so
    stopping it never touches the shared broker. ``stop`` is ``rabbitmqctl stop_app`` (the
    node closes every connection, durable queues and persistent messages are kept);
    ``start`` is ``start_app``, waiting until the broker answers."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port(AMQP_PORTS)
        self.dist_port = free_port(DIST_PORTS)
        self.node = f"sw_h4_{secrets.token_hex(3)}@localhost"
        self.root = Path(tempfile.mkdtemp(prefix="sw-h4-rabbit-"))
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        user = "swtest" if password else "guest"
        self.url = f"amqp://{user}:{password or 'guest'}@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.root / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
                "RABBITMQ_PID_FILE": str(self.root / "pid"),
            }
        )
        return env

    def ctl(self, *args: str, timeout_s: float = 60) -> str:
        done = subprocess.run(
            [RABBITMQCTL, "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            timeout=timeout_s,
            check=True,
        )
        return done.stdout.decode()

    def _boot(self) -> None:
        (self.root / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:  # the server runs as the rabbitmq user (its wrapper's su)
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, "rabbitmq", "rabbitmq")
        self.process = subprocess.Popen(
            [RABBIT_SERVER],
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._pings, 60, f"the private RabbitMQ node {self.node}")
        self.ctl("await_startup", "--timeout", "60", timeout_s=90)
        if self.password:
            self.ctl("add_user", "swtest", self.password)
            self.ctl("set_permissions", "-p", "/", "swtest", ".*", ".*", ".*")

    def _pings(self) -> bool:
        try:
            self.ctl("ping", timeout_s=10)
        except subprocess.SubprocessError:
            return False
        return True

    async def start(self) -> None:
        if self.process is None:
            await asyncio.to_thread(self._boot)
        else:
            await asyncio.to_thread(self.ctl, "start_app")
            await asyncio.to_thread(self.ctl, "await_startup", "--timeout", "60")

    async def stop(self) -> None:
        await asyncio.to_thread(self.ctl, "stop_app")

    async def destroy(self) -> None:
        def kill() -> None:
            with contextlib.suppress(Exception):
                self.ctl("stop", timeout_s=60)
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            shutil.rmtree(self.root, ignore_errors=True)

        await asyncio.to_thread(kill)


class AmqpHarness(SourceHarness):
    type_name = "amqp"
    restart = "a private RabbitMQ node (rabbitmqctl stop_app, then start_app)"
    credentials = True
    reasons: ClassVar[dict[str, str]] = {
        "deletes": "a queue carries messages, not changes: every record is an upsert",
    }

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.namespace = Namespace()

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or SHARED_URL
        self.namespace.url = self.target
        # Declare the topology now, so messages produced before the source first opens
        # wait in its queue (a topic exchange drops what no queue is bound for).
        source = self.build()
        await source.open()
        await source.close()

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "amqp",
            "url": self.target,
            "exchange": self.namespace.exchange,
            "bindings": [{"routing_key": "in.#", "queue": self.namespace.queue()}],
            "key_field": "id",
            "connect_timeout": "2s",
            **overrides,
        }

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        # Without a message_id, as most producers send: the key is then key_field, else a
        # hash of the body (an id would be the key, whatever the body).
        async with PlainPublisher(self.target, self.namespace.exchange) as publisher:
            await publisher.publish_all("in.conformance", [p.raw for p in payloads])
        return byte_expectations(payloads)

    def private_service(self, password: str | None = None) -> Service:
        return PrivateRabbit(password)

    async def secret_setup(self, secret: str) -> tuple[dict[str, Any], Service | None]:
        service = await self.open_private(password=secret)
        return {"url": service.url}, service

    async def secret_failures(self, secret: str) -> list[BaseException]:
        wrong = self.target.replace(f":{secret}@", f":{secret}-wrong@", 1)
        errors: list[BaseException] = []
        for url in (wrong, "amqp://swtest:" + secret + "@127.0.0.1:17599/"):
            source = self.build(url=url)
            try:
                await source.open()
            except Exception as exc:
                errors.append(exc)
            finally:
                await source.close()
        return errors

    async def teardown(self) -> None:
        """Delete this case's exchanges and queues on the shared broker (a private node is
        destroyed with what it held)."""
        self.namespace.url = SHARED_URL
        await self.namespace.cleanup([self.namespace.queue()])
