"""syncworker's job queue under the peers' own harness (``peerlib.py`` of ../shared/bench-peers).

The same method as every peer, by the same code: 20,000 no-op jobs that each append one
24-byte record (start, end, tag) to a file, bulk enqueue with no worker running, processing
throughput from the record file, then 50 idle enqueue-to-done latency samples, and a check that
every job ran exactly once. The interleaved, repeated comparison with the peers
(``bench/jobs.py``, issue 12) is not written yet; run this by hand beside a peer's script.

    PYTHONPATH=<peers dir> SW_BACKEND=redis|postgres|sqlite python bench/jobs_peer.py

The worker is a separate process (``python bench/jobs_peer.py worker``), as the peers' are:
one asyncio process, concurrency SW_CONCURRENCY (default 50, the peers' setting). Brokers come
from PEERS_REDIS_URL / PEERS_PG_DSN, which the harness resets between runs: point them at
servers and databases you created for it (never the shared ones: the harness FLUSHALLs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import peerlib

from syncworker.jobs import JobContext, Jobs, QueueSettings, TaskRegistry, Worker
from syncworker.queue.base import NewJob, QueueBackend

BACKEND = os.environ.get("SW_BACKEND", "redis")
CONCURRENCY = int(os.environ.get("SW_CONCURRENCY", "50"))
SQLITE_PATH = Path(os.environ.get("SW_SQLITE_PATH", "/tmp/sw-bench-jobs.db"))
PG_SCHEMA = "syncworker_bench"
REDIS_PREFIX = "swbench:jobs"

registry = TaskRegistry()


@registry.task("noop", queue="default")
async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
    peerlib.record(time.time(), payload["tag"])


def backend() -> QueueBackend:
    if BACKEND == "redis":
        from syncworker.queue.redis import RedisQueueBackend

        return RedisQueueBackend(peerlib.REDIS_URL, prefix=REDIS_PREFIX)
    if BACKEND == "postgres":
        from syncworker.queue.postgres import PostgresQueueBackend

        return PostgresQueueBackend(_pg_url(peerlib.PG_DSN), schema=PG_SCHEMA)
    if BACKEND == "sqlite":
        from syncworker.queue.sqlite import SqliteQueueBackend

        return SqliteQueueBackend(SQLITE_PATH)
    raise SystemExit(f"SW_BACKEND must be redis, postgres or sqlite, got {BACKEND!r}")


def _pg_url(dsn: str) -> str:
    return dsn if "://" in dsn else f"postgresql:///{dsn}"


def reset() -> None:
    if BACKEND == "redis":
        peerlib.reset_redis()
    elif BACKEND == "postgres":
        peerlib.reset_pg()
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)


async def _work() -> None:
    queue = backend()
    await queue.open()
    worker = Worker(queue, registry, queues={"default": QueueSettings(concurrency=CONCURRENCY)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await worker.run(stop)
    finally:
        await queue.close()


def main() -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    queue = backend()
    jobs = Jobs(queue, registry)

    async def bulk(tags: range) -> None:
        await queue.open()
        await jobs.enqueue_many([NewJob("noop", {"tag": t}) for t in tags])

    def one(tag: int) -> None:
        loop.run_until_complete(jobs.enqueue("noop", {"tag": tag}))

    def teardown() -> None:
        loop.run_until_complete(queue.close())

    def reset_and_open() -> None:
        loop.run_until_complete(queue.close())
        reset()

    return peerlib.run_benchmark(  # type: ignore[no-any-return]
        peer="syncworker",
        variant=BACKEND,
        dists=["syncworker", "redis", "hiredis", "psycopg"],
        broker={
            "redis": "Redis 7.0 (Lua scripts)",
            "postgres": "PostgreSQL 15",
            "sqlite": "SQLite",
        }[BACKEND],
        notes=f"Jobs.enqueue_many() of all jobs in one call; one worker process, "
        f"Worker(concurrency={CONCURRENCY}), defaults otherwise (completed jobs kept)",
        reset=reset_and_open,
        enqueue_bulk=lambda tags: loop.run_until_complete(bulk(tags)),
        enqueue_one=one,
        worker_cmds=[[sys.executable, str(Path(__file__).resolve()), "worker"]],
        teardown=teardown,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        asyncio.run(_work())
    else:
        peerlib.main_guard(main)
