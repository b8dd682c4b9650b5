"""A LISTENing connection kept up by a background task, with exponential backoff.

Used by ``pg_table``: the connection only wakes the source (the change log is the truth), so
losing it loses nothing but latency; what matters is that the loss is seen at once, logged
with its reason, reported, and followed by reconnect attempts, and that every reconnect is
announced (the source then runs a lookback and drains the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql

from syncworker.connectors.postgres.client import Connection, ConnectSettings, connect, describe
from syncworker.errors import SyncWorkerError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnect attempts: ``initial_s`` times ``multiplier`` per failed
    attempt, at most ``max_s``; after ``max_attempts`` failures the listener has given up
    (it reports itself unhealthy) and keeps trying every ``max_s``."""

    max_attempts: int = 10
    initial_s: float = 1.0
    max_s: float = 30.0
    multiplier: float = 2.0

    def delay_s(self, failures: int) -> float:
        if failures >= self.max_attempts:
            return self.max_s
        return min(self.max_s, self.initial_s * self.multiplier ** max(0, failures - 1))


class Listener:
    """LISTEN on ``channel`` over a dedicated connection; ``on_notify`` is called with the
    payload of every notification, ``on_reconnect`` after a connection replaced a lost (or
    never made) one, ``on_error`` (awaited) with each failure's one-line reason."""

    def __init__(
        self,
        settings: ConnectSettings,
        channel: str,
        backoff: Backoff,
        *,
        source: str,
        label: str,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None],
        on_error: Callable[[str, int], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._backoff = backoff
        self._source = source
        self._label = label
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._on_error = on_error
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        self.failures = 0
        self.reconnects = 0
        self.gave_up = False
        self.last_error: str | None = None
        self.lost_at: float | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def backend_pid(self) -> int | None:
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def start(self) -> None:
        """Try to connect once now (a failure is logged, not raised), then keep the
        connection up in a background task until ``stop``."""
        if self._task is not None:
            return
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name=f"pg_table-listen:{self._source}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    def status(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "connected": self.connected,
            "channel": self._channel,
            "reconnect_attempts": self.failures,
            "max_attempts": self._backoff.max_attempts,
            "reconnects": self.reconnects,
            "gave_up": self.gave_up,
            "last_error": self.last_error,
            "down_since": None if self.connected else self.lost_at,
        }

    async def _run(self) -> None:
        while True:
            if not self.connected and not await self._attempt():
                await asyncio.sleep(self._backoff.delay_s(self.failures))
                continue
            conn = self._conn
            assert conn is not None
            try:
                async for notify in conn.notifies():
                    self._on_notify(notify.payload)
            except psycopg.Error as exc:
                await self._lost(describe(exc))

    async def _attempt(self) -> bool:
        """One connect + LISTEN; False (logged, reported, counted) when it fails."""
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s + 1.0):
                conn = await connect(self._settings, self._label)
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                except BaseException:
                    await conn.close()
                    raise
        except (SyncWorkerError, psycopg.Error, OSError, TimeoutError) as exc:
            await self._failed(exc)
            return False
        self._conn = conn
        if self._ever_connected:
            self.reconnects += 1
            log.info(
                "pg_table_reconnected",
                source=self._source,
                channel=self._channel,
                attempts=self.failures + 1,
                down_s=None if self.lost_at is None else round(time.time() - self.lost_at, 3),
            )
        if self._ever_connected or self.failures:
            self._on_reconnect()
        self._ever_connected = True
        self.failures = 0
        self.gave_up = False
        self.lost_at = None
        return True

    async def _failed(self, exc: BaseException) -> None:
        reason = describe(exc) if isinstance(exc, psycopg.Error) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TimeoutError):
            reason = f"connecting took longer than {self._settings.connect_timeout_s:g} s"
        self.failures += 1
        self.last_error = reason
        self.lost_at = self.lost_at or time.time()
        log.warning(
            "pg_table_reconnect_failed",
            source=self._source,
            channel=self._channel,
            attempt=self.failures,
            max_attempts=self._backoff.max_attempts,
            error=reason,
            retry_in_s=self._backoff.delay_s(self.failures),
        )
        if self.failures >= self._backoff.max_attempts and not self.gave_up:
            self.gave_up = True
            log.error(
                "pg_table_listener_gave_up",
                source=self._source,
                channel=self._channel,
                attempts=self.failures,
                retry_every_s=self._backoff.max_s,
                error=reason,
                action="changes are still read by polling the change log; check the database",
            )
        await self._on_error(f"reconnect attempt {self.failures} failed: {reason}", self.failures)

    async def _lost(self, reason: str) -> None:
        self.last_error = reason
        self.lost_at = time.time()
        log.warning(
            "pg_table_listen_lost", source=self._source, channel=self._channel, error=reason
        )
        await self._close()
        await self._on_error(f"listening connection lost: {reason}", 0)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
