"""examples/messenger_worker runs as its README says, with no code of its own: on the real
Redis, PostgreSQL and RabbitMQ, S3 from moto's server, FCM from tests/fakes/fcm.py and SMTP
from aiosmtpd in this process. A job published to RabbitMQ ends as a messages row with its
media in S3, a push delivered, an e-mail received and their notifications rows; a payload
that breaks the seed's job shape is refused at enqueue, cron lists the seed's schedule, the
API answers /health."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from PIL import Image

from tests.fakes.fcm import FcmServer
from tests.fakes.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server, s3_server
from tests.integration.test_notifications_kit import Mailbox, smtp
from tests.waiting import NotYet, eventually

__all__ = ["s3_server", "smtp"]  # the fixtures, used by the tests below

EXAMPLE = Path(__file__).parents[2] / "examples" / "messenger_worker"
AMQP_URL = os.environ.get("SYNCWORKER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def fcm() -> AsyncIterator[FcmServer]:
    async with FcmServer() as server:
        yield server


@dataclass
class Stack:
    """The seed's services for one test: a database with the example's schema.sql, a
    bucket, FCM and SMTP, as the example's variables."""

    db: str
    bucket: str
    s3: S3Server
    fcm: FcmServer
    mailbox: Mailbox
    variables: dict[str, str]

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def objects(self) -> list[str]:
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture
def stack(pg_url: str, s3_server: S3Server, fcm: FcmServer, smtp: tuple[Mailbox, int]) -> Stack:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute((EXAMPLE / "schema.sql").read_text())
    bucket = s3_server.new_bucket()
    push = fcm.push_settings()
    box, smtp_port = smtp
    variables = {
        "DATABASE_URL": pg_url,
        "AWS_S3_BUCKET": bucket,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "FIREBASE_PROJECT_ID": push["project_id"],
        "FIREBASE_CLIENT_EMAIL": push["client_email"],
        "FIREBASE_PRIVATE_KEY": push["private_key"],
        "FIREBASE_TOKEN_URI": push["token_uri"],
        "FCM_BASE_URL": push["base_url"],
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_STARTTLS": "off",
        "SMTP_FROM": "worker@sup.example",
    }
    return Stack(pg_url, bucket, s3_server, fcm, box, variables)


class Example:
    """A copy of the example in ``tmp_path`` with its variables, run as its README says.
    The tests are async (the fake FCM serves from their event loop), so the CLI runs in a
    thread: ``await example.cli(...)``."""

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

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncworker.cli", *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    async def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = await asyncio.to_thread(self._run, *args)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    async def json(self, *args: str) -> Any:
        return orjson.loads((await self.cli(*args, "--json")).stdout)

    async def show(self, job_id: str) -> Any:
        return orjson.loads((await self.cli("jobs", "show", job_id)).stdout)

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "syncworker.cli", "run", "syncworker.yaml"],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def stop(self, engine: subprocess.Popen[str]) -> str:
        engine.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(engine.communicate, timeout=60)
        print(output)  # shown by pytest when the test fails
        return output


def a_message_with_a_photo(stack: Stack, name: str) -> dict[str, str]:
    """A messages row and its original photo in the bucket: the seed's media job for it."""
    user, message = str(uuid.uuid4()), str(uuid.uuid4())
    stack.sql(
        "INSERT INTO messages (id, sender_id, chat_id) VALUES (%s, %s, %s)",
        message,
        user,
        str(uuid.uuid4()),
    )
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 40, 90)).save(buffer, "JPEG")
    key = f"uploads/{user}/{name}"
    stack.s3.client().put_object(Bucket=stack.bucket, Key=key, Body=buffer.getvalue())
    return {"type": "image", "s3Key": key, "userId": user, "messageId": message}


def media_of(stack: Stack, message: str) -> tuple[Any, ...]:
    [row] = stack.sql(
        "SELECT media_url, thumbnail_url, media_metadata FROM messages WHERE id = %s", message
    )
    return row


async def test_the_messenger_example_runs_its_jobs(
    tmp_path: Path, redis_prefix: str, stack: Stack
) -> None:
    example = Example(tmp_path, redis_prefix, **stack.variables)
    cli, port = example.cli, example.port

    image = a_message_with_a_photo(stack, "a.jpg")
    user = image["userId"]
    push = {"type": "push", "userId": user, "title": "hi", "body": "there", "fcmToken": "tok-1"}

    async def enqueue(task: str, payload: dict[str, str], check: bool = True) -> Any:
        return await cli(
            "jobs", "enqueue", task, "--json", orjson.dumps(payload).decode(), check=check
        )

    image_id = (await enqueue("process_image", image)).stdout.strip()
    push_id = (await enqueue("send_push", push)).stdout.strip()
    refused = await enqueue("process_video", {"type": "video"}, check=False)
    assert refused.returncode == 2
    assert "s3Key: Field required" in refused.stderr

    cron = await example.json("jobs", "cron", "list")
    assert len(cron) == 10
    assert {entry["name"]: entry["schedule"] for entry in cron}["orphaned_media"] == "0 5 * * 0"

    engine = example.start()
    try:

        async def finished() -> bool:
            shown = [await example.show(job_id) for job_id in (image_id, push_id)]
            assert not [job for job in shown if job["state"] == "dead"], shown
            return [job["state"] for job in shown] == ["completed", "completed"]

        await eventually(finished, "both jobs completed", timeout_s=90, interval_s=0.2)
        health = await eventually(
            lambda: asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/health", timeout=5),
            "the API serving /health",
            ignore=(httpx.HTTPError,),
        )
        assert health.status_code == 200
    finally:
        output = await example.stop(engine)
    assert engine.returncode == 0, output

    shown = await example.show(image_id)
    assert (shown["queue"], shown["priority"]) == ("media", 2)
    media_url, thumbnail_url, metadata = media_of(stack, image["messageId"])
    assert shown["result"]["media_url"] == media_url
    assert metadata["width"] == 800 and metadata["height"] == 600
    stored = stack.objects()
    assert image["s3Key"] in stored
    made = [key for key in stored if image["messageId"] in key]
    assert len(made) >= 2, stored  # the image and its thumbnail
    assert any(media_url.endswith(key) for key in made), (media_url, made)
    assert any(thumbnail_url.endswith(key) for key in made), (thumbnail_url, made)
    assert stack.fcm.delivered_to() == ["tok-1"]
    assert stack.sql("SELECT user_id::text, type, success FROM notifications") == [
        (user, "push", True)
    ]


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


