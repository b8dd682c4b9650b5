"""A PostgreSQL advisory lock: a session-level ``pg_try_advisory_lock`` held on a dedicated
connection, with a fencing token from a counter row bumped on every acquisition.

The session holds the lock as long as it lives: renewing is checking that the connection
still answers. A holder that dies (even SIGKILL) closes its socket, the server ends the
session and the lock is free at once; ``ttl`` only sets how often the holder checks.
"""

from __future__ import annotations

from typing import Any

import psycopg

from syncworker.coord.base import holder_id
from syncworker.errors import ConnectionFailed
from syncworker.observe.logging import Identifiers, redact_url

_FENCING_TABLE = """
CREATE TABLE IF NOT EXISTS syncworker_lock_fencing (
    key text PRIMARY KEY,
    token bigint NOT NULL
)"""
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"
_NEXT_TOKEN = (
    "INSERT INTO syncworker_lock_fencing (key, token) VALUES (%s, 1) "
    "ON CONFLICT (key) DO UPDATE SET token = syncworker_lock_fencing.token + 1 "
    "RETURNING token"
)


class PostgresAdvisoryLock:
    def __init__(self, url: str, key: str, ttl_s: float) -> None:
        self.key = key
        self.ttl_s = ttl_s
        self.holder_id = holder_id()
        self.token: int | None = None
        self._url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=10,
                    application_name=f"syncworker-lock:{self.holder_id}"[:63],
                )
                await self._conn.execute(_FENCING_TABLE)
            except psycopg.Error as exc:
                raise self._failed(exc) from exc
        return self._conn

    async def acquire(self) -> int | None:
        conn = await self._connection()
        try:
            row = await (await conn.execute(_TRY_LOCK, (self.key,))).fetchone()
            if not row or not row[0]:
                return None
            token_row = await (await conn.execute(_NEXT_TOKEN, (self.key,))).fetchone()
        except psycopg.Error as exc:
            await self._drop()
            raise self._failed(exc) from exc
        assert token_row is not None
        self.token = int(token_row[0])
        return self.token

    async def renew(self) -> bool:
        if self.token is None or self._conn is None:
            return False
        try:
            await self._conn.execute("SELECT 1")
        except psycopg.Error:
            # The session is gone, and the server released its lock with it.
            await self._drop()
            return False
        return True

    async def release(self) -> None:
        if self.token is None or self._conn is None:
            return
        self.token = None
        try:
            await self._conn.execute(_UNLOCK, (self.key,))
        except psycopg.Error:
            await self._drop()

    async def holder(self) -> str | None:
        return self.holder_id if self.token is not None else None

    async def close(self) -> None:
        await self.release()
        await self._drop()

    def describe(self) -> dict[str, Any]:
        # Identifiers: the key names the lock and the token is a fencing counter, so status
        # shows them instead of masking them as secrets.
        return Identifiers(
            {
                "backend": "postgres",
                "key": self.key,
                "held": self.token is not None,
                "token": self.token,
                "holder": self.holder_id if self.token else None,
            }
        )

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.token = None
        if conn is not None and not conn.closed:
            await conn.close()

    def _failed(self, exc: Exception) -> ConnectionFailed:
        return ConnectionFailed(
            f"lock {self.key!r} on {redact_url(self._url)}: "
            f"{type(exc).__name__}: {redact_url(str(exc))}"
        )
