"""The plumbing every fake server shares: a Starlette app served by uvicorn on 127.0.0.1, any
free port, as a task in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the test runner owns SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LocalServer:
    """Subclasses build their app in ``build_app``; ``release`` ends requests held to hang."""

    label = "fake server"

    def __init__(self) -> None:
        self.port = 0
        self.release = asyncio.Event()
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    def build_app(self) -> Starlette:
        raise NotImplementedError

    async def start(self) -> None:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
        # without it every small answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Any free port the first time; the same one again after stop(), so a test can
        # restart the server under a client that keeps its address.
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.release.clear()
        config = uvicorn.Config(
            self.build_app(),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=self.label)
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"{self.label} did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.release.set()
        server, task = self._server, self._task
        self._server, self._task = None, None
        if server is None or task is None:
            return
        server.should_exit = True
        await task

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
