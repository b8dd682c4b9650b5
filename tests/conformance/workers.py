"""Real ``Worker`` instances over one backend kind, for the worker-level conformance cases.

``WorkerHarness`` builds backends of one kind (memory, sqlite, postgres, redis) on storage only
this test uses, the way ``queues.QueueHarness`` does, but with a shared, shiftable clock: every
backend and worker of a test reads ``Clock``, so a case can jump past a 5 s backoff without
waiting for it (all backends decide time from the client's clock, never the server's).
``start`` runs a worker until the test stops it or ends; ``Tracker`` counts handlers running at
once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from syncworker.jobs import QueueSettings, TaskRegistry, Worker
from syncworker.queue.base import Job, JobState, QueueBackend
from tests.conformance.queues import _backend_class
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually


class Clock:
    """Wall time plus an offset the test moves forward (never back)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += max(0.0, seconds)


class Tracker:
    """How many handlers run at once, per queue, and the most seen."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def enter(self, queue: str) -> None:
        self.now[queue] = self.now.get(queue, 0) + 1
        self.most[queue] = max(self.most.get(queue, 0), self.now[queue])

    def leave(self, queue: str) -> None:
        self.now[queue] -= 1


class WorkerHarness:
    """Backends of one kind sharing storage and a clock; workers started on them."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.kind = kind
        self.clock = Clock()
        self._memory: QueueBackend | None = None
        if kind == "memory":
            cls = _backend_class("memory", "MemoryQueueBackend")
            self._make = lambda: self._shared(cls)
        elif kind == "sqlite":
            cls = _backend_class("sqlite", "SqliteQueueBackend")
            path = tmp_path / "jobs.db"
            self._make = lambda: cls(path, clock=self.clock)
        elif kind == "postgres":
            cls = _backend_class("postgres", "PostgresQueueBackend")
            url = request.getfixturevalue("pg_url")
            self._make = lambda: cls(url, schema="swh1_jobs", clock=self.clock, poll_interval_s=0.2)
        elif kind == "redis":
            cls = _backend_class("redis", "RedisQueueBackend")
            prefix = request.getfixturevalue("redis_prefix") + "swh1jobs"
            self._make = lambda: cls(REDIS_URL, prefix=prefix, clock=self.clock)
        else:
            raise ValueError(kind)
        self.opened: list[QueueBackend] = []
        self._runs: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def _shared(self, cls: Any) -> QueueBackend:
        if self._memory is None:
            self._memory = cls(clock=self.clock)
        return self._memory

    async def new(self) -> QueueBackend:
        """Another instance on the same storage (another process's view)."""
        backend: QueueBackend = self._make()
        if backend not in self.opened:
            await backend.open()
            self.opened.append(backend)
        return backend

    async def start(
        self,
        registry: TaskRegistry,
        queues: dict[str, QueueSettings] | None = None,
        **options: Any,
    ) -> tuple[Worker, asyncio.Event, asyncio.Task[None]]:
        """A worker on its own backend instance, running; returns it, its stop and its run."""
        options.setdefault("poll_interval_s", 0.1)
        worker = Worker(await self.new(), registry, queues, clock=self.clock, **options)
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop), name=f"test-worker:{worker.worker_id}")
        self._runs.append((stop, run))
        await eventually(worker.started.is_set, "the worker to start")
        return worker, stop, run

    async def close(self) -> None:
        for stop, _ in self._runs:
            stop.set()
        await asyncio.gather(*(run for _, run in self._runs), return_exceptions=True)
        for backend in reversed(self.opened):
            await backend.close()
        self.opened.clear()


async def job_in(backend: QueueBackend, job_id: str, state: JobState) -> Job | None:
    """The job when it is in ``state`` (for ``eventually``), else None."""
    job = await backend.get(job_id)
    return job if job is not None and job.state is state else None


class FailingHeartbeats:
    """A backend whose ``heartbeat`` fails while ``failing`` is set (the network to the
    server cut for that call only); every other call goes to the real backend."""

    def __init__(self, backend: QueueBackend) -> None:
        self._backend = backend
        self.failing = False
        self.hanging = False  # the call never returns (a silently dropped connection)
        self.kind = backend.kind

    async def heartbeat(self, tokens: Any, worker_id: str, lease_s: float) -> list[str]:
        if self.failing:
            raise ConnectionError("heartbeat: connection reset (injected)")
        if self.hanging:
            await asyncio.Event().wait()
        return await self._backend.heartbeat(tokens, worker_id, lease_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def spin_until_killed(payload: dict[str, Any]) -> None:
    """A cpu task (process pool): writes its pid to ``payload["pid_file"]``, then computes
    for up to ``payload["spin_s"]`` seconds."""
    import os

    # Written aside then renamed: a reader polling for the file never sees it empty.
    target = Path(payload["pid_file"])
    aside = target.with_name(f".{target.name}.tmp")
    aside.write_text(str(os.getpid()))
    aside.replace(target)
    deadline = time.monotonic() + payload["spin_s"]
    while time.monotonic() < deadline:
        pass
