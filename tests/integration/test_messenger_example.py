"""examples/messenger_worker runs as its README says, on the real Redis: jobs enqueued from
the CLI run on their queues, a payload that breaks the seed's job shape is refused at
enqueue, cron lists the seed's schedule and the API answers /health."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from tests.waiting import NotYet, wait_for

EXAMPLE = Path(__file__).parents[2] / "examples" / "messenger_worker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Example:
    """A copy of the example in ``tmp_path`` with its variables, run as its README says."""

    def __init__(self, tmp_path: Path, redis_prefix: str, **variables: str) -> None:
        self.work = tmp_path / "messenger_worker"
        shutil.copytree(EXAMPLE, self.work)
        self.port = free_port()
        self.env = {
            **os.environ,
            "JOBS_PREFIX": f"{redis_prefix}messenger",
            "PORT": str(self.port),
            "SYNCWORKER_STATE_DIR": str(tmp_path),
            **variables,
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "syncworker.cli", *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def counts(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = orjson.loads(self.cli("jobs", "counts", "--json").stdout)
        return found

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "syncworker.cli", "run", "syncworker.yaml"],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def test_the_messenger_example_runs_its_jobs(tmp_path: Path, redis_prefix: str) -> None:
    example = Example(tmp_path, redis_prefix)
    cli, port = example.cli, example.port

    image = orjson.dumps({"type": "image", "s3Key": "u1/a.jpg", "userId": "u1", "messageId": "m1"})
    push = orjson.dumps({"type": "push", "userId": "u1", "title": "hi", "body": "there"})
    image_id = cli("jobs", "enqueue", "process_image", "--json", image.decode()).stdout.strip()
    push_id = cli("jobs", "enqueue", "send_push", "--json", push.decode()).stdout.strip()
    refused = cli("jobs", "enqueue", "process_video", "--json", '{"type": "video"}', check=False)
    assert refused.returncode == 2
    assert "s3Key: Field required" in refused.stderr

    cron = orjson.loads(cli("jobs", "cron", "list", "--json").stdout)
    assert len(cron) == 10
    assert {entry["name"]: entry["schedule"] for entry in cron}["orphaned_media"] == "0 5 * * 0"

    engine = example.start()
    try:

        def finished() -> bool:
            states = [
                orjson.loads(cli("jobs", "show", job_id).stdout)["state"]
                for job_id in (image_id, push_id)
            ]
            return states == ["completed", "completed"]

        wait_for(finished, "both jobs completed", timeout_s=60, interval_s=0.2)
        health = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5),
            "the API serving /health",
            ignore=(httpx.HTTPError,),
        )
        assert health.status_code == 200
    finally:
        engine.send_signal(signal.SIGTERM)
        output, _ = engine.communicate(timeout=60)
    assert engine.returncode == 0, output
    shown = orjson.loads(cli("jobs", "show", image_id).stdout)
    assert shown["queue"] == "media"
    assert shown["priority"] == 2
    assert shown["result"]["kind"] == "image"


AMQP_URL = os.environ.get("SYNCWORKER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


async def _publish(exchange_name: str, messages: list[tuple[str, bytes, str]]) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)  # the bridge declared it
        for routing_key, body, message_id in messages:
            await exchange.publish(
                aio_pika.Message(body, message_id=message_id, content_type="application/json"),
                routing_key=routing_key,
            )


async def _dead_bodies(queue_name: str) -> list[bytes]:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
        return bodies


async def _drop_topology(prefix: str, exchange_name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for kind in ("media", "notification", "cleanup"):
            await channel.queue_delete(f"{prefix}.{kind}")
            await channel.queue_delete(f"{prefix}.{kind}.dead")
        await channel.exchange_delete(exchange_name)
        await channel.exchange_delete(f"{exchange_name}.dlx")


def test_the_rabbitmq_bridge_turns_the_seeds_topics_into_jobs(
    tmp_path: Path, redis_prefix: str
) -> None:
    import asyncio
    import uuid

    tag = uuid.uuid4().hex[:10]
    exchange_name, queue_prefix = f"swtest_{tag}", f"swtest_{tag}"
    example = Example(
        tmp_path,
        redis_prefix,
        RABBITMQ_URL=AMQP_URL,
        RABBITMQ_EXCHANGE=exchange_name,
        RABBITMQ_QUEUE_PREFIX=queue_prefix,
    )

    def bridged() -> list[tuple[str, str, str]]:
        """The completed jobs the bridge made: the cron schedule (health every 5 min) may
        add its own while the test runs, and those are told apart by their unique key."""
        found = orjson.loads(example.cli("jobs", "list", "--state", "completed", "--json").stdout)
        return sorted(
            (job["queue"], job["task"], job["payload"]["type"])
            for job in found
            if not (job["unique_key"] or "").startswith("cron:")
        )

    engine = example.start()
    try:
        image = {"type": "image", "s3Key": "a.jpg", "userId": "u1", "messageId": "m1"}
        push = {"type": "push", "userId": "u1", "title": "hi", "body": "there"}
        messages = [
            ("media.image", orjson.dumps(image), "msg-1"),
            ("notification.push", orjson.dumps(push), "msg-2"),
            ("cleanup.sessions", orjson.dumps({"type": "sessions"}), "msg-3"),
            ("media.image", orjson.dumps(image), "msg-1"),  # a redelivery: no second job
            ("media.video", b"\xff not json", "msg-4"),
        ]
        # The bridge declares its queues when it starts: publish once they exist.
        wait_for(
            lambda: _queues_exist(queue_prefix),
            "the bridge's queues declared",
            timeout_s=60,
            interval_s=0.2,
        )
        asyncio.run(_publish(exchange_name, messages))

        expected = [
            ("cleanup", "cleanup", "sessions"),
            ("media", "process_image", "image"),
            ("notification", "send_push", "push"),
        ]
        last: list[list[tuple[str, str, str]]] = []

        def finished() -> bool:
            last[:] = [bridged()]
            return last[0] == expected

        try:
            wait_for(finished, "three jobs completed, one per queue", timeout_s=90, interval_s=0.3)
        except NotYet as exc:
            raise AssertionError(f"{exc}; completed by then: {last}") from exc
        dead = wait_for(
            lambda: asyncio.run(_dead_bodies(f"{queue_prefix}.media.dead")),
            "the non-JSON message dead-lettered",
            timeout_s=30,
            interval_s=0.3,
        )
        assert dead == [b"\xff not json"]
    finally:
        engine.send_signal(signal.SIGTERM)
        output, _ = engine.communicate(timeout=60)
        print(output)  # shown by pytest when the test fails
        asyncio.run(_drop_topology(queue_prefix, exchange_name))
    assert engine.returncode == 0, output
    assert bridged() == expected  # the redelivered msg-1 made no second job
    counts = example.counts()
    assert {queue: c["dead"] + c["queued"] + c["active"] for queue, c in counts.items()} == {
        "cleanup": 0,
        "media": 0,
        "notification": 0,
    }


def _queues_exist(prefix: str) -> bool:
    import asyncio

    import aio_pika

    async def check() -> bool:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            try:
                for kind in ("media", "notification", "cleanup"):
                    await channel.declare_queue(f"{prefix}.{kind}", passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True

    return asyncio.run(check())
