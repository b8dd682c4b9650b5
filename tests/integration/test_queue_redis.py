"""The Redis job-queue backend against the real server: delayed jobs falling due at exactly
their score, scripts lost by SCRIPT FLUSH, one cluster slot per queue, the BLPOP wake."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis
from redis.crc import key_slot

from syncworker.queue.base import JobState, NewJob, Outcome
from syncworker.queue.redis import RedisQueueBackend
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.123456  # digits past a millisecond: the score must keep them all
LONG_WAIT_S = 600.0  # only a wake-up ends such a wait within the test's deadlines


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client() -> AsyncIterator[aredis.Redis]:
    redis_client = aredis.Redis.from_url(REDIS_URL)
    yield redis_client
    await redis_client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def backend(redis_prefix: str, clock: Clock) -> AsyncIterator[RedisQueueBackend]:
    queue = RedisQueueBackend(REDIS_URL, prefix=f"{redis_prefix}swh2", clock=clock)
    await queue.open()
    yield queue
    await queue.close()


@pytest.mark.parametrize("delay_s", [10.0, 0.0001, 1e-6])
async def test_delayed_job_is_claimable_exactly_when_run_at_is_now(
    backend: RedisQueueBackend, clock: Clock, delay_s: float
) -> None:
    run_at = T0 + delay_s
    [job_id] = await backend.enqueue_many([NewJob("t", {"n": 1}, queue="d", run_at=run_at)])
    job = await backend.get(job_id)
    assert job is not None and job.state is JobState.DELAYED and job.run_at == run_at

    clock.now = math.nextafter(run_at, 0.0)  # the closest time before run_at
    assert await backend.claim("d", 10, "w1", 30.0) == []
    assert (await backend.get(job_id)).state is JobState.DELAYED  # type: ignore[union-attr]

    clock.now = run_at
    await asyncio.wait_for(backend.wait("d", LONG_WAIT_S), timeout=10.0)  # due: no waiting
    [claimed] = await backend.claim("d", 10, "w1", 30.0)
    assert claimed.id == job_id and claimed.run_at == run_at and claimed.attempts == 1


async def test_retry_falls_due_exactly_at_its_run_at(
    backend: RedisQueueBackend, clock: Clock
) -> None:
    [job_id] = await backend.enqueue_many([NewJob("t", queue="r", max_attempts=3)])
    [job] = await backend.claim("r", 1, "w1", 30.0)
    retry_at = T0 + 5.000001
    assert (
        await backend.finish([Outcome(job_id, job.attempts, "retry", run_at=retry_at)], "w1") == []
    )

    clock.now = math.nextafter(retry_at, 0.0)
    assert await backend.claim("r", 1, "w1", 30.0) == []
    clock.now = retry_at
    [again] = await backend.claim("r", 1, "w1", 30.0)
    assert again.id == job_id and again.attempts == 2


async def test_scripts_reload_after_script_flush(
    backend: RedisQueueBackend, client: aredis.Redis
) -> None:
    # Every path: one script call alone, several in a transaction, several pipelined.
    await client.script_flush()
    [a] = await backend.enqueue_many([NewJob("t", {"q": "a"}, queue="fa")])
    await client.script_flush()
    ids = await backend.enqueue_many(
        [NewJob("t", {"q": "b"}, queue="fb"), NewJob("t", {"q": "c"}, queue="fc")]
    )
    await client.script_flush()
    [ja] = await backend.claim("fa", 1, "w1", 30.0)
    [jb] = await backend.claim("fb", 1, "w1", 30.0)
    await client.script_flush()
    stale = await backend.finish(
        [Outcome(ja.id, ja.attempts, "completed"), Outcome(jb.id, jb.attempts, "completed")],
        "w1",
    )
    assert stale == []
    assert ja.id == a and jb.id == ids[0]
    assert (await backend.get(a)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert (await backend.get(ids[1])).state is JobState.QUEUED  # type: ignore[union-attr]
    # Each job exactly once: a retried call must not have enqueued twice.
    counts = await backend.counts()
    assert sum(counts["fb"].values()) == 1 and sum(counts["fc"].values()) == 1


@pytest.mark.parametrize("queue", ["media", "a:b", "{y}", "a}b{c", "x}", ""])
async def test_every_key_of_one_queue_is_in_one_cluster_slot(
    backend: RedisQueueBackend, client: aredis.Redis, redis_prefix: str, clock: Clock, queue: str
) -> None:
    name = queue or "default"
    jobs = [
        NewJob("t", {"n": 1}, queue=name, unique_key="u1"),
        NewJob("t", {"n": 2}, queue=name, run_at=T0 + 60),
        NewJob("t", {"n": 3}, queue=name, max_attempts=1),
        NewJob("t", {"n": 4}, queue=name, unique_key="u2"),  # left queued, holding its key
    ]
    await backend.enqueue_many(jobs)
    await backend.enqueue_cron("nightly", T0, NewJob("t", queue=name))
    claimed = await backend.claim(name, 2, "w1", 30.0)
    await backend.finish(
        [
            Outcome(claimed[0].id, claimed[0].attempts, "completed"),
            Outcome(claimed[1].id, claimed[1].attempts, "dead", error="no"),
        ],
        "w1",
    )

    slots: dict[int, list[bytes]] = defaultdict(list)
    registry = f"{redis_prefix}swh2:queues".encode()
    async for key in client.scan_iter(match=f"{redis_prefix}*", count=1000):
        if key != registry:
            slots[key_slot(key)].append(key)
    kinds = {key.rsplit(b":", 1)[-1] for keys in slots.values() for key in keys}
    kinds = {b"job" if kind.isdigit() else kind for kind in kinds}
    assert {
        b"ready",
        b"delayed",
        b"completed",
        b"dead",
        b"seq",
        b"cron",
        b"unique",
        b"job",
    } <= kinds
    assert len(slots) == 1, {slot: sorted(keys)[:4] for slot, keys in slots.items()}


async def test_queues_with_braces_keep_their_own_keys(backend: RedisQueueBackend) -> None:
    names = ["x", "{x}", "x}", "{x", "{}x"]
    ids = await backend.enqueue_many([NewJob("t", {"q": n}, queue=n) for n in names])
    for name, job_id in zip(names, ids, strict=True):
        [job] = await backend.claim(name, 10, "w1", 30.0)
        assert job.id == job_id and job.payload == {"q": name} and job.queue == name


async def test_a_queue_name_that_empties_the_hash_tag_is_refused(
    backend: RedisQueueBackend,
) -> None:
    # "{}x" would be an empty tag: each key hashed whole, the queue spread over slots.
    with pytest.raises(ValueError, match="cannot start with '}'"):
        await backend.enqueue_many([NewJob("t", queue="ok"), NewJob("t", queue="}x")])
    with pytest.raises(ValueError, match="cannot start with '}'"):
        await backend.claim("}x", 1, "w1", 30.0)
    assert await backend.counts() == {}  # nothing of the batch was stored


async def test_enqueue_wakes_a_blocked_waiter(redis_prefix: str) -> None:
    # The real clock: BLPOP's own timeout is in real seconds.
    prefix = f"{redis_prefix}swh2w"
    waiting = RedisQueueBackend(REDIS_URL, prefix=prefix)
    producer = RedisQueueBackend(REDIS_URL, prefix=prefix)
    await waiting.open()
    await producer.open()
    try:
        # The wait pool's one connection: the BLPOP will run on it.
        client_id = await waiting._wait_client.client_id()
        waiter = asyncio.create_task(waiting.wait("wk", LONG_WAIT_S), name="waiter")
        await eventually(lambda: _blocked(waiter, client_id), "the waiter to block in BLPOP")
        await producer.enqueue_many([NewJob("t", {"n": 1}, queue="wk")])
        await eventually(lambda: waiter.done(), "the enqueue to wake the waiter")
        await waiter
        [job] = await waiting.claim("wk", 10, "w1", 30.0)
        assert job.payload == {"n": 1}
    finally:
        await producer.close()
        await waiting.close()


async def _blocked(waiter: asyncio.Task[None], client_id: int) -> bool:
    """True once the waiter's connection sits in BLPOP (and the waiter has not returned)."""
    assert not waiter.done(), "wait returned with nothing to claim"
    probe = aredis.Redis.from_url(REDIS_URL)
    try:
        clients = await probe.client_list()
    finally:
        await probe.aclose()
    return any(int(c["id"]) == client_id and c.get("cmd") == "blpop" for c in clients)
