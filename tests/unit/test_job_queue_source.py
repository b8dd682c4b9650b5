"""The ``job_queue`` source on the in-memory backend: what the conformance cases (one queue,
a key field) leave out: job ids as keys, several queues, waking, settling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.waiting import eventually

from syncworker.connectors.queue.source import JobQueueSource
from syncworker.errors import ConnectorError
from syncworker.queue.base import JobState, NewJob
from syncworker.queue.memory import MemoryQueueBackend


@pytest.fixture
def backend() -> MemoryQueueBackend:
    return MemoryQueueBackend()


def make(store: MemoryQueueBackend, **settings: object) -> JobQueueSource:
    config = {"type": "job_queue", "backend": {"type": "memory"}, "queues": ["a"], **settings}
    return JobQueueSource(config, name="test.jobs", backend=store)


@pytest.fixture
async def source(backend: MemoryQueueBackend) -> AsyncIterator[JobQueueSource]:
    src = make(backend)
    await src.open()
    yield src
    await src.close()


async def test_a_job_becomes_a_record_keyed_by_its_id(
    backend: MemoryQueueBackend, source: JobQueueSource
) -> None:
    [job_id] = await backend.enqueue_many([NewJob("resize", {"s3Key": "a.png"}, queue="a")])

    batch = await source.claim(10)

    assert batch is not None
    [record] = batch.records
    assert (record.key, record.data, record.stream, record.op) == (
        job_id,
        {"s3Key": "a.png"},
        "a",
        "upsert",
    )
    assert record.meta["task"] == "resize" and record.meta["attempts"] == 1
    await source.ack(batch)
    job = await backend.get(job_id)
    assert job is not None and job.state is JobState.COMPLETED


async def test_nack_releases_the_jobs_without_counting_the_attempt(
    backend: MemoryQueueBackend, source: JobQueueSource
) -> None:
    ids = await backend.enqueue_many([NewJob("t", {"n": n}, queue="a") for n in range(3)])
    batch = await source.claim(2)
    assert batch is not None
    await source.nack(batch, RuntimeError("a sink is down"))

    again = await source.claim(10)

    assert again is not None
    assert [r.key for r in again.records] == ids
    assert [r.meta["attempts"] for r in again.records] == [1, 1, 1]
    assert await source.backlog() == 0


async def test_several_queues_share_the_limit_and_take_turns(backend: MemoryQueueBackend) -> None:
    await backend.enqueue_many(
        [NewJob("t", {"n": n}, queue=q) for q in ("a", "b") for n in range(4)]
    )
    src = make(backend, queues=["a", "b"])
    await src.open()
    try:
        first, second = await src.claim(3), await src.claim(3)
        assert first is not None and second is not None
        assert [r.stream for r in first.records] == ["a", "a", "a"]
        assert [r.stream for r in second.records] == ["b", "b", "b"]  # b's turn to go first
        assert await src.backlog() == 2
    finally:
        await src.close()


async def test_wait_returns_on_an_enqueue_to_any_of_its_queues(
    backend: MemoryQueueBackend,
) -> None:
    src = make(backend, queues=["a", "b"])
    await src.open()
    try:
        waiter = asyncio.create_task(src.wait(600.0))
        await asyncio.sleep(0)  # the waits are registered
        assert not waiter.done()
        await backend.enqueue_many([NewJob("t", queue="b")])
        await eventually(lambda: waiter.done(), "the enqueue on b to wake the wait")
        await waiter
    finally:
        await src.close()


async def test_claim_after_close_raises_a_connector_error(backend: MemoryQueueBackend) -> None:
    src = make(backend)
    await src.open()
    await src.close()
    with pytest.raises(ConnectorError, match="not open"):
        await src.claim(1)


def test_config_names_the_backend_setting_that_is_wrong(backend: MemoryQueueBackend) -> None:
    with pytest.raises(ValueError, match=r"backend\s.*type: expected one of sqlite"):
        make(backend, backend={"type": "mongo"})
    with pytest.raises(ValueError, match="queues"):
        make(backend, queues=[])
