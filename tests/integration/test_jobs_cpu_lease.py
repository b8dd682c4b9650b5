"""Issue 12: a CPU-bound handler (``cpu=True``, the process pool) that computes for 2 s in pure
Python keeps its 1 s lease: the heartbeat goes on, no other worker claims the job, it
completes once. On PostgreSQL and Redis, a second worker standing by to take the job."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from syncworker.jobs import Jobs, QueueSettings, TaskRegistry, Worker
from syncworker.queue.base import JobState, QueueBackend
from syncworker.queue.config import build_backend
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually

pytestmark = pytest.mark.integration

LEASE_S = 1.0
BUSY_S = 2.0


def crunch(payload: dict[str, Any]) -> dict[str, Any]:
    """Two seconds of pure-Python work (holds its process's GIL the whole time)."""
    with open(payload["record"], "a") as record:
        record.write(f"{os.getpid()}\n")
    deadline, spins = time.monotonic() + BUSY_S, 0
    while time.monotonic() < deadline:
        spins += 1
    return {"spins": spins, "pid": os.getpid()}


def _registry() -> TaskRegistry:
    registry = TaskRegistry()
    registry.task("crunch", queue="media", cpu=True, timeout_s=60)(crunch)
    return registry


def _settings(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "postgres":
        return {"type": "postgres", "url": request.getfixturevalue("pg_url"), "schema": "swh1"}
    prefix = request.getfixturevalue("redis_prefix") + "swh1cpu"
    return {"type": "redis", "url": REDIS_URL, "prefix": prefix}


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_a_cpu_bound_handler_in_the_process_pool_keeps_its_lease(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = _settings(kind, request)
    backends: list[QueueBackend] = [build_backend(settings) for _ in range(3)]
    for backend in backends:
        await backend.open()
    probe, first_backend, second_backend = backends
    record = tmp_path / "runs.txt"
    queues = {"media": QueueSettings(concurrency=2)}
    first = Worker(first_backend, _registry(), queues, lease_s=LEASE_S, poll_interval_s=0.1)
    second = Worker(second_backend, _registry(), queues, lease_s=LEASE_S, poll_interval_s=0.1)
    stops = [asyncio.Event(), asyncio.Event()]
    runs = [asyncio.create_task(first.run(stops[0]))]
    try:
        await eventually(first.started.is_set, "the first worker to start")
        job_id = await Jobs(probe, _registry()).enqueue("crunch", {"record": str(record)})
        held = await eventually(
            lambda: _in(probe, job_id, JobState.ACTIVE), "the first worker to claim it"
        )
        assert held.worker == first.worker_id
        # Standing by: it would take the job the moment its lease ran out.
        runs.append(asyncio.create_task(second.run(stops[1])))
        await eventually(second.started.is_set, "the second worker to start")
        await eventually(lambda: record.exists(), "the handler to start computing")
        leases = {held.lease_until}

        async def extended() -> bool:
            job = await probe.get(job_id)
            assert job is not None
            if job.state is JobState.ACTIVE:
                assert job.worker == first.worker_id and job.attempts == 1
                leases.add(job.lease_until)
            # The computation outlasts two leases: the lease must have moved at least twice.
            return job.state in (JobState.COMPLETED, JobState.DEAD)

        await eventually(extended, "the job finished", timeout_s=60)
        done = await probe.get(job_id)
        assert done is not None and done.state is JobState.COMPLETED, done
        assert done.attempts == 1 and done.result["pid"] != os.getpid()
        assert len(leases) >= 2, leases  # heartbeats moved the lease while it computed
        assert held.lease_until is not None
        assert max(v for v in leases if v is not None) >= held.lease_until + LEASE_S / 2
        assert len(record.read_text().splitlines()) == 1  # it ran once
        assert first.stats()["media"]["lease_lost"] == 0
        assert first.stats()["media"]["completed"] == 1
        assert second.stats()["media"]["completed"] == 0
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*runs, return_exceptions=True)
        for backend in backends:
            await backend.close()


async def _in(backend: QueueBackend, job_id: str, state: JobState) -> Any:
    job = await backend.get(job_id)
    return job if job is not None and job.state is state else None
