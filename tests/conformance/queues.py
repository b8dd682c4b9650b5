"""The job-queue backends under the conformance suite: one harness per backend.

``new()`` opens another instance on the same storage (another worker's view), so cases can
check what two workers see. A backend module that is missing fails its cases; it is never
skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncworker.queue.base import QueueBackend
from tests.integration.conftest import REDIS_URL

BACKENDS = ["memory", "sqlite", "postgres", "redis"]


def _backend_class(module: str, name: str) -> Callable[..., Any]:
    try:
        return getattr(importlib.import_module(f"syncworker.queue.{module}"), name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"queue backend syncworker.queue.{module}.{name} is missing: {exc}")


class QueueHarness:
    """Builds instances of one backend on storage only this test uses."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.kind = kind
        self._shared: QueueBackend | None = None
        if kind == "memory":
            self._make = lambda: self._memory()
        elif kind == "sqlite":
            cls = _backend_class("sqlite", "SqliteQueueBackend")
            path = tmp_path / "jobs.db"
            self._make = lambda: cls(path)
        elif kind == "postgres":
            cls = _backend_class("postgres", "PostgresQueueBackend")
            url = request.getfixturevalue("pg_url")
            self._make = lambda: cls(url, schema="swconf_jobs")
        elif kind == "redis":
            cls = _backend_class("redis", "RedisQueueBackend")
            prefix = request.getfixturevalue("redis_prefix") + "jobs"
            self._make = lambda: cls(REDIS_URL, prefix=prefix)
        else:
            raise ValueError(kind)
        self.opened: list[QueueBackend] = []

    def _memory(self) -> QueueBackend:
        # One store in memory: every "instance" is the same object.
        if self._shared is None:
            cls = _backend_class("memory", "MemoryQueueBackend")
            self._shared = cls()
        return self._shared

    @property
    def shares_instances(self) -> bool:
        return self.kind == "memory"

    async def new(self) -> QueueBackend:
        backend: QueueBackend = self._make()
        if backend not in self.opened:
            await backend.open()
            self.opened.append(backend)
        return backend

    async def close(self) -> None:
        for backend in reversed(self.opened):
            await backend.close()
        self.opened.clear()
