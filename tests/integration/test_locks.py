"""Locks on real Redis and PostgreSQL, alone and guarding pipelines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
import redis.asyncio as aredis

from syncworker.coord import current_fencing_token, make_lock
from syncworker.coord.base import Lock
from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy, Schedule
from syncworker.core.protocols import WriteResult
from syncworker.testing import MemoryQueue, MemorySink, MemorySource
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually

BACKENDS = ["redis", "postgres"]


@pytest.fixture(params=BACKENDS)
def lock_url(request: pytest.FixtureRequest, redis_prefix: str) -> str:
    if request.param == "redis":
        return REDIS_URL
    return request.getfixturevalue("pg_url")  # type: ignore[no-any-return]


def lock_for(url: str, key: str, ttl_s: float = 1.0) -> Lock:
    return make_lock(url, key, ttl_s)


async def test_one_holder_at_a_time_and_tokens_grow(lock_url: str, redis_prefix: str) -> None:
    key = f"{redis_prefix}lock"
    first, second = lock_for(lock_url, key), lock_for(lock_url, key)
    try:
        token_1 = await first.acquire()
        assert token_1 is not None
        assert await second.acquire() is None
        assert await first.renew() is True
        await first.release()
        token_2 = await second.acquire()
        assert token_2 is not None and token_2 > token_1
        assert await first.acquire() is None
        await second.release()
        token_3 = await first.acquire()
        assert token_3 is not None and token_3 > token_2
    finally:
        await first.close()
        await second.close()


async def test_redis_lock_expires_and_only_the_holder_can_release(redis_prefix: str) -> None:
    key = f"{redis_prefix}lock"
    first, second = lock_for(REDIS_URL, key, 0.3), lock_for(REDIS_URL, key, 0.3)
    client = aredis.Redis.from_url(REDIS_URL)
    try:
        token_1 = await first.acquire()
        assert token_1 is not None
        # first stops renewing (as a crashed worker would): its lease runs out
        await eventually(lambda: _gone(client, key), "the first lease to expire")
        token_2 = await second.acquire()
        assert token_2 is not None and token_2 > token_1
        assert await first.renew() is False  # it knows it lost
        await first.release()  # compare-and-delete: must not free second's lock
        assert (await client.get(key)).decode() == second.holder_id  # type: ignore[union-attr]
    finally:
        await first.close()
        await second.close()
        await client.aclose()


async def test_postgres_lock_is_freed_when_the_holder_session_dies(pg_url: str) -> None:
    first, second = lock_for(pg_url, "k"), lock_for(pg_url, "k")
    try:
        assert await first.acquire() is not None
        assert await second.acquire() is None
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE %s",
                (f"syncworker-lock:{first.holder_id}"[:63],),
            )
        assert await first.renew() is False
        assert await second.acquire() is not None
    finally:
        await first.close()
        await second.close()


async def _gone(client: aredis.Redis, key: str) -> bool:
    return not await client.exists(key)


class FencedSink(MemorySink):
    """Records the fencing token of every write, and checks no two pipelines write at once."""

    shared: dict[str, Any]

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        writers: dict[str, int] = self.shared.setdefault("writers", {})
        writers[self.name] = writers.get(self.name, 0) + 1
        self.shared["active"] += 1
        busy = [name for name, count in writers.items() if count]
        self.shared["max_writers"] = max(self.shared.get("max_writers", 0), len(busy))
        try:
            self.shared["tokens"].append(current_fencing_token())
            return await super().write(records)
        finally:
            self.shared["active"] -= 1
            writers[self.name] -= 1


def guarded(
    name: str,
    queue: MemoryQueue,
    lock: Lock,
    shared: dict[str, Any],
    schedule: Schedule,
    delay_s: float = 0.01,
) -> tuple[Pipeline, FencedSink]:
    sink = FencedSink(name=f"sink-{name}", write_delay_s=delay_s)
    sink.shared = shared
    settings = PipelineSettings(
        batch_size=5, max_wait_s=0.02, schedule=schedule, retry=RetryPolicy(attempts=1, jitter=0)
    )
    return Pipeline(name, MemorySource(queue), [sink], settings=settings, lock=lock), sink


async def test_two_workers_never_write_at_once_and_tokens_only_grow(redis_prefix: str) -> None:
    key = f"{redis_prefix}syncLock"
    queue = MemoryQueue()
    queue.put_many(300)
    shared: dict[str, Any] = {"active": 0, "tokens": []}
    a, sink_a = guarded("a", queue, lock_for(REDIS_URL, key), shared, Schedule.every(0.05))
    b, sink_b = guarded("b", queue, lock_for(REDIS_URL, key), shared, Schedule.every(0.05))
    await a.start()
    await b.start()
    await eventually(lambda: queue.ready == 0 and queue.in_flight == 0, "the queue to drain")
    await a.stop()
    await b.stop()
    assert set(sink_a.rows) | set(sink_b.rows) == {str(i) for i in range(300)}
    assert shared["max_writers"] == 1  # never both workers at once
    tokens = shared["tokens"]
    assert None not in tokens and tokens == sorted(tokens)


async def test_contention_skips_the_run_quietly(redis_prefix: str) -> None:
    key = f"{redis_prefix}syncLock"
    holder = lock_for(REDIS_URL, key, 5)
    queue = MemoryQueue()
    queue.put_many(3)
    shared: dict[str, Any] = {"active": 0, "tokens": []}
    pipeline, sink = guarded("p", queue, lock_for(REDIS_URL, key), shared, Schedule.manual())
    try:
        assert await holder.acquire() is not None
        await pipeline.start()
        run = await pipeline.sync_now()
        assert run.status == "skipped" and run.processed == 0
        assert sink.writes == [] and queue.ready == 3
        await holder.release()
        run = await pipeline.sync_now()
        assert run.status == "success" and run.processed == 3
        assert pipeline.status()["lock"]["key"] == key
    finally:
        await pipeline.stop()
        await holder.close()


async def test_a_lost_lock_returns_in_flight_batches_before_anything_more_is_written(
    redis_prefix: str,
) -> None:
    key = f"{redis_prefix}syncLock"
    queue = MemoryQueue()
    queue.put_many(20)
    shared: dict[str, Any] = {"active": 0, "tokens": []}
    pipeline, sink = guarded(
        "p", queue, lock_for(REDIS_URL, key, 0.3), shared, Schedule.stream(), delay_s=2.0
    )
    client = aredis.Redis.from_url(REDIS_URL)
    try:
        await pipeline.start()
        await eventually(lambda: shared["active"] >= 1, "batches being written, slowly")
        await client.set(key, "another-worker", px=5000)  # the lock is taken from us
        await eventually(lambda: queue.in_flight == 0, "every batch to go back")
        assert queue.in_flight == 0 and queue.ready == 20
        assert sink.rows == {}  # the slow write was cancelled before it stored anything
        status = pipeline.status()
        assert status["lock"]["held"] is False
    finally:
        await pipeline.stop()
        await client.aclose()


async def test_the_other_worker_takes_over_after_the_holder_dies(redis_prefix: str) -> None:
    key = f"{redis_prefix}syncLock"
    dead = lock_for(REDIS_URL, key, 1.0)
    queue = MemoryQueue()
    queue.put_many(10)
    shared: dict[str, Any] = {"active": 0, "tokens": []}
    survivor, sink = guarded("b", queue, lock_for(REDIS_URL, key, 0.5), shared, Schedule.stream())
    client = aredis.Redis.from_url(REDIS_URL)
    try:
        dead_token = await dead.acquire()  # held, then never renewed: a killed worker
        assert dead_token is not None
        await survivor.start()
        # Standing by while the dead holder's lease runs: rows read while the lease was still
        # the dead holder's (checked after the read) must be none, however late we look.
        looked = 0
        while True:
            rows, running = len(sink.rows), survivor.status()["state"] == "running"
            if await client.get(key) != dead.holder_id.encode():
                break
            assert rows == 0
            looked += running
            await asyncio.sleep(0.02)  # the poll interval of this watch
        assert looked, "the survivor never ran while the dead lease did"
        await eventually(lambda: len(sink.rows) == 10, "the survivor to write everything")
        assert min(shared["tokens"]) > dead_token
    finally:
        await survivor.stop()
        await dead.close()
        await client.aclose()
