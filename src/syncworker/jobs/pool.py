"""The process pool cpu tasks run in, recyclable when a job overruns its timeout (a running
process cannot be cancelled, only killed)."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import structlog

log = structlog.get_logger("syncworker.jobs")


class PoolRecycled(Exception):
    """The job's process was killed because the pool was recycled for another job's
    timeout (or at shutdown): not the job's fault, so it is handed back, not failed."""


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


class ProcessPool:
    """A lazily started ``ProcessPoolExecutor`` (forkserver: no fork of a threaded parent).

    ``run`` awaits one call in a child process. ``recycle`` kills the children (the calls in
    flight fail with ``PoolRecycled``) and starts afresh on the next ``run``.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            self._executor = ProcessPoolExecutor(self.max_workers, mp_context=context)
        return self._executor

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        generation = self._generation
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool(), _call, fn, args)
        except BrokenProcessPool as exc:
            if generation != self._generation:
                raise PoolRecycled("the process pool was recycled") from exc
            self._discard()  # a child died on its own (killed, out of memory): start afresh
            raise

    def recycle(self) -> None:
        """Kill every child now; calls in flight end with ``PoolRecycled``."""
        if self._executor is None:
            return
        self._generation += 1
        log.warning("job_pool_recycled", processes=len(self._processes()))
        for process in self._processes():
            process.kill()
        self._discard()

    def _processes(self) -> list[Any]:
        # The executor has no public way to kill its children; its own shutdown waits for
        # them, which is what a timed-out job must not do.
        procs = getattr(self._executor, "_processes", None) or {}
        return list(procs.values())

    def _discard(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Kill the children (shutdown: their jobs were cancelled and handed back)."""
        self.recycle()
