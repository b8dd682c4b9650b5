"""Seed 000's Python API (`syncworker.compat.sync_worker`) against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis

from syncworker.compat.sync_worker import (
    FileWriter,
    PostgresWriter,
    SyncWorker,
    SyncWorkerConfig,
    create_sync_worker,
)
from tests.private_redis import private_redis

REDIS_DB_URL = "redis://127.0.0.1:6379/8"  # never connected to: create_sync_worker's argument


@pytest.fixture
def seed_url() -> Iterator[str]:
    """The seed's list and lock names are fixed: a Redis of this test's own."""
    with private_redis() as url:
        yield url


@pytest.fixture
def seed_redis(seed_url: str) -> Any:
    client = redis.Redis.from_url(seed_url)
    yield client
    client.close()


async def test_the_seed_api_moves_both_queues(
    seed_redis: Any, seed_url: str, pg_url: str, tmp_path: Path
) -> None:
    for n in range(30):
        stream = "in" if n % 3 else "out"
        seed_redis.lpush(f"whatsapp:{stream}", orjson.dumps({"id": f"m{n}", "text": "hi"}))
    seed_redis.lpush("whatsapp:in", b"not json")
    worker = SyncWorker(
        seed_url,
        {"syncInterval": 3_600_000, "batchSize": 7},
        [FileWriter(str(tmp_path / "sync")), PostgresWriter(pg_url)],
        state=f"sqlite:///{tmp_path}/state.db",
    )
    events: dict[str, list[dict[str, Any]]] = {}
    for name in ("worker_started", "sync_success", "worker_stopped"):
        worker.on(name, lambda e, name=name: events.setdefault(name, []).append(e))
    assert worker.get_status()["isRunning"] is False
    worker.start()
    result = await asyncio.wait_for(worker.manual_sync(), timeout=60)
    status = worker.get_status()
    await worker.stop()

    assert status["isRunning"] is True
    assert status["config"] == {
        "syncInterval": 3_600_000,
        "lockExpiry": 300_000,
        "batchSize": 7,
        "retryAttempts": 3,
        "retryDelay": 5_000,
    }
    assert events["worker_started"][0]["config"]["batchSize"] == 7
    assert events["worker_stopped"][0]["processId"] == status["processId"]
    moved = sum(e["processedCount"] for e in events["sync_success"])
    assert moved == 31
    assert sum(e["inProcessed"] for e in events["sync_success"]) == 21
    assert sum(e["outProcessed"] for e in events["sync_success"]) == 10
    assert set(result) == {"processedCount", "duration", "inProcessed", "outProcessed"}
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 31  # type: ignore[index]
    day_files = sorted(p.name.rsplit("_", 1)[0] for p in (tmp_path / "sync").glob("*.jsonl"))
    assert day_files == ["messages_in", "messages_out"]
    assert seed_redis.llen("whatsapp:in") == seed_redis.llen("whatsapp:out") == 0
    assert seed_redis.get("whatsapp:syncLock") is None  # released after each sync


def test_config_from_the_seed_environment_and_overrides() -> None:
    env = {"SYNC_INTERVAL_MS": "30000", "SYNC_BATCH_SIZE": "50", "SYNC_LOCK_EXPIRY_MS": "1000"}
    config = SyncWorkerConfig.from_env(env).merged({"retryAttempts": 5})
    assert config.public() == {
        "syncInterval": 30000,
        "lockExpiry": 1000,
        "batchSize": 50,
        "retryAttempts": 5,
        "retryDelay": 5000,
    }
    with pytest.raises(ValueError, match="unknown sync worker option 'batchsize'"):
        config.merged({"batchsize": 1})
    with pytest.raises(ValueError, match="unknown event"):
        create_sync_worker(redis=REDIS_DB_URL).on("sync_sucess", print)
