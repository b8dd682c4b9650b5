"""A worker process for the SIGKILL acceptance (``test_jobs_kill.py``).

``python -m tests.integration.jobs_kill_child BACKEND_JSON RECORD_DIR LEASE_S CONCURRENCY``
runs a ``Worker`` on queue ``kill`` until SIGTERM (a graceful stop) or SIGKILL. Its one task,
``work``, appends a line to ``RECORD_DIR/<pid>.log`` when a run starts (``S``) and just before
it returns (``D``): ``S|D job_id attempt pid epoch_s``. One ``os.write`` per line on an
``O_APPEND`` file: a SIGKILL loses no line the kernel has taken, and lines never interleave.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from typing import Any

import orjson

from syncworker.jobs import JobContext, QueueSettings, TaskRegistry, Worker
from syncworker.queue.config import build_backend

QUEUE = "kill"
registry = TaskRegistry()
_fd = -1


def _record(kind: str, ctx: JobContext) -> None:
    line = f"{kind} {ctx.job.id} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
    os.write(_fd, line.encode())


@registry.task("work", queue=QUEUE)
async def work(payload: Any, ctx: JobContext) -> dict[str, int]:
    _record("S", ctx)
    # Jobs of a few milliseconds to a few tens: a kill lands while some are in flight.
    await asyncio.sleep(random.uniform(0.005, 0.04))
    _record("D", ctx)
    return {"pid": os.getpid(), "attempt": ctx.attempt}


async def main(backend_json: str, record_dir: str, lease_s: float, concurrency: int) -> None:
    global _fd
    _fd = os.open(
        os.path.join(record_dir, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
    )
    backend = build_backend(orjson.loads(backend_json))
    worker = Worker(
        backend,
        registry,
        {QUEUE: QueueSettings(concurrency=concurrency)},
        lease_s=lease_s,
        heartbeat_s=lease_s / 5,
        poll_interval_s=0.2,
        shutdown_grace_s=2.0,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await worker.run(stop)
    finally:
        await backend.close()
        os.close(_fd)


if __name__ == "__main__":
    _, backend_json, record_dir, lease, concurrency = sys.argv
    asyncio.run(main(backend_json, record_dir, float(lease), int(concurrency)))
