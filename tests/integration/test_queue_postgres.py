"""The PostgreSQL job-queue backend against the real server: what the conformance cases do not
reach (the COPY path, the caller's transaction, the listener's reconnect, prune, the limit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from syncworker.queue.base import JobState, NewJob, Outcome
from syncworker.queue.postgres import COPY_MIN_JOBS, PostgresQueueBackend
from tests.integration.conftest import PG_ADMIN_URL
from tests.waiting import eventually

pytestmark = pytest.mark.integration

SCHEMA = "swh2_jobs"
LONG_WAIT_S = 600.0  # far beyond every deadline below: only a wake-up ends such a wait


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def backend(pg_url: str) -> AsyncIterator[PostgresQueueBackend]:
    queue = PostgresQueueBackend(pg_url, schema=SCHEMA, poll_interval_s=0.2)
    await queue.open()
    yield queue
    await queue.close()


async def _counts(backend: PostgresQueueBackend, queue: str) -> dict[JobState, int]:
    return (await backend.counts()).get(queue, dict.fromkeys(JobState, 0))


async def _start_waiter(backend: PostgresQueueBackend, queue: str) -> asyncio.Task[None]:
    """A worker blocked in ``wait`` (past its first look at the table)."""
    waiter = asyncio.create_task(backend.wait(queue, LONG_WAIT_S), name=f"waiter:{queue}")
    await eventually(lambda: queue in backend._wakes or waiter.done(), "the waiter to block")
    assert not waiter.done(), "wait returned with nothing to claim"
    return waiter


async def test_bulk_enqueue_copies_and_returns_ids_in_order(
    backend: PostgresQueueBackend,
) -> None:
    count = max(COPY_MIN_JOBS, 1000) + 500
    jobs = [NewJob("t", {"n": n}, queue="bulk") for n in range(count)]

    ids = await backend.enqueue_many(jobs)

    assert len(ids) == count and len(set(ids)) == count
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)
    first, last = await backend.get(ids[0]), await backend.get(ids[-1])
    assert first is not None and first.payload == {"n": 0} and first.state is JobState.QUEUED
    assert last is not None and last.payload == {"n": count - 1}
    assert (await _counts(backend, "bulk"))[JobState.QUEUED] == count
    claimed = await backend.claim("bulk", 3, "w1", 30.0)
    assert [job.payload["n"] for job in claimed] == [0, 1, 2]


async def test_bulk_enqueue_with_unique_keys_dedupes_and_returns_holders(
    backend: PostgresQueueBackend,
) -> None:
    [held] = await backend.enqueue_many([NewJob("t", {"n": -1}, queue="u", unique_key="k0")])
    count = 1200
    # Every key twice in the batch, k0 already held by a stored job.
    jobs = [NewJob("t", {"n": n}, queue="u", unique_key=f"k{n % 600}") for n in range(count)]

    ids = await backend.enqueue_many(jobs)

    assert len(ids) == count
    assert ids[0] == held and ids[600] == held
    for n in range(1, 600):
        assert ids[n] == ids[n + 600], n
    assert len(set(ids)) == 600
    assert (await _counts(backend, "u"))[JobState.QUEUED] == 600
    job = await backend.get(ids[1])
    assert job is not None and job.payload == {"n": 1}  # the first of the batch holds the key


async def test_enqueue_in_caller_transaction_commit_wakes_waiter(
    backend: PostgresQueueBackend, pg_url: str
) -> None:
    waiter = await _start_waiter(backend, "tx")
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        async with conn.transaction():
            await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO orders VALUES (1)")
            new = [NewJob("t", {"order": 1}, queue="tx")]
            [job_id] = await backend.enqueue_many(new, conn=conn)
            assert await backend.get(job_id) is None, "visible before the commit"
            assert not waiter.done()
        await eventually(lambda: waiter.done(), "the commit's NOTIFY to wake the waiter")
    await waiter
    job = await backend.get(job_id)
    assert job is not None and job.payload == {"order": 1}
    [claimed] = await backend.claim("tx", 10, "w1", 30.0)
    assert claimed.id == job_id


async def test_bulk_enqueue_in_caller_transaction_rolls_back(
    backend: PostgresQueueBackend, pg_url: str
) -> None:
    connect = psycopg.AsyncConnection.connect
    async with await connect(pg_url) as conn, conn.transaction(force_rollback=True):
        one = await backend.enqueue_many([NewJob("t", {"n": 0}, queue="rb")], conn=conn)
        many = await backend.enqueue_many(
            [NewJob("t", {"n": n}, queue="rb") for n in range(COPY_MIN_JOBS)], conn=conn
        )
        assert len(one) == 1 and len(many) == COPY_MIN_JOBS
    assert await backend.get(one[0]) is None
    assert await backend.get(many[0]) is None
    assert await backend.claim("rb", 10, "w1", 30.0) == []
    assert "rb" not in await backend.counts()


async def test_bulk_enqueue_in_caller_transaction_commits_with_it(
    backend: PostgresQueueBackend, pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn, conn.transaction():
        ids = await backend.enqueue_many(
            [NewJob("t", {"n": n}, queue="txbulk") for n in range(COPY_MIN_JOBS)], conn=conn
        )
    assert (await _counts(backend, "txbulk"))[JobState.QUEUED] == COPY_MIN_JOBS
    assert len(set(ids)) == COPY_MIN_JOBS


async def _terminate(pg_url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_listener_reconnects_after_its_connection_is_terminated(
    backend: PostgresQueueBackend, pg_url: str
) -> None:
    await backend.wait("l", 0.0)  # starts the listener
    first_pid = backend.listener_pid
    assert first_pid is not None
    waiter = await _start_waiter(backend, "l")

    await _terminate(pg_url, first_pid)

    # The loss itself wakes every waiter: a NOTIFY sent meanwhile would be lost.
    await eventually(lambda: waiter.done(), "the lost listener to wake the waiter")
    await waiter
    pid = await eventually(
        lambda: backend.listener_pid not in (None, first_pid) and backend.listener_pid,
        "the listener to reconnect",
    )
    assert backend._listener is not None and backend._listener.reconnects >= 1

    waiter = await _start_waiter(backend, "l")
    other = PostgresQueueBackend(pg_url, schema=SCHEMA)
    await other.open()
    try:
        await other.enqueue_many([NewJob("t", {"after": "reconnect"}, queue="l")])
        await eventually(lambda: waiter.done(), "a NOTIFY on the new listener to wake it")
    finally:
        await other.close()
    await waiter
    assert backend.listener_pid == pid


async def test_waiters_poll_while_the_listener_cannot_reconnect(
    backend: PostgresQueueBackend, pg_url: str
) -> None:
    await backend.wait("p", 0.0)
    first_pid = backend.listener_pid
    assert first_pid is not None
    database = pg_url.rsplit("/", 1)[1]
    admin = await psycopg.AsyncConnection.connect(PG_ADMIN_URL, autocommit=True)
    producer = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        # New connections are refused, the open ones keep working: a gap that lasts.
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(%s)", [first_pid])
        await eventually(lambda: backend.listener_pid is None, "the listener to drop")
        waiter = await _start_waiter(backend, "p")
        # Another worker enqueues while nobody listens: its NOTIFY is lost.
        await producer.execute(
            f"INSERT INTO {SCHEMA}.jobs (task, queue, data, priority, run_at, enqueued_at, "
            "max_attempts, state) VALUES ('t', 'p', '\\x7b7d', 0, 0, 0, 1, 'queued')"
        )
        # The long wait ends by polling (poll_interval_s) and the job is there to claim.
        await eventually(lambda: waiter.done(), "the waiter to poll")
        await waiter
        claimed = await backend.claim("p", 10, "w1", 30.0)
        assert [job.payload for job in claimed] == [{}]
        assert backend.listener_pid is None
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await producer.close()
        await admin.close()
    await eventually(lambda: backend.listener_pid is not None, "the listener to come back")


async def test_prune_deletes_finished_jobs_per_state_and_age(pg_url: str) -> None:
    clock = Clock()
    backend = PostgresQueueBackend(pg_url, schema=SCHEMA, clock=clock)
    await backend.open()
    try:
        ids = await backend.enqueue_many([NewJob("t", {"n": n}, queue="pr") for n in range(6)])
        jobs = await backend.claim("pr", 6, "w1", 30.0)
        kinds = ["completed", "completed", "dead", "dead", "retry", "completed"]
        await backend.finish(
            [
                Outcome(job.id, job.attempts, kind, run_at=clock.now + 10_000)  # type: ignore[arg-type]
                for job, kind in zip(jobs[:5], kinds, strict=False)
            ],
            "w1",
        )
        clock.now += 3600
        # Finished an hour later: young, kept by a prune of what is older than 30 minutes.
        await backend.finish([Outcome(jobs[5].id, jobs[5].attempts, "completed")], "w1")

        assert await backend.prune(JobState.COMPLETED, older_than_s=1800) == 2
        states = {i: (await backend.get(i)) for i in ids}
        assert states[ids[0]] is None and states[ids[1]] is None
        assert [states[i].state for i in ids[2:] if states[i]] == [  # type: ignore[union-attr]
            JobState.DEAD,
            JobState.DEAD,
            JobState.DELAYED,
            JobState.COMPLETED,
        ]
        assert await backend.prune(JobState.DEAD, older_than_s=1800) == 2
        assert await backend.get(ids[2]) is None and await backend.get(ids[3]) is None
        assert await backend.prune(JobState.COMPLETED, older_than_s=0) == 1
        assert await backend.get(ids[4]) is not None  # a delayed retry is never pruned
        with pytest.raises(ValueError, match="completed or dead"):
            await backend.prune(JobState.QUEUED, older_than_s=0)
    finally:
        await backend.close()


async def test_claim_takes_only_the_free_capacity(backend: PostgresQueueBackend) -> None:
    await backend.enqueue_many([NewJob("t", {"n": n}, queue="cap") for n in range(10)])

    assert await backend.claim("cap", 0, "w1", 30.0) == []
    first = await backend.claim("cap", 3, "w1", 30.0)
    second = await backend.claim("cap", 4, "w2", 30.0)
    rest = await backend.claim("cap", 100, "w3", 30.0)

    assert [len(first), len(second), len(rest)] == [3, 4, 3]
    assert len({job.id for job in first + second + rest}) == 10
    counts = await _counts(backend, "cap")
    assert counts[JobState.ACTIVE] == 10 and counts[JobState.QUEUED] == 0
    assert await backend.claim("cap", 5, "w4", 30.0) == []


async def test_claim_and_finish_skip_the_flush_for_their_own_statement_only(pg_url: str) -> None:
    # One connection: the enqueue, the claim, the finish and the check below all share it,
    # so a synchronous_commit left off by the claim or the finish would show here (and make
    # that connection's later enqueues non-durable).
    queue = PostgresQueueBackend(pg_url, schema=SCHEMA, pool_size=1)
    await queue.open()
    try:
        await queue.enqueue_many([NewJob("t", {"n": n}, queue="flush") for n in range(3)])
        jobs = await queue.claim("flush", 3, "w1", 30.0)
        assert len(jobs) == 3
        done = [Outcome(job.id, job.attempts, "completed") for job in jobs]
        assert await queue.finish(done, "w1") == []
        async with queue._conn("check") as conn:
            cur = await conn.execute("SHOW synchronous_commit")
            assert await cur.fetchone() == ("on",)
        assert (await _counts(queue, "flush"))[JobState.COMPLETED] == 3
    finally:
        await queue.close()


@pytest.mark.parametrize("job_id", ["²", "٣", "12a", ""])
async def test_an_id_that_is_not_ascii_digits_is_unknown(
    backend: PostgresQueueBackend, job_id: str
) -> None:
    # "²" and "٣" pass str.isdigit() but int() refuses them: get and requeue crashed.
    assert await backend.get(job_id) is None
    assert await backend.requeue([job_id]) == 0
