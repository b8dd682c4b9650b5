"""The job-queue contract (``syncworker.queue.base``) on every backend, with the same cases.

A backend joins by adding its kind to ``queues.BACKENDS`` and a branch in ``QueueHarness``.
Time-dependent cases use short leases and delays and wait for the condition
(``tests.waiting.eventually``): the backends' clocks are real (PostgreSQL and Redis may decide
time on the server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from syncworker.core import jsonvalue
from syncworker.queue.base import JobState, NewJob, Outcome, QueueBackend
from tests.conformance.queues import BACKENDS, QueueHarness
from tests.integration.conftest import pg_url, redis_prefix
from tests.waiting import eventually

__all__ = ["pg_url", "redis_prefix"]

pytestmark = pytest.mark.integration

LEASE_S = 0.3


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueHarness]:
    built = QueueHarness(request.param, request, tmp_path)
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def queue(harness: QueueHarness) -> QueueBackend:
    return await harness.new()


async def _claim_one(backend: QueueBackend, worker: str, lease_s: float = 30.0) -> list[str]:
    return [job.id for job in await backend.claim("q", 1, worker, lease_s)]


async def test_enqueue_keeps_every_field_and_the_payload_bytes_exactly(queue: QueueBackend) -> None:
    payload = {"big": 2**70, "price": Decimal("0.1000"), "text": "héllo \u2603", "n": [1, None]}
    raw = b"\xff\x00 not json"
    ids = await queue.enqueue_many(
        [
            NewJob("send", payload, queue="q", priority=3, max_attempts=4, timeout_s=2.5),
            NewJob("raw", raw, queue="q"),
        ]
    )
    assert len(ids) == 2 and len(set(ids)) == 2
    first, second = await queue.get(ids[0]), await queue.get(ids[1])
    assert first is not None and second is not None
    # The bytes are exact ("0.1000" keeps its zeros); decoded, a number a double holds as
    # written comes back as a float (core.jsonvalue), so compare the rest field by field.
    assert first.data == jsonvalue.dumps(payload) and b"0.1000" in first.data
    assert {k: v for k, v in first.payload.items() if k != "price"} == {
        k: v for k, v in payload.items() if k != "price"
    }
    assert second.data == raw
    assert (first.task, first.queue, first.priority) == ("send", "q", 3)
    assert (first.max_attempts, first.timeout_s, first.attempts) == (4, 2.5, 0)
    assert first.state is JobState.QUEUED
    assert abs(first.enqueued_at - time.time()) < 60
    assert await queue.enqueue_many([]) == []
    assert await queue.get("999999999") is None


async def test_a_job_that_cannot_be_stored_is_refused_and_nothing_is_added(
    queue: QueueBackend,
) -> None:
    with pytest.raises(ValueError, match="priority"):
        await queue.enqueue_many([NewJob("ok", queue="q"), NewJob("bad", queue="q", priority=5000)])
    assert (await queue.counts()).get("q", {}).get(JobState.QUEUED, 0) == 0


async def test_claims_take_the_highest_priority_then_the_earliest_run_at_then_enqueue_order(
    queue: QueueBackend,
) -> None:
    now = time.time()
    ids = await queue.enqueue_many(
        [
            NewJob("a", queue="q", priority=0),
            NewJob("b", queue="q", priority=2),
            NewJob("c", queue="q", priority=1),
            NewJob("d", queue="q", priority=2),
            NewJob("late", queue="q", priority=1, run_at=now - 10),
            NewJob("early", queue="q", priority=1, run_at=now - 20),
            NewJob("other", queue="elsewhere", priority=9),
        ]
    )
    claimed = await queue.claim("q", 3, "w1", 30)
    assert [job.task for job in claimed] == ["b", "d", "early"]
    assert all(job.state is JobState.ACTIVE and job.worker == "w1" for job in claimed)
    assert all(job.attempts == 1 and job.lease_until is not None for job in claimed)
    rest = await queue.claim("q", 10, "w1", 30)
    assert [job.task for job in rest] == ["late", "c", "a"]
    assert await queue.claim("q", 10, "w1", 30) == []
    assert [job.id for job in await queue.claim("elsewhere", 10, "w1", 30)] == [ids[-1]]


async def test_a_delayed_job_waits_until_due_and_wait_returns_when_it_falls_due(
    queue: QueueBackend,
) -> None:
    [job_id] = await queue.enqueue_many([NewJob("later", queue="q", run_at=time.time() + 0.5)])
    assert await queue.claim("q", 10, "w1", 30) == []
    assert (await queue.counts())["q"][JobState.DELAYED] == 1
    started = time.monotonic()
    await queue.wait("q", 10.0)
    # Woken by the due time, not by the 10 s timeout.
    assert time.monotonic() - started < 8.0
    claimed = await eventually(lambda: _claim_one(queue, "w1"), "the delayed job to fall due")
    assert claimed == [job_id]


async def test_wait_wakes_when_another_worker_enqueues(harness: QueueHarness) -> None:
    waiter, producer = await harness.new(), await harness.new()
    waiting = asyncio.create_task(waiter.wait("q", 20.0))
    await asyncio.sleep(0)  # let the waiter start waiting; the wake below is what ends it
    started = time.monotonic()
    await producer.enqueue_many([NewJob("x", queue="q")])
    await asyncio.wait_for(waiting, 15.0)
    assert time.monotonic() - started < 15.0
    assert len(await waiter.claim("q", 10, "w1", 30)) == 1


async def test_a_unique_key_is_held_while_the_job_lives_and_freed_when_it_completes(
    queue: QueueBackend,
) -> None:
    [first] = await queue.enqueue_many([NewJob("u", queue="q", unique_key="order-1")])
    again = await queue.enqueue_many(
        [
            NewJob("u", queue="q", unique_key="order-1"),
            NewJob("u", queue="q", unique_key="order-2"),
            NewJob("u", queue="q", unique_key="order-2"),
        ]
    )
    assert again[0] == first and again[1] == again[2] != first
    [claimed] = await queue.claim("q", 1, "w1", 30)
    assert claimed.id == first
    assert await queue.enqueue_many([NewJob("u", queue="q", unique_key="order-1")]) == [first]
    assert await queue.finish([Outcome(first, 1, "completed")], "w1") == []
    [fresh] = await queue.enqueue_many([NewJob("u", queue="q", unique_key="order-1")])
    assert fresh != first
    assert (await queue.counts())["q"][JobState.QUEUED] == 2


async def test_an_expired_lease_lets_another_worker_claim_and_the_old_outcome_is_fenced(
    harness: QueueHarness,
) -> None:
    one, two = await harness.new(), await harness.new()
    [job_id] = await one.enqueue_many([NewJob("slow", queue="q", max_attempts=3)])
    [held] = await one.claim("q", 1, "w1", LEASE_S)
    taken = await eventually(lambda: two.claim("q", 1, "w2", 30), "the lease to expire")
    assert [job.id for job in taken] == [job_id]
    assert taken[0].attempts == 2 and taken[0].worker == "w2"
    stale = await one.finish([Outcome(job_id, held.attempts, "completed")], "w1")
    assert stale == [job_id]
    job = await two.get(job_id)
    assert job is not None and job.state is JobState.ACTIVE and job.worker == "w2"
    assert await two.finish([Outcome(job_id, 2, "completed", result={"ok": True})], "w2") == []
    done = await two.get(job_id)
    assert done is not None and done.state is JobState.COMPLETED and done.result == {"ok": True}
    assert done.finished_at is not None


async def test_heartbeats_keep_a_lease_and_report_jobs_no_longer_held(
    harness: QueueHarness,
) -> None:
    one, two = await harness.new(), await harness.new()
    [job_id] = await one.enqueue_many([NewJob("long", queue="q")])
    [held] = await one.claim("q", 1, "w1", LEASE_S)
    deadline = time.monotonic() + 4 * LEASE_S
    while time.monotonic() < deadline:
        assert await one.heartbeat([held.token], "w1", LEASE_S) == []
        assert await two.claim("q", 1, "w2", 30) == []
        await asyncio.sleep(LEASE_S / 4)  # the heartbeat cadence under test, not a wait
    assert await two.heartbeat([held.token], "w2", LEASE_S) == [job_id]
    assert await one.heartbeat([(job_id, held.attempts + 1)], "w1", LEASE_S) == [job_id]


async def test_a_lease_that_expires_on_the_last_attempt_makes_the_job_dead(
    harness: QueueHarness,
) -> None:
    one, two = await harness.new(), await harness.new()
    [job_id] = await one.enqueue_many([NewJob("fatal", queue="q", max_attempts=1)])
    assert len(await one.claim("q", 1, "w1", LEASE_S)) == 1

    async def dead() -> bool:
        assert await two.claim("q", 1, "w2", 30) == []
        job = await two.get(job_id)
        return job is not None and job.state is JobState.DEAD

    assert await eventually(dead, "the expired last attempt to go dead")
    job = await two.get(job_id)
    assert job is not None and "lease expired" in (job.error or "")


async def test_a_retry_waits_out_its_backoff_then_runs_again_with_the_attempt_counted(
    queue: QueueBackend,
) -> None:
    [job_id] = await queue.enqueue_many([NewJob("flaky", queue="q", max_attempts=3)])
    [held] = await queue.claim("q", 1, "w1", 30)
    outcome = Outcome(job_id, 1, "retry", run_at=time.time() + 0.4, error="boom", stack="tb")
    assert await queue.finish([outcome], "w1") == []
    job = await queue.get(job_id)
    assert job is not None and job.state is JobState.DELAYED and job.error == "boom"
    assert job.stack == "tb" and job.worker is None
    assert await queue.claim("q", 1, "w1", 30) == []
    again = await eventually(lambda: queue.claim("q", 1, "w2", 30), "the backoff to pass")
    assert [j.id for j in again] == [job_id] and again[0].attempts == held.attempts + 1


async def test_dead_jobs_keep_their_error_and_requeue_runs_them_again(queue: QueueBackend) -> None:
    ids = await queue.enqueue_many(
        [NewJob("bad", queue="q", unique_key="k"), NewJob("fine", queue="q")]
    )
    claimed = await queue.claim("q", 2, "w1", 30)
    assert {job.id for job in claimed} == set(ids)
    outcomes = [
        Outcome(ids[0], 1, "dead", error="ValueError: no", stack="Traceback ..."),
        Outcome(ids[1], 1, "completed"),
    ]
    assert await queue.finish(outcomes, "w1") == []
    [dead] = await queue.list_jobs(queue="q", state=JobState.DEAD)
    assert dead.id == ids[0] and dead.error == "ValueError: no" and dead.stack == "Traceback ..."
    assert (await queue.counts())["q"][JobState.DEAD] == 1
    assert await queue.requeue([ids[1]]) == 0  # completed, not dead
    assert await queue.requeue([ids[0]]) == 1
    job = await queue.get(ids[0])
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    [again] = await queue.claim("q", 1, "w1", 30)
    assert again.id == ids[0] and again.attempts == 1


async def test_release_hands_a_job_back_at_once_without_counting_the_attempt(
    harness: QueueHarness,
) -> None:
    one, two = await harness.new(), await harness.new()
    [job_id] = await one.enqueue_many([NewJob("interrupted", queue="q", max_attempts=1)])
    [held] = await one.claim("q", 1, "w1", 300)
    assert await one.release([held.token], "w2") == 0  # not w2's job
    assert await one.release([held.token], "w1") == 1
    job = await one.get(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    [taken] = await two.claim("q", 1, "w2", 300)
    assert taken.id == job_id and taken.attempts == 1


async def test_progress_and_results_are_kept_exactly(queue: QueueBackend) -> None:
    [job_id] = await queue.enqueue_many([NewJob("report", queue="q")])
    [held] = await queue.claim("q", 1, "w1", 30)
    assert await queue.set_progress(held.token, "w1", {"done": 3, "of": 10}) is True
    assert await queue.set_progress(held.token, "w2", {"done": 4}) is False
    job = await queue.get(job_id)
    assert job is not None and job.progress == {"done": 3, "of": 10}
    result = {"big": 2**70, "price": Decimal("12345678901234567890.5"), "ok": [True, None]}
    assert await queue.finish([Outcome(job_id, 1, "completed", result=result)], "w1") == []
    done = await queue.get(job_id)
    assert done is not None and done.result == result


async def test_counts_report_every_state_of_every_queue(queue: QueueBackend) -> None:
    now = time.time()
    await queue.enqueue_many(
        [NewJob("t", queue="q") for _ in range(4)]
        + [NewJob("t", queue="q", run_at=now + 3600)]
        + [NewJob("t", queue="other")]
    )
    a, b, c = await queue.claim("q", 3, "w1", 30)
    await queue.finish([Outcome(a.id, 1, "completed"), Outcome(b.id, 1, "dead", error="x")], "w1")
    counts = await queue.counts()
    assert counts["q"] == {
        JobState.DELAYED: 1,
        JobState.QUEUED: 1,
        JobState.ACTIVE: 1,
        JobState.COMPLETED: 1,
        JobState.DEAD: 1,
    }
    assert counts["other"][JobState.QUEUED] == 1 and sum(counts["other"].values()) == 1
    assert c.id not in {a.id, b.id}


async def test_list_jobs_filters_by_queue_and_state_newest_first(queue: QueueBackend) -> None:
    ids = await queue.enqueue_many([NewJob(f"t{i}", queue="q") for i in range(5)])
    await queue.enqueue_many([NewJob("x", queue="other")])
    listed = await queue.list_jobs(queue="q", state=JobState.QUEUED, limit=3)
    assert [job.id for job in listed] == list(reversed(ids))[:3]
    assert len(await queue.list_jobs(limit=100)) == 6


async def test_prune_deletes_only_finished_jobs_past_their_age(queue: QueueBackend) -> None:
    ids = await queue.enqueue_many([NewJob("t", queue="q") for _ in range(3)])
    claimed = await queue.claim("q", 3, "w1", 30)
    await queue.finish([Outcome(job.id, 1, "completed") for job in claimed[:2]], "w1")
    assert await queue.prune(JobState.COMPLETED, 3600) == 0
    pruned = 0

    async def all_pruned() -> bool:
        nonlocal pruned
        pruned += await queue.prune(JobState.COMPLETED, 0)
        return pruned == 2

    await eventually(all_pruned, "the completed jobs to be pruned")
    assert await queue.get(claimed[0].id) is None
    still = await queue.get(claimed[2].id)
    assert still is not None and still.state is JobState.ACTIVE
    assert set(ids) == {job.id for job in claimed}


async def test_a_cron_slot_is_enqueued_once_however_many_workers_race_for_it(
    harness: QueueHarness,
) -> None:
    workers = [await harness.new() for _ in range(3)]
    slot = 1_790_000_000.0
    results = await asyncio.gather(
        *(w.enqueue_cron("hourly", slot, NewJob("cleanup", queue="q")) for w in workers * 3)
    )
    assert len([r for r in results if r is not None]) == 1
    assert (
        await workers[0].enqueue_cron("hourly", slot - 3600, NewJob("cleanup", queue="q")) is None
    )
    later = await workers[1].enqueue_cron("hourly", slot + 3600, NewJob("cleanup", queue="q"))
    assert later is not None
    assert await workers[2].cron_state() == {"hourly": slot + 3600}
    assert (await workers[0].counts())["q"][JobState.QUEUED] == 2


async def test_concurrent_claims_from_two_workers_never_share_a_job(harness: QueueHarness) -> None:
    one, two = await harness.new(), await harness.new()
    ids = await one.enqueue_many([NewJob("t", queue="q") for _ in range(600)])
    seen: dict[str, list[str]] = {"w1": [], "w2": []}

    async def drain(backend: QueueBackend, worker: str) -> None:
        while jobs := await backend.claim("q", 37, worker, 30):
            seen[worker].extend(job.id for job in jobs)

    await asyncio.gather(drain(one, "w1"), drain(two, "w2"))
    everything = seen["w1"] + seen["w2"]
    assert sorted(everything) == sorted(ids)
    assert len(set(everything)) == len(everything)


async def test_a_bulk_enqueue_of_many_jobs_stores_every_one(queue: QueueBackend) -> None:
    jobs = [NewJob("bulk", {"n": i}, queue="q") for i in range(5000)]
    jobs[10].unique_key = jobs[20].unique_key = "same"
    ids = await queue.enqueue_many(jobs)
    assert len(ids) == 5000 and ids[10] == ids[20]
    assert len(set(ids)) == 4999
    assert (await queue.counts())["q"][JobState.QUEUED] == 4999
    got = await queue.get(ids[4999])
    assert got is not None and got.payload == {"n": 4999}
