"""The SQLite queue table and the Python ``enqueue`` API that fills it.

Producers put messages in with ``SqliteQueue.enqueue`` (synchronous, thread-safe) or
``AsyncSqliteQueue.enqueue``; the ``sqlite_queue`` source (``source_queue.py``) claims them
with a lease, and deletes them once every sink wrote them.

A row is available when ``locked_until <= now``: new rows have ``locked_until = 0``, a claim
sets it to ``now + lease`` with a fresh ``claim_id``, an ack deletes the rows of that claim and
a nack resets them. Ids only grow, so rows are claimed in enqueue order and a nacked row keeps
its place.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from syncworker.connectors.sqlite.client import SqliteClient, connect, quote_identifier, transaction
from syncworker.core import jsonvalue
from syncworker.errors import ConnectionFailed

DEFAULT_TABLE = "syncworker_queue"

Payload = bytes | bytearray | memoryview | str | Mapping[str, Any]
"""A message: raw bytes, text (stored as UTF-8) or a mapping (stored as a JSON object)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL,
    attempts INTEGER DEFAULT 0,
    claim_id TEXT,
    owner TEXT,
    locked_until REAL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (claim_id) WHERE claim_id IS NOT NULL;
"""


@dataclass(frozen=True, slots=True)
class QueueStatements:
    """Every statement on one queue table; the table name is the only thing spliced in, quoted.

    ``claim`` and ``backlog`` take the stream filter as ``{streams}``, filled by
    ``stream_filter`` with placeholders only.
    """

    schema: str
    insert: str
    claim: str
    ack: str
    nack: str
    backlog: str
    backlog_all: str
    in_flight: str
    leased_owners: str
    release_owner: str

    @classmethod
    def for_table(cls, table: str) -> QueueStatements:
        t = quote_identifier(table)
        return cls(
            schema=_SCHEMA.format(table=t, index=quote_identifier(f"{table}_in_flight")),
            insert=f"INSERT INTO {t} (stream, payload, enqueued_at) VALUES (?, ?, ?)",
            claim=(
                f"UPDATE {t} SET claim_id = ?, owner = ?, locked_until = ?, "
                f"attempts = attempts + 1 WHERE id IN (SELECT id FROM {t} "
                f"WHERE locked_until <= ?{{streams}} ORDER BY id LIMIT ?) "
                # As BLOBs: TEXT that is not valid UTF-8 (another program's row) would
                # make sqlite3 raise for the whole claim instead of one wrapped record.
                "RETURNING id, CAST(stream AS BLOB), CAST(payload AS BLOB), attempts, "
                "enqueued_at"
            ),
            ack=f"DELETE FROM {t} WHERE claim_id = ?",
            nack=(
                f"UPDATE {t} SET claim_id = NULL, owner = NULL, locked_until = 0 WHERE claim_id = ?"
            ),
            backlog=f"SELECT count(*) FROM {t} WHERE locked_until <= ?{{streams}}",
            backlog_all=(
                f"SELECT (SELECT count(*) FROM {t}) - (SELECT count(*) FROM {t} "
                "WHERE claim_id IS NOT NULL AND locked_until > ?)"
            ),
            in_flight=(f"SELECT count(*) FROM {t} WHERE claim_id IS NOT NULL AND locked_until > ?"),
            # ``claim_id IS NOT NULL`` lets SQLite walk the claim_id index: in-flight rows only.
            leased_owners=(
                f"SELECT DISTINCT owner FROM {t} "
                "WHERE claim_id IS NOT NULL AND owner IS NOT NULL AND locked_until > ?"
            ),
            release_owner=(
                f"UPDATE {t} SET claim_id = NULL, owner = NULL, locked_until = 0 "
                "WHERE claim_id IS NOT NULL AND owner = ?"
            ),
        )


def stream_filter(streams: list[str] | None) -> str:
    """The ``AND stream IN (?, ...)`` clause for ``streams`` (empty for all streams)."""
    if streams is None:
        return ""
    return f" AND stream IN ({', '.join('?' * len(streams))})"


def create_queue_table(conn: sqlite3.Connection, statements: QueueStatements) -> None:
    """Create the queue table and its index if missing (safe to race with other processes)."""
    conn.executescript(statements.schema)


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


def _as_list(messages: Payload | Iterable[Payload]) -> list[Payload]:
    # A lone payload is iterable too (bytes by int, str by char, a dict by key): treat it as
    # one message rather than silently enqueueing its pieces.
    if isinstance(messages, bytes | bytearray | memoryview | str | Mapping):
        return [messages]
    return list(messages)


def insert_messages(
    conn: sqlite3.Connection,
    statements: QueueStatements,
    messages: Payload | Iterable[Payload],
    stream: str,
) -> int:
    """Insert ``messages`` on ``stream`` in one transaction; returns how many."""
    now = time.time()
    rows = [(stream, encode_payload(message), now) for message in _as_list(messages)]
    if not rows:
        return 0
    with transaction(conn):
        conn.executemany(statements.insert, rows)
    return len(rows)


def count_backlog(
    conn: sqlite3.Connection, statements: QueueStatements, streams: list[str] | None
) -> int:
    """How many messages (of ``streams``, or all) are claimable now."""
    if streams is None:
        # All rows less the leased ones: a bare count(*) walks the table three times faster
        # than testing locked_until on every row, and the leased ones come off the index.
        row = conn.execute(statements.backlog_all, (time.time(),)).fetchone()
        return int(row[0])
    sql = statements.backlog.format(streams=stream_filter(streams))
    row = conn.execute(sql, (time.time(), *streams)).fetchone()
    return int(row[0])


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
        self._statements = QueueStatements.for_table(table)
        self._lock = threading.Lock()
        try:
            self._conn = connect(self.path, check_same_thread=False)
            create_queue_table(self._conn, self._statements)
        except (sqlite3.Error, OSError) as exc:
            raise ConnectionFailed(f"sqlite queue {str(self.path)!r}: cannot open: {exc}") from exc

    def enqueue(self, messages: Payload | Iterable[Payload], *, stream: str = "default") -> int:
        """Append ``messages`` (one payload or an iterable of them) to ``stream`` atomically.

        Returns how many were enqueued. Raises ``TypeError`` (nothing enqueued) when a message
        is not bytes, str or a mapping, and ``sqlite3.Error`` when the database fails.
        """
        with self._lock:
            return insert_messages(self._conn, self._statements, messages, stream)

    def backlog(self, stream: str | Iterable[str] | None = None) -> int:
        """How many messages (of one stream, several, or all) are waiting to be claimed now."""
        with self._lock:
            return count_backlog(self._conn, self._statements, _streams_arg(stream))

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
        self._statements = QueueStatements.for_table(table)
        self._client = SqliteClient(self.path, label=f"sqlite queue {str(self.path)!r}")

    async def open(self) -> None:
        """Open the file and create the table if missing; ``ConnectionFailed`` if it cannot."""
        await self._client.open(lambda conn: create_queue_table(conn, self._statements))

    async def enqueue(
        self, messages: Payload | Iterable[Payload], *, stream: str = "default"
    ) -> int:
        """See ``SqliteQueue.enqueue``; opens the queue on first use."""
        if not self._client.is_open:
            await self.open()
        return await self._client.run(
            lambda conn: insert_messages(conn, self._statements, messages, stream)
        )

    async def backlog(self, stream: str | Iterable[str] | None = None) -> int:
        """See ``SqliteQueue.backlog``."""
        if not self._client.is_open:
            await self.open()
        streams = _streams_arg(stream)
        return await self._client.run(lambda conn: count_backlog(conn, self._statements, streams))

    async def close(self) -> None:
        await self._client.close()

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
