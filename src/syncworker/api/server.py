"""The control API served by uvicorn inside the engine's event loop, as an engine service."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from syncworker.api.app import create_app
from syncworker.core.engine import Engine
from syncworker.errors import ConnectionFailed
from syncworker.observe.history import History
from syncworker.observe.metrics import EngineMetrics

log = structlog.get_logger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the engine owns SIGTERM/SIGINT and stops
    the API as one of its services."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiServer:
    """Serves ``create_app(engine)`` on ``host:port`` (port 0: any free port, see ``port``).

    With no token the API has no auth, so it binds to loopback only, whatever ``host`` says,
    and logs that it did.
    """

    name = "api"

    def __init__(
        self, engine: Engine, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None
    ) -> None:
        self.engine = engine
        # A blank token (an unset variable, a stray newline) is no token: no auth, loopback.
        self.token = (token or "").strip() or None
        self.host = host
        self.port = port
        if self.token is None and not is_loopback(host):
            log.warning(
                "api_loopback_only",
                requested_host=host,
                host="127.0.0.1",
                reason="no api.token configured",
            )
            self.host = "127.0.0.1"
        elif self.token is None:
            log.warning(
                "api_without_token", host=host, reason="no api.token configured: loopback only"
            )
        self.metrics = EngineMetrics(engine)
        self.history = History(engine)
        self.app = create_app(
            engine,
            token=self.token,
            metrics=self.metrics,
            allowed_hosts=(self.host,),
            history=self.history,
        )
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        sock = self._bind()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConnectionFailed(f"api {self.url}: server did not start")
            await asyncio.sleep(0.01)
        # A bool, and not named "auth" (a secret name): the line must tell whether auth is on.
        log.info("api_listening", url=self.url, token_required=self.token is not None)

    def _bind(self) -> socket.socket:
        # Bound here, not by uvicorn, so port 0 gives the real port before serving starts.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP named, not 0: asyncio turns on TCP_NODELAY only for sockets whose proto
        # says TCP (accepted ones inherit it); without it, a response written in two parts
        # waited for the client's delayed ACK, 40 ms on every kept-alive request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConnectionFailed(
                f"api {self.host}:{self.port}: cannot listen: {exc.strerror}"
            ) from exc
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server, self._task = None, None
        if server is None or task is None:
            return
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
