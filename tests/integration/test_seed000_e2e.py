"""Seed 000 end to end: the example config as `syncworker run`, real Redis, PostgreSQL and a
local webhook receiver; producers are plain redis-py LPUSH calls; the worker is SIGKILLed at
random moments and restarted. At the end every message is in PostgreSQL exactly once, in the
day files and at the webhook at least once, with no torn line.

SYNCWORKER_SEED000_MESSAGES (default 200,000) and SYNCWORKER_CHAOS_ROUNDS (default 5 kills).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
import redis

from tests.fakes.webhook_server import WebhookServer
from tests.private_redis import private_redis
from tests.waiting import eventually

EXAMPLE = Path(__file__).parents[2] / "examples" / "redis_queues_to_storage" / "syncworker.yaml"
MESSAGES = int(os.environ.get("SYNCWORKER_SEED000_MESSAGES", "200000"))
KILLS = int(os.environ.get("SYNCWORKER_CHAOS_ROUNDS", "5"))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The example's list and lock names are fixed: a Redis of this test's own."""
    with private_redis() as url:
        yield url


def produce(url: str, count: int) -> None:
    """LPUSH, as the seed's producers do, in chunks while the worker runs."""
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        stream = "in" if n % 2 == 0 else "out"
        pipe.lpush(f"whatsapp:{stream}", orjson.dumps({"id": f"{stream}-{n}", "text": "hi"}))
        if n % 5_000 == 4_999:
            pipe.execute()
            time.sleep(0.02)
    pipe.execute()
    client.close()


def pg_count(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])  # type: ignore[index]
    except psycopg.errors.UndefinedTable:
        return 0


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "syncworker.cli", "--log-level", "warning", "run", str(EXAMPLE)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """``eventually`` for a blocking predicate (psycopg, redis-py): it runs in a thread."""
    await eventually(lambda: asyncio.to_thread(predicate), what, timeout_s=timeout_s)


def queues_empty(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        waiting = client.llen("whatsapp:in") + client.llen("whatsapp:out")
        # processing lists are tmp:<stream>:<worker>:<n>; tmp:worker* are heartbeats
        processing = sum(
            1 for pattern in ("tmp:in:*", "tmp:out:*") for _ in client.scan_iter(match=pattern)
        )
        return waiting == 0 and processing == 0
    finally:
        client.close()


@pytest.mark.timeout(900)
async def test_seed000_survives_sigkill_and_loses_nothing(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": pg_url,
        "SYNC_FILE_PATH": str(tmp_path / "sync"),
        "SYNC_STATE_PATH": str(tmp_path / "state.db"),
        "SYNC_API_LISTEN": "127.0.0.1:0",
        "SYNC_INTERVAL_MS": "100",
        "SYNC_BATCH_SIZE": "2000",
        "SYNC_LOCK_EXPIRY_MS": "2000",
        "SYNC_HEARTBEAT_TTL_MS": "1500",
        "SYNC_RECOVERY_INTERVAL_MS": "500",
        "SYNC_RETRY_DELAY_MS": "100",
    }
    log = tmp_path / "worker.log"
    rng = random.Random(int(os.environ.get("SYNCWORKER_CHAOS_SEED", time.time_ns())))
    thresholds = sorted(rng.sample(range(MESSAGES // 20, MESSAGES - MESSAGES // 20), KILLS))
    async with WebhookServer() as hook:
        env["SYNC_WEBHOOK_URL"] = hook.url
        producer = asyncio.create_task(asyncio.to_thread(produce, redis_url, MESSAGES))
        worker: subprocess.Popen[bytes] | None = None
        try:
            for threshold in thresholds:
                worker = start_worker(env, log)
                await until(
                    lambda t=threshold, w=worker: pg_count(pg_url) >= t or w.poll() is not None,
                    180,
                    f"{threshold} rows",
                )
                assert worker.poll() is None, log.read_text()[-3000:]
                worker.send_signal(signal.SIGKILL)
                worker.wait()
            worker = start_worker(env, log)
            await producer
            await until(
                lambda: pg_count(pg_url) >= MESSAGES and queues_empty(redis_url),
                300,
                "every message in PostgreSQL and the queues empty",
            )
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 60) == 0, log.read_text()[-3000:]
        finally:
            producer.cancel()
            if worker is not None and worker.poll() is None:
                worker.kill()  # a failed run must not leave a worker behind
                worker.wait()
        received = {m["id"] for r in hook.accepted for m in r.json["messages"]}

    expected = {f"{'in' if n % 2 == 0 else 'out'}-{n}" for n in range(MESSAGES)}
    with psycopg.connect(pg_url) as conn:
        keys = [row[0] for row in conn.execute("SELECT key FROM messages")]
    assert len(keys) == len(set(keys)) == MESSAGES and set(keys) == expected
    in_files: set[str] = set()
    for path in sorted((tmp_path / "sync").glob("messages_*.jsonl")):
        content = path.read_bytes()
        assert content.endswith(b"\n"), f"{path.name} ends with a torn line"
        in_files.update(orjson.loads(line)["id"] for line in content.splitlines())
    assert in_files == expected
    assert received == expected