async def _queues_exist(prefix: str) -> bool:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        try:
            for kind in ("media", "notification", "cleanup"):
                await channel.declare_queue(f"{prefix}.{kind}", passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


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


async def test_a_rabbitmq_publish_ends_as_rows_in_postgresql_and_media_in_s3(
    tmp_path: Path, redis_prefix: str, stack: Stack
) -> None:
    tag = uuid.uuid4().hex[:10]
    exchange_name, queue_prefix = f"swtest_{tag}", f"swtest_{tag}"
    example = Example(
        tmp_path,
        redis_prefix,
        RABBITMQ_URL=AMQP_URL,
        RABBITMQ_EXCHANGE=exchange_name,
        RABBITMQ_QUEUE_PREFIX=queue_prefix,
        **stack.variables,
    )
    image = a_message_with_a_photo(stack, "b.jpg")
    user = image["userId"]
    email = {"type": "email", "userId": user, "title": "Your code", "body": "123456",
             "email": "ann@sup.example"}  # fmt: skip
    # Sessions: one inactive for 40 days (the clean-up removes it), one active today.
    stale, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    stack.sql(
        "INSERT INTO user_sessions (id, user_id, last_active_at) VALUES "
        "(%s, %s, now() - interval '40 days'), (%s, %s, now())",
        stale,
        user,
        fresh,
        user,
    )

    async def bridged() -> list[tuple[str, str, str]]:
        """The completed jobs the bridge made: the cron schedule (health every 5 min) may
        add its own while the test runs, and those are told apart by their unique key."""
        found = await example.json("jobs", "list", "--state", "completed")
        return sorted(
            (job["queue"], job["task"], job["payload"]["type"])
            for job in found
            if not (job["unique_key"] or "").startswith("cron:")
        )

    engine = example.start()
    try:
        messages = [
            ("media.image", orjson.dumps(image), "msg-1"),
            ("notification.email", orjson.dumps(email), "msg-2"),
            ("cleanup.sessions", orjson.dumps({"type": "sessions"}), "msg-3"),
            ("media.image", orjson.dumps(image), "msg-1"),  # a redelivery: no second job
            ("media.video", b"\xff not json", "msg-4"),
        ]
        # The bridge declares its queues when it starts: publish once they exist.
        await eventually(
            lambda: _queues_exist(queue_prefix),
            "the bridge's queues declared",
            timeout_s=60,
            interval_s=0.2,
        )
        await _publish(exchange_name, messages)
        expected = [
            ("cleanup", "cleanup", "sessions"),
            ("media", "process_image", "image"),
            ("notification", "send_email", "email"),
        ]
        last: list[list[tuple[str, str, str]]] = []

        async def finished() -> bool:
            last[:] = [await bridged()]
            dead = await example.json("jobs", "list", "--state", "dead")
            assert dead == [], dead
            return last[0] == expected

        try:
            await eventually(finished, "the three jobs completed", timeout_s=90, interval_s=0.3)
        except NotYet as exc:
            raise AssertionError(f"{exc}; completed by then: {last}") from exc
        dead = await eventually(
            lambda: _dead_bodies(f"{queue_prefix}.media.dead"),
            "the non-JSON message dead-lettered",
            timeout_s=30,
            interval_s=0.3,
        )
        assert dead == [b"\xff not json"]
    finally:
        output = await example.stop(engine)
        await _drop_topology(queue_prefix, exchange_name)
    assert engine.returncode == 0, output
    assert await bridged() == expected  # the redelivered msg-1 made no second job

    media_url, thumbnail_url, metadata = media_of(stack, image["messageId"])
    assert media_url and thumbnail_url and metadata["format"]
    assert [key for key in stack.objects() if image["messageId"] in key]
    [(recipients, mail)] = stack.mailbox.received
    assert recipients == ["ann@sup.example"] and b"123456" in mail
    assert stack.sql("SELECT user_id::text, type, success FROM notifications") == [
        (user, "email", True)
    ]
    assert stack.sql("SELECT id::text FROM user_sessions") == [(fresh,)]
