"""The SQLite job-queue backend across processes sharing one file: claims never overlap, and
a waiter in one process wakes on another process's enqueue (the ``data_version`` poll)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from syncworker.queue.base import JobState, NewJob
from syncworker.queue.sqlite import SqliteQueueBackend
from tests.waiting import eventually

pytestmark = pytest.mark.integration

LONG_WAIT_S = 600.0  # only a wake-up ends such a wait within the test's deadlines

# A worker process: opens the file, says "ready", claims once told "go" on stdin until the
# queue is empty (completing each batch), then prints the ids it claimed.
CLAIMER = """
import asyncio, json, sys
from syncworker.queue.base import Outcome
from syncworker.queue.sqlite import SqliteQueueBackend

async def main(path, worker):
    backend = SqliteQueueBackend(path)
    await backend.open()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    claimed = []
    while jobs := await backend.claim("q", 7, worker, 60.0):
        claimed += [job.id for job in jobs]
        await backend.finish([Outcome(j.id, j.attempts, "completed") for j in jobs], worker)
    await backend.close()
    print(json.dumps(claimed), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

ENQUEUER = """
import asyncio, sys
from syncworker.queue.base import NewJob
from syncworker.queue.sqlite import SqliteQueueBackend

async def main(path):
    backend = SqliteQueueBackend(path)
    await backend.open()
    [job_id] = await backend.enqueue_many([NewJob("t", {"from": "child"}, queue="w")])
    await backend.close()
    print(job_id, flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def _spawn(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60.0)
    assert line, f"the child exited early (code {await process.wait()})"
    return line.decode().strip()


async def test_two_processes_never_claim_the_same_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    backend = SqliteQueueBackend(path)
    await backend.open()
    try:
        ids = await backend.enqueue_many([NewJob("t", {"n": n}, queue="q") for n in range(3000)])
        workers = [await _spawn(CLAIMER, str(path), f"w{n}") for n in range(2)]
        try:
            for worker in workers:
                assert await _line(worker) == "ready"
            for worker in workers:  # both start claiming at once
                assert worker.stdin is not None
                worker.stdin.write(b"go\n")
                await worker.stdin.drain()
            claims = [json.loads(await _line(worker)) for worker in workers]
            assert [await worker.wait() for worker in workers] == [0, 0]
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()

        first, second = (set(claimed) for claimed in claims)
        assert len(first) == len(claims[0]) and len(second) == len(claims[1])
        assert first.isdisjoint(second)
        assert first | second == set(ids)
        counts = (await backend.counts())["q"]
        assert counts[JobState.COMPLETED] == 3000 and counts[JobState.ACTIVE] == 0
        completed = await backend.list_jobs(queue="q", state=JobState.COMPLETED, limit=3000)
        assert {job.attempts for job in completed} == {1}  # none taken twice
    finally:
        await backend.close()


async def test_wait_wakes_on_another_process_enqueue(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    backend = SqliteQueueBackend(path)
    await backend.open()
    try:
        waiter = asyncio.create_task(backend.wait("w", LONG_WAIT_S), name="waiter")
        # Past its first look at the table (which reads data_version): now only a commit seen
        # by the poll, or the timeout, ends the wait. No in-process wake reaches it.
        await eventually(lambda: backend._data_version is not None or waiter.done(), "the look")
        assert not waiter.done(), "wait returned with nothing to claim"

        child = await _spawn(ENQUEUER, str(path))
        job_id = await _line(child)
        assert await child.wait() == 0

        await eventually(lambda: waiter.done(), "the other process's commit to wake the waiter")
        await waiter
        [job] = await backend.claim("w", 10, "w1", 30.0)
        assert job.id == job_id and job.payload == {"from": "child"}
    finally:
        await backend.close()


async def test_messages_and_jobs_share_the_table_but_not_their_claims(tmp_path: Path) -> None:
    from syncworker.connectors.sqlite.queue import SqliteQueue
    from syncworker.connectors.sqlite.source_queue import SqliteQueueSource

    path = tmp_path / "shared.db"
    backend = SqliteQueueBackend(path, table="shared")
    await backend.open()
    source = SqliteQueueSource(
        {"type": "sqlite_queue", "path": str(path), "table": "shared"}, name="test.source"
    )
    await source.open()
    try:
        [job_id] = await backend.enqueue_many([NewJob("resize", {"job": 1}, queue="in")])
        with SqliteQueue(path, table="shared") as producer:
            assert producer.enqueue([{"message": 1}], stream="in") == 1
            assert producer.backlog() == 1  # the job is not a message

        # A job worker never gets a message (no task would run it), the source never a job.
        assert [job.id for job in await backend.claim("in", 10, "w1", 30.0)] == [job_id]
        batch = await source.claim(10)
        assert batch is not None and [r.data for r in batch.records] == [{"message": 1}]
        assert await source.claim(10) is None
        assert (await backend.counts())["in"][JobState.ACTIVE] == 1
        await source.ack(batch)
        assert (await backend.get(job_id)).state is JobState.ACTIVE  # type: ignore[union-attr]
    finally:
        await source.close()
        await backend.close()
