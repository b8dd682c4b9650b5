"""The Python ``enqueue`` API of a SQLite queue file (the ``sqlite_queue`` source's input).

Producers put messages in with ``SqliteQueue.enqueue`` (synchronous, thread-safe) or
``AsyncSqliteQueue.enqueue``; the ``sqlite_queue`` source (``source_queue.py``) claims them
with a lease, and deletes them once every sink wrote them.

The table and every statement on it are the SQLite job-queue backend's
(``syncworker.queue.sqlite``): a message is a job of task ``message`` with no attempt limit,
so pipelines and job workers share one SQLite queue implementation. Ids only grow, so
messages are claimed in enqueue order and a nacked one keeps its place.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from syncworker.connectors.sqlite.client import connect
from syncworker.core import jsonvalue
from syncworker.errors import ConnectionFailed
from syncworker.queue.sqlite import (
    SqliteQueueBackend,
    Statements,
    count_backlog,
    create_schema,
    insert_messages,
    wake_waiters,
)

DEFAULT_TABLE = "syncworker_queue"
"""The message table's name when a config names none (the job backend's is another)."""

Payload = bytes | bytearray | memoryview | str | Mapping[str, Any]
"""A message: raw bytes, text (stored as UTF-8) or a mapping (stored as a JSON object)."""


def encode_payload(message: Payload) -> bytes:
    """The stored bytes of one message; ``TypeError`` for anything but bytes, str or a mapping."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, Mapping):
        # Exact: integers beyond 64 bits and Decimal keep their digits.
        return jsonvalue.dumps(message if isinstance(message, dict) else dict(message))
    raise TypeError(f"queue message must be bytes, str or a mapping, got {type(message).__name__}")


def encode_all(messages: Payload | Iterable[Payload]) -> list[bytes]:
    """Every message's stored bytes; ``TypeError`` (nothing kept) at the first bad one."""
    # A lone payload is iterable too (bytes by int, str by char, a dict by key): treat it as
    # one message rather than silently enqueueing its pieces.
    if isinstance(messages, bytes | bytearray | memoryview | str | Mapping):
        return [encode_payload(messages)]
    return [encode_payload(message) for message in messages]


def _streams_arg(stream: str | Iterable[str] | None) -> list[str] | None:
    if stream is None:
        return None
    return [stream] if isinstance(stream, str) else list(stream)


class SqliteQueue:
    """The synchronous producer API of a SQLite queue file (thread-safe).

    >>> with SqliteQueue("queue.db") as queue:
    ...     queue.enqueue([{"id": 1, "text": "hi"}], stream="in")
    1
    """

    def __init__(self, path: str | Path, *, table: str = DEFAULT_TABLE) -> None:
        self.path = Path(path)
        self.table = table
        self._statements = Statements.for_table(table)
        self._lock = threading.Lock()
        try:
            self._conn = connect(self.path, check_same_thread=False)
            create_schema(self._conn, self._statements)
        except (sqlite3.Error, OSError) as exc:
            raise ConnectionFailed(f"sqlite queue {str(self.path)!r}: cannot open: {exc}") from exc

    def enqueue(self, messages: Payload | Iterable[Payload], *, stream: str = "default") -> int:
        """Append ``messages`` (one payload or an iterable of them) to ``stream`` atomically.

        Returns how many were enqueued. Raises ``TypeError`` (nothing enqueued) when a message
        is not bytes, str or a mapping, and ``sqlite3.Error`` when the database fails.
        """
        payloads = encode_all(messages)
        with self._lock:
            count = insert_messages(self._conn, self._statements, payloads, stream, time.time())
        if count:
            wake_waiters(self.path, self.table, [stream])  # sources waiting in this process
        return count

    def backlog(self, stream: str | Iterable[str] | None = None) -> int:
        """How many messages (of one stream, several, or all) are waiting to be claimed now."""
        streams = _streams_arg(stream)
        with self._lock:
            return count_backlog(self._conn, self._statements, streams, time.time())

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSqliteQueue:
    """``SqliteQueue`` for asyncio code: each call is one hop to the connection's own thread.

    >>> async with AsyncSqliteQueue("queue.db") as queue:
    ...     await queue.enqueue([b"raw bytes", "text"], stream="in")
    """

    def __init__(self, path: str | Path, *, table: str = DEFAULT_TABLE) -> None:
        self.path = Path(path)
        self.table = table
        self._backend = SqliteQueueBackend(self.path, table=table)

    async def open(self) -> None:
        """Open the file and create the table if missing; ``ConnectionFailed`` if it cannot."""
        await self._backend.open()

    async def enqueue(
        self, messages: Payload | Iterable[Payload], *, stream: str = "default"
    ) -> int:
        """See ``SqliteQueue.enqueue``; opens the queue on first use. ``ConnectorError``
        when the database fails."""
        payloads = encode_all(messages)
        if not self._backend.is_open:
            await self.open()
        return await self._backend.enqueue_messages(payloads, stream)

    async def backlog(self, stream: str | Iterable[str] | None = None) -> int:
        """See ``SqliteQueue.backlog``."""
        if not self._backend.is_open:
            await self.open()
        return await self._backend.backlog(_streams_arg(stream))

    async def close(self) -> None:
        await self._backend.close()

    async def __aenter__(self) -> AsyncSqliteQueue:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
