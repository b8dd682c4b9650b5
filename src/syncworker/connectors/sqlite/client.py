"""Shared SQLite plumbing for the embedded connectors: connect, transactions, errors, threads.

Every connection runs in WAL mode (readers never block the writer, and a queue file can be
shared by several worker processes), with a busy timeout (a competing writer makes us wait
instead of failing at once) and ``synchronous=NORMAL`` (a commit survives a process crash;
only a power loss can drop the last commits, which at-least-once delivery redelivers).

Why not aiosqlite: it hops to its thread once per statement (``BEGIN``, ``execute``,
``fetchall``, ``COMMIT``), so a claim or a batch write is several event-loop round trips and
other coroutines can run between the statements of one transaction. ``SqliteClient`` gives each
connection ONE dedicated thread and runs a whole unit of work (a function taking the
connection) there in a single hop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from syncworker.errors import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectorError,
    RetryableError,
    SyncWorkerError,
)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
"""How long a statement waits for another connection's write lock before failing."""

_LOCKED = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_UNREACHABLE = {
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_PERM",
    "SQLITE_AUTH",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
}


def check_identifier(name: str) -> str:
    """``name`` unchanged if it can be quoted as an SQL identifier; ``ValueError`` otherwise.

    For config validators: a double quote or NUL could break out of the quoting.
    """
    if not name or '"' in name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}: must be non-empty, without '\"' or NUL")
    return name


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (validated by ``check_identifier``)."""
    return f'"{check_identifier(name)}"'


def connect(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit, see ``transaction``) with
    WAL, a busy timeout and ``synchronous=NORMAL``. Creates the parent directory."""
    db_path = Path(path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=check_same_thread)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock up front, so the busy timeout applies; a deferred
    transaction that reads first can fail with SQLITE_BUSY at its first write in WAL mode.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def dependency_error(exc: sqlite3.Error, context: str) -> SyncWorkerError | None:
    """The syncworker error for ``exc`` when the database itself failed (locked, cannot open,
    disk full, schema gone), or ``None`` when the data is at fault (a constraint, a value
    that cannot be bound), which the caller re-raises unchanged so the runtime bisects."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    base = "_".join(code.split("_")[:2])
    if base in _LOCKED:
        return RetryableError(f"{context}: database is locked: {exc}")
    if base in _UNREACHABLE:
        return ConnectionFailed(f"{context}: database unavailable: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return ConnectorError(f"{context}: {exc}")
    return None


class SqliteClient:
    """One sqlite3 connection owned by one dedicated thread.

    ``run(fn)`` calls ``fn(connection)`` on that thread: a whole transaction is one hop off the
    event loop, and units of work never interleave.
    """

    def __init__(self, path: str | Path, *, label: str) -> None:
        self.path = Path(path)
        self.label = label
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    async def open(self, setup: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Connect on the dedicated thread and run ``setup`` (create tables, recover) there.

        Raises ``ConnectionFailed`` when the file cannot be opened; errors ``setup`` raises on
        purpose (``SyncWorkerError``) pass through unchanged.
        """
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.label}")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(executor, self._connect, setup)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise ConnectionFailed(f"{self.label}: cannot open: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    def _connect(self, setup: Callable[[sqlite3.Connection], None] | None) -> sqlite3.Connection:
        conn = connect(self.path)
        try:
            if setup is not None:
                setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread.

        Database failures become ``RetryableError`` (locked) or ``ConnectionFailed`` /
        ``ConnectorError``; data errors (``IntegrityError``, ``OverflowError``, ...) are raised
        unchanged. Raises ``ConnectionClosed`` when the client is not open.
        """
        if self._executor is None or self._conn is None:
            raise ConnectionClosed(f"{self.label}: not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, self._conn)
        except sqlite3.Error as exc:
            translated = dependency_error(exc, self.label)
            if translated is None:
                raise
            raise translated from exc

    async def close(self) -> None:
        """Close the connection on its thread (after queued work), then end the thread."""
        executor, conn = self._executor, self._conn
        self._executor, self._conn = None, None
        if executor is None:
            return
        try:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        finally:
            # The close was the last job queued, so the thread is idle: nothing to wait for.
            executor.shutdown(wait=False)
