"""The SQLite job-queue backend: one table per queue file, shared by every process on the host.

One table holds every job (``stream`` is the job's queue). The table is the same one the
``sqlite_queue`` pipeline source and the producer API (``SqliteQueue``) use, so there is one
SQLite queue implementation; its first columns are those of the older message table, and an
older table is extended in place when opened.

Pipeline messages are the rows of task ``message`` (``MESSAGE_TASK``: what the producer API
and older programs write). The pipeline source claims only those (``claim_messages``, in id
order across streams) and job workers never do (``claim``, ``wait`` and ``counts`` read the
other tasks): a message has no handler to run. The job indexes leave message rows out, so
moving a message costs what it cost in the older table (its row and the claim-id index).

``locked_until`` says when a row may next be claimed: ``run_at`` while delayed or queued, the
lease end while active, the finish time once completed or dead. A claim is one
``UPDATE ... WHERE id IN (SELECT ... ORDER BY priority DESC, run_at, id LIMIT ?) RETURNING``
on the connection's own thread (``SqliteClient``), so two claims (threads, processes) never
take the same row; WAL mode lets readers run beside the one writer.

Time: every decision uses the backend's ``clock`` (Python, epoch seconds); SQLite has no
server clock to disagree with.

Wake-ups (``wait``): an enqueue, release or requeue by any backend on the same file in this
process wakes its waiters at once; other processes' commits are seen by polling
``PRAGMA data_version`` every ``POLL_INTERVAL_S`` (50 ms), which costs no read of the table
unless something changed; and a wait ends by the time the queue's earliest delayed job falls
due (or the earliest lease expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from syncworker.connectors.sqlite.client import (
    SqliteClient,
    check_identifier,
    quote_identifier,
    transaction,
)
from syncworker.core import jsonvalue
from syncworker.errors import ConnectorError, RetryableError
from syncworker.queue.base import Job, JobState, NewJob, Outcome, check_new_job, encode_payload

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_TABLE = "syncworker_jobs"
POLL_INTERVAL_S = 0.05
"""How often ``wait`` looks for commits made by other processes."""
UNLIMITED_ATTEMPTS = 2_147_483_647
"""``max_attempts`` of pipeline messages: the pipeline's retry policy decides, not the queue."""
MESSAGE_TASK = "message"
"""The task name of rows the producer API (``SqliteQueue``) and older programs write."""
_MAX_VARIABLES = 500  # ids per ``IN (...)``: far below SQLite's limit, long lists are chunked

_LIVE = "('delayed', 'queued', 'active')"
_JOBS = f"task <> '{MESSAGE_TASK}'"
"""The rows job workers see; the job indexes are partial on it (see the module docstring)."""
_MESSAGES = f"task = '{MESSAGE_TASK}'"
_OLD_INDEXES = ("claim", "state")  # job indexes that held message rows too (replaced)

# The older message table's columns come first, unchanged: older files gain the rest.
_COLUMNS_V1 = """
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL,
    attempts INTEGER DEFAULT 0,
    claim_id TEXT,
    owner TEXT,
    locked_until REAL DEFAULT 0"""
_COLUMNS_V2 = (
    ("task", f"TEXT NOT NULL DEFAULT '{MESSAGE_TASK}'"),
    ("state", "TEXT NOT NULL DEFAULT 'queued'"),
    ("priority", "INTEGER NOT NULL DEFAULT 0"),
    ("run_at", "REAL NOT NULL DEFAULT 0"),
    ("max_attempts", f"INTEGER NOT NULL DEFAULT {UNLIMITED_ATTEMPTS}"),
    ("unique_key", "TEXT"),
    ("timeout_s", "REAL"),
    ("progress", "BLOB"),
    ("result", "BLOB"),
    ("error", "TEXT"),
    ("stack", "TEXT"),
    ("finished_at", "REAL"),
)

_JOB_COLUMNS = (
    "id, task, stream, CAST(payload AS BLOB), state, priority, run_at, enqueued_at, attempts, "
    "max_attempts, unique_key, timeout_s, owner, locked_until, progress, result, error, stack, "
    "finished_at"
)
JobRow = tuple[Any, ...]
MessageRow = tuple[int, bytes, Any, int, float | None]
"""A claimed message for the pipeline source: ``(id, stream, payload, attempts, enqueued_at)``."""

# A job whose lease expired on its last attempt (the worker died mid-job) goes dead on reclaim.
_EXPIRED_DEAD = "attempts >= max_attempts"


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement on one queue table; only the quoted table name is spliced in."""

    table: str
    schema: tuple[str, ...]
    insert_job: str
    insert_unique: str
    insert_message: str
    held_by_key: str
    next_id: str
    sweep_expired: str
    claim: str
    claim_messages: str
    held: str
    heartbeat: str
    completed: str
    retry: str
    dead: str
    release: str
    progress: str
    get: str
    counts: str
    requeue: str
    prune: str
    next_due: str
    cron_upsert: str
    cron_state: str
    ack_claim: str
    nack_claim: str
    backlog: str
    in_flight: str
    leased_owners: str
    release_owner: str

    @classmethod
    def for_table(cls, table: str) -> Statements:
        t = quote_identifier(table)

        def index(suffix: str) -> str:
            return quote_identifier(f"{table}_{suffix}")

        cron = quote_identifier(f"{table}_cron")
        job_values = (
            "stream, payload, enqueued_at, task, state, priority, run_at, locked_until, "
            "max_attempts, unique_key, timeout_s"
        )
        released = "owner = NULL, claim_id = NULL"
        fence = "WHERE id = ? AND attempts = ? AND owner = ? AND state = 'active'"
        return cls(
            table=table,
            schema=(
                f"CREATE TABLE IF NOT EXISTS {t} ({_COLUMNS_V1},\n"
                + ",\n".join(f"    {name} {decl}" for name, decl in _COLUMNS_V2)
                + ")",
                *(f"DROP INDEX IF EXISTS {index(name)}" for name in _OLD_INDEXES),
                # The claim walks this in claim order; rows leave it when claimed.
                f"CREATE INDEX IF NOT EXISTS {index('job_claim')} ON {t} "
                "(stream, priority DESC, run_at, id) "
                f"WHERE state IN ('queued', 'delayed') AND {_JOBS}",
                # Expired leases, the next due time for ``wait``, counts (covering).
                f"CREATE INDEX IF NOT EXISTS {index('job_state')} ON {t} "
                f"(stream, state, locked_until) WHERE {_JOBS}",
                # The pipeline source acks and nacks a whole claim by its id.
                f"CREATE INDEX IF NOT EXISTS {index('in_flight')} ON {t} (claim_id) "
                "WHERE claim_id IS NOT NULL",
                f"CREATE UNIQUE INDEX IF NOT EXISTS {index('unique')} ON {t} (unique_key) "
                f"WHERE unique_key IS NOT NULL AND state IN {_LIVE}",
                f"CREATE TABLE IF NOT EXISTS {cron} "
                "(name TEXT PRIMARY KEY, last_slot REAL NOT NULL) WITHOUT ROWID",
            ),
            insert_job=f"INSERT INTO {t} (id, {job_values}) VALUES (?{', ?' * 11})",
            insert_unique=(
                f"INSERT INTO {t} (id, {job_values}) VALUES (?{', ?' * 11}) ON CONFLICT DO NOTHING"
            ),
            # The rest is the columns' defaults: task message, queued, due since 0 (locked_until
            # and run_at 0 take no bytes in the row: what a message costs stays small).
            insert_message=f"INSERT INTO {t} (stream, payload, enqueued_at) VALUES (?, ?, ?)",
            held_by_key=f"SELECT id FROM {t} WHERE unique_key = ? AND state IN {_LIVE}",
            next_id=(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0), "
                f"coalesce((SELECT max(id) FROM {t}), 0)) + 1"
            ),
            sweep_expired=(
                f"UPDATE {t} SET "
                f"state = CASE WHEN {_EXPIRED_DEAD} THEN 'dead' ELSE 'queued' END, "
                f"error = CASE WHEN {_EXPIRED_DEAD} "
                "THEN 'lease expired after ' || attempts || ' attempts' ELSE error END, "
                f"finished_at = CASE WHEN {_EXPIRED_DEAD} THEN ?1 END, "
                f"locked_until = CASE WHEN {_EXPIRED_DEAD} THEN ?1 ELSE run_at END, {released} "
                f"WHERE stream = ?2 AND state = 'active' AND locked_until <= ?1 AND {_JOBS} "
                "RETURNING id, state, attempts"
            ),
            claim=(
                f"UPDATE {t} SET state = 'active', owner = ?1, locked_until = ?2, "
                "attempts = attempts + 1, claim_id = NULL "
                f"WHERE id IN (SELECT id FROM {t} WHERE stream = ?3 "
                "AND state IN ('queued', 'delayed') AND run_at <= ?4 AND locked_until <= ?4 "
                f"AND {_JOBS} ORDER BY priority DESC, run_at, id LIMIT ?5) "
                f"RETURNING {_JOB_COLUMNS}"
            ),
            # Enqueue order across streams, as the message source always claimed: a scan by
            # id (NOT INDEXED: a stream filter must not turn it into a sort of the backlog).
            # A message has no attempt limit, so an expired lease is simply claimed again.
            claim_messages=(
                f"UPDATE {t} SET state = 'active', claim_id = ?1, owner = ?2, locked_until = ?3, "
                "attempts = attempts + 1 "
                f"WHERE id IN (SELECT id FROM {t} NOT INDEXED WHERE locked_until <= ?4 "
                f"AND state IN {_LIVE} AND {_MESSAGES}{{streams}} ORDER BY id LIMIT ?5) "
                # As BLOBs: TEXT that is not valid UTF-8 (another program's row) would make
                # sqlite3 raise for the whole claim instead of one wrapped record.
                "RETURNING id, CAST(stream AS BLOB), CAST(payload AS BLOB), attempts, enqueued_at"
            ),
            held=f"SELECT id, attempts FROM {t} WHERE owner = ? AND state = 'active' AND id IN ",
            heartbeat=f"UPDATE {t} SET locked_until = ? {fence}",
            completed=(
                f"UPDATE {t} SET state = 'completed', result = ?, finished_at = ?, "
                f"locked_until = ?, {released} {fence}"
            ),
            retry=(
                f"UPDATE {t} SET state = 'delayed', run_at = ?, locked_until = ?, error = ?, "
                f"stack = ?, {released} {fence}"
            ),
            dead=(
                f"UPDATE {t} SET state = 'dead', error = ?, stack = ?, finished_at = ?, "
                f"locked_until = ?, {released} {fence}"
            ),
            release=(
                f"UPDATE {t} SET state = 'queued', attempts = attempts - 1, "
                f"locked_until = run_at, {released} {fence}"
            ),
            progress=f"UPDATE {t} SET progress = ? {fence}",
            get=f"SELECT {_JOB_COLUMNS} FROM {t}",
            counts=(
                "SELECT stream, CASE WHEN state = 'delayed' AND locked_until <= ? THEN 'queued' "
                f"ELSE state END, count(*) FROM {t} WHERE {_JOBS} GROUP BY 1, 2"
            ),
            requeue=(
                f"UPDATE OR IGNORE {t} SET state = 'queued', attempts = 0, run_at = ?, "
                f"locked_until = ?, finished_at = NULL, {released} WHERE id = ? AND state = 'dead'"
            ),
            prune=f"DELETE FROM {t} WHERE state = ? AND finished_at < ?",
            next_due=(
                "SELECT "
                + ", ".join(
                    f"(SELECT min(locked_until) FROM {t} "
                    f"WHERE stream = ?1 AND state = '{state}' AND {_JOBS})"
                    for state in ("queued", "delayed", "active")
                )
            ),
            cron_upsert=(
                f"INSERT INTO {cron} (name, last_slot) VALUES (?, ?) ON CONFLICT (name) "
                f"DO UPDATE SET last_slot = excluded.last_slot "
                f"WHERE excluded.last_slot > {cron}.last_slot RETURNING name"
            ),
            cron_state=f"SELECT name, last_slot FROM {cron}",
            ack_claim=f"DELETE FROM {t} WHERE claim_id = ? AND state = 'active'",
            # A nack is a failed delivery: the attempt stays counted (unlike ``release``).
            nack_claim=(
                f"UPDATE {t} SET state = 'queued', locked_until = run_at, {released} "
                "WHERE claim_id = ? AND state = 'active'"
            ),
            backlog=(
                f"SELECT count(*) FROM {t} "
                f"WHERE state IN {_LIVE} AND locked_until <= ? AND {_MESSAGES}"
            ),
            # ``claim_id IS NOT NULL`` walks the claim-id index: in-flight rows only.
            in_flight=(f"SELECT count(*) FROM {t} WHERE claim_id IS NOT NULL AND locked_until > ?"),
            leased_owners=(
                f"SELECT DISTINCT owner FROM {t} "
                "WHERE claim_id IS NOT NULL AND owner IS NOT NULL AND locked_until > ?"
            ),
            release_owner=(
                f"UPDATE {t} SET state = 'queued', locked_until = run_at, {released} "
                f"WHERE claim_id IS NOT NULL AND owner = ? AND state IN {_LIVE}"
            ),
        )


def stream_filter(streams: Sequence[str] | None, first: int) -> str:
    """``AND stream IN (?N, ...)`` for ``streams`` numbered from ``first`` (empty for all)."""
    if streams is None:
        return ""
    marks = ", ".join(f"?{first + n}" for n in range(len(streams)))
    return f" AND stream IN ({marks})"


# --- work done on the connection's thread (also by the synchronous producer API) -----------


def create_schema(conn: sqlite3.Connection, statements: Statements) -> None:
    """Create the table, its indexes and the cron table if missing; extend an older message
    table with the job columns. One write transaction, so processes racing to open agree."""
    with transaction(conn):
        conn.execute(statements.schema[0])
        _upgrade_v1(conn, statements.table)
        for statement in statements.schema[1:]:
            conn.execute(statement)


def _upgrade_v1(conn: sqlite3.Connection, table: str) -> None:
    t = quote_identifier(table)
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
    missing = [(name, decl) for name, decl in _COLUMNS_V2 if name not in present]
    if not missing:
        return
    for name, decl in missing:
        conn.execute(f"ALTER TABLE {t} ADD COLUMN {name} {decl}")
    # Older rows: due since they were enqueued (kept in order), claimed ones active.
    conn.execute(f"UPDATE {t} SET run_at = coalesce(enqueued_at, 0)")
    conn.execute(f"UPDATE {t} SET state = 'active' WHERE claim_id IS NOT NULL")
    log.info("sqlite_queue_table_upgraded", table=table, columns=[name for name, _ in missing])


def insert_messages(
    conn: sqlite3.Connection, statements: Statements, payloads: list[bytes], stream: str, now: float
) -> int:
    """Queue pipeline messages (task ``message``, due at once, no attempt limit) in one
    transaction; returns how many."""
    rows = [(stream, payload, now) for payload in payloads]
    if not rows:
        return 0
    with transaction(conn):
        conn.executemany(statements.insert_message, rows)
    return len(rows)


def claim_message_rows(
    conn: sqlite3.Connection,
    statements: Statements,
    streams: Sequence[str] | None,
    limit: int,
    owner: str,
    lease_until: float,
    now: float,
    claim_id: str,
) -> list[MessageRow]:
    """``SqliteQueueBackend.claim_messages`` on the connection's thread (the pipeline source
    turns the rows into records there too, off the event loop)."""
    sql = statements.claim_messages.format(streams=stream_filter(streams, 6))
    params = (claim_id, owner, lease_until, now, limit, *(streams or ()))
    rows: list[MessageRow] = conn.execute(sql, params).fetchall()
    rows.sort(key=_first)  # RETURNING promises no order; a batch keeps enqueue order
    return rows


def count_backlog(
    conn: sqlite3.Connection, statements: Statements, streams: Sequence[str] | None, now: float
) -> int:
    """How many rows (of ``streams``, or all) are claimable now."""
    if streams is None:
        return int(conn.execute(statements.backlog, (now,)).fetchone()[0])
    sql = statements.backlog + " AND stream IN (" + ", ".join("?" * len(streams)) + ")"
    return int(conn.execute(sql, (now, *streams)).fetchone()[0])


def _insert_jobs(
    conn: sqlite3.Connection, statements: Statements, rows: list[tuple[Any, ...]]
) -> list[int]:
    """Insert prepared rows (the ``insert_job`` values without the id) in one transaction.

    Ids are given explicitly from the table's sequence while the write lock is held, so a
    batch is one ``executemany``; a row with a unique key goes alone and may come back as the
    id of the live job holding its key.
    """
    ids: list[int] = []
    with transaction(conn):
        next_id = int(conn.execute(statements.next_id, (statements.table,)).fetchone()[0])
        plain: list[tuple[Any, ...]] = []
        for row in rows:
            unique_key = row[9]
            if unique_key is None:
                plain.append((next_id, *row))
                ids.append(next_id)
                next_id += 1
                continue
            if conn.execute(statements.insert_unique, (next_id, *row)).rowcount == 1:
                ids.append(next_id)
                next_id += 1
            else:
                ids.append(int(conn.execute(statements.held_by_key, (unique_key,)).fetchone()[0]))
        if plain:
            conn.executemany(statements.insert_job, plain)
    return ids


def _held(
    conn: sqlite3.Connection, statements: Statements, tokens: Sequence[tuple[int, int]], owner: str
) -> set[tuple[int, int]]:
    """The tokens ``owner`` still holds (active, at that attempt)."""
    held: set[tuple[int, int]] = set()
    ids = sorted({job_id for job_id, _ in tokens})
    for start in range(0, len(ids), _MAX_VARIABLES):
        chunk = ids[start : start + _MAX_VARIABLES]
        sql = statements.held + "(" + ", ".join("?" * len(chunk)) + ")"
        held.update(conn.execute(sql, (owner, *chunk)).fetchall())
    return held


def _parse_tokens(tokens: Iterable[tuple[str, int]]) -> list[tuple[int, int]]:
    parsed: list[tuple[int, int]] = []
    for job_id, attempt in tokens:
        number = _parse_id(job_id)
        if number is not None:
            parsed.append((number, int(attempt)))
    return parsed


def _parse_id(job_id: str) -> int | None:
    try:
        return int(job_id)
    except (TypeError, ValueError):
        return None


def _encode_value(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    try:
        return jsonvalue.dumps(value)
    except TypeError as exc:  # JSONValueError: no exact JSON form
        raise ValueError(f"job {what} is not JSON: {exc}") from exc


def _decode_value(raw: Any) -> Any:
    if raw is None:
        return None
    return jsonvalue.loads(raw)


def to_job(row: JobRow, now: float) -> Job:
    """A ``Job`` from a ``_JOB_COLUMNS`` row; a delayed job already due reads as queued."""
    (
        job_id,
        task,
        stream,
        payload,
        state,
        priority,
        run_at,
        enqueued_at,
        attempts,
        max_attempts,
        unique_key,
        timeout_s,
        owner,
        locked_until,
        progress,
        result,
        error,
        stack,
        finished_at,
    ) = row
    job_state = JobState(state)
    if job_state is JobState.DELAYED and run_at <= now:
        job_state = JobState.QUEUED
    return Job(
        id=str(job_id),
        task=task,
        queue=stream if isinstance(stream, str) else bytes(stream).decode(errors="replace"),
        data=bytes(payload),
        state=job_state,
        priority=priority,
        run_at=float(run_at),
        enqueued_at=float(enqueued_at or 0.0),
        attempts=attempts,
        max_attempts=max_attempts,
        unique_key=unique_key,
        timeout_s=timeout_s,
        worker=owner if job_state is JobState.ACTIVE else None,
        lease_until=float(locked_until) if job_state is JobState.ACTIVE else None,
        progress=_decode_value(progress),
        result=_decode_value(result),
        error=error,
        stack=stack,
        finished_at=finished_at,
    )


def _claim_order(job: Job) -> tuple[int, float, int]:
    return (-job.priority, job.run_at, int(job.id))


# --- in-process wake-ups --------------------------------------------------------------------


class _Wakers:
    """Waiters per (file, table, queue) in this process; woken from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, str, str], set[asyncio.Future[None]]] = {}

    def add(self, key: tuple[str, str, str], future: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiting.setdefault(key, set()).add(future)

    def discard(self, key: tuple[str, str, str], future: asyncio.Future[None]) -> None:
        with self._lock:
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._waiting[key]

    def wake(self, file_key: tuple[str, str], queues: Iterable[str]) -> None:
        with self._lock:
            futures = [f for q in set(queues) for f in self._waiting.get((*file_key, q), ())]
        for future in futures:
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_WAKERS = _Wakers()


def file_key(path: str | Path, table: str) -> tuple[str, str]:
    """What identifies one queue table in this process (the file's real path, the table)."""
    return (os.path.realpath(path), table)


def wake_waiters(path: str | Path, table: str, queues: Iterable[str]) -> None:
    """Wake this process's ``wait`` calls on ``queues`` of that file's table (any thread)."""
    _WAKERS.wake(file_key(path, table), queues)


# --- the backend ---------------------------------------------------------------------------


class SqliteQueueBackend:
    """``QueueBackend`` on one SQLite table (see the module docstring for the design).

    Besides the protocol, the methods the ``sqlite_queue`` pipeline source uses (claims of
    message rows across streams, acked by claim id): ``claim_messages``, ``ack_claim``,
    ``nack_claim``, ``backlog``, ``in_flight``, ``release_dead_owners``.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        table: str = DEFAULT_TABLE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.table = check_identifier(table)
        self.clock = clock
        self.statements = Statements.for_table(table)
        self._label = f"sqlite queue {str(self.path)!r}"
        self._client = SqliteClient(self.path, label=self._label)
        self._file_key = file_key(self.path, table)
        self._data_version: int | None = None

    @property
    def is_open(self) -> bool:
        return self._client.is_open

    async def open(self) -> None:
        """Open the file (WAL), create or extend the schema. Idempotent; ``ConnectionFailed``
        when the file cannot be opened."""
        if self._client.is_open:
            return
        self._file_key = file_key(self.path, self.table)
        await self._client.open(lambda conn: create_schema(conn, self.statements))

    async def close(self) -> None:
        """Close the connection; held jobs keep their leases."""
        await self._client.close()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread; database failures become
        ``ConnectorError`` (``ConnectionFailed`` when the file is unusable)."""
        try:
            return await self._client.run(fn)
        except RetryableError as exc:  # locked past the busy timeout
            raise ConnectorError(str(exc)) from exc
        except sqlite3.Error as exc:
            raise ConnectorError(f"{self._label}: {exc}") from exc

    def _wake(self, queues: Iterable[str]) -> None:
        _WAKERS.wake(self._file_key, queues)

    # enqueue ---------------------------------------------------------------------------

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[str]:
        """See ``QueueBackend.enqueue_many``: one transaction (one hop), ids in order."""
        if not jobs:
            return []
        rows = self._job_rows(jobs, self.clock())
        ids = await self.run(lambda conn: _insert_jobs(conn, self.statements, rows))
        self._wake(job.queue for job in jobs)
        return [str(job_id) for job_id in ids]

    def _job_rows(self, jobs: Sequence[NewJob], now: float) -> list[tuple[Any, ...]]:
        rows = []
        for job in jobs:
            check_new_job(job)
            try:
                payload = encode_payload(job)
            except TypeError as exc:
                raise ValueError(f"job payload is not JSON: {exc}") from exc
            run_at = now if job.run_at is None else float(job.run_at)
            state = JobState.DELAYED if run_at > now else JobState.QUEUED
            rows.append(
                (
                    job.queue,
                    payload,
                    now,
                    job.task,
                    state.value,
                    job.priority,
                    run_at,
                    run_at,
                    job.max_attempts,
                    job.unique_key,
                    job.timeout_s,
                )
            )
        return rows

    # claim and hold --------------------------------------------------------------------

    async def claim(self, queue: str, limit: int, worker_id: str, lease_s: float) -> list[Job]:
        """See ``QueueBackend.claim``: expired leases of ``queue`` are swept (requeued, or
        dead on their last attempt), then one ``UPDATE ... RETURNING`` takes the jobs."""
        if limit <= 0:
            return []
        now = self.clock()

        def work(conn: sqlite3.Connection) -> tuple[list[JobRow], list[tuple[Any, ...]]]:
            with transaction(conn):
                expired = conn.execute(self.statements.sweep_expired, (now, queue)).fetchall()
                rows = conn.execute(
                    self.statements.claim, (worker_id, now + lease_s, queue, now, limit)
                ).fetchall()
            return rows, expired

        rows, expired = await self.run(work)
        for job_id, state, attempts in expired:
            log.warning(
                "job_lease_expired",
                queue=queue,
                job_id=str(job_id),
                attempts=attempts,
                outcome="dead" if state == "dead" else "requeued",
            )
        jobs = [to_job(row, now) for row in rows]
        jobs.sort(key=_claim_order)  # RETURNING promises no order
        return jobs

    async def heartbeat(
        self, tokens: Sequence[tuple[str, int]], worker_id: str, lease_s: float
    ) -> list[str]:
        """See ``QueueBackend.heartbeat``: one transaction for all tokens."""
        parsed = _parse_tokens(tokens)
        lease_until = self.clock() + lease_s

        def work(conn: sqlite3.Connection) -> set[tuple[int, int]]:
            with transaction(conn):
                held = _held(conn, self.statements, parsed, worker_id)
                conn.executemany(
                    self.statements.heartbeat,
                    [(lease_until, job_id, attempt, worker_id) for job_id, attempt in held],
                )
            return held

        held = await self.run(work) if parsed else set()
        return [job_id for job_id, attempt in tokens if (_parse_id(job_id), attempt) not in held]

    async def finish(self, outcomes: Sequence[Outcome], worker_id: str) -> list[str]:
        """See ``QueueBackend.finish``: the fence is read once, then one ``executemany`` per
        kind of outcome, all in one transaction."""
        if not outcomes:
            return []
        now = self.clock()
        prepared = [(outcome, _parse_id(outcome.job_id)) for outcome in outcomes]
        results = {
            id(o): _encode_value(o.result, "result") for o, _ in prepared if o.kind == "completed"
        }

        def work(conn: sqlite3.Connection) -> list[str]:
            with transaction(conn):
                tokens = [(n, o.attempt) for o, n in prepared if n is not None]
                held = _held(conn, self.statements, tokens, worker_id)
                return self._apply(conn, prepared, held, results, worker_id, now)

        return await self.run(work)

    def _apply(
        self,
        conn: sqlite3.Connection,
        prepared: list[tuple[Outcome, int | None]],
        held: set[tuple[int, int]],
        results: dict[int, bytes | None],
        worker_id: str,
        now: float,
    ) -> list[str]:
        fenced: list[str] = []
        by_kind: dict[str, list[tuple[Any, ...]]] = {"completed": [], "retry": [], "dead": []}
        for outcome, number in prepared:
            token = (number, outcome.attempt)
            if number is None or token not in held:
                fenced.append(outcome.job_id)
                continue
            held.discard(token)  # a second outcome for the same claim is stale
            fence = (number, outcome.attempt, worker_id)
            if outcome.kind == "completed":
                by_kind["completed"].append((results[id(outcome)], now, now, *fence))
            elif outcome.kind == "retry":
                run_at = now if outcome.run_at is None else float(outcome.run_at)
                by_kind["retry"].append((run_at, run_at, outcome.error, outcome.stack, *fence))
            else:
                by_kind["dead"].append((outcome.error, outcome.stack, now, now, *fence))
        for kind, rows in by_kind.items():
            if rows:
                conn.executemany(getattr(self.statements, kind), rows)
        return fenced

    async def release(self, tokens: Sequence[tuple[str, int]], worker_id: str) -> int:
        """See ``QueueBackend.release``: queued again at once, the attempt not counted."""
        rows = [(n, attempt, worker_id) for n, attempt in _parse_tokens(tokens)]
        if not rows:
            return 0

        def work(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            with transaction(conn):
                count = conn.executemany(self.statements.release, rows).rowcount
                queues = self._queues_of(conn, [row[0] for row in rows])
            return count, queues

        count, queues = await self.run(work)
        self._wake(queues)
        return count

    def _queues_of(self, conn: sqlite3.Connection, ids: list[int]) -> list[str]:
        t = quote_identifier(self.table)
        queues: set[str] = set()
        for start in range(0, len(ids), _MAX_VARIABLES):
            chunk = ids[start : start + _MAX_VARIABLES]
            sql = f"SELECT DISTINCT stream FROM {t} WHERE id IN ({', '.join('?' * len(chunk))})"
            queues.update(row[0] for row in conn.execute(sql, chunk))
        return sorted(queues)

    async def set_progress(self, token: tuple[str, int], worker_id: str, progress: Any) -> bool:
        """See ``QueueBackend.set_progress``."""
        number = _parse_id(token[0])
        if number is None:
            return False
        value = _encode_value(progress, "progress")
        params = (value, number, int(token[1]), worker_id)
        sql = self.statements.progress
        return await self.run(lambda conn: conn.execute(sql, params).rowcount == 1)

    # waiting ---------------------------------------------------------------------------

    async def wait(self, queue: str, timeout_s: float) -> None:
        """See ``QueueBackend.wait``: an in-process wake, a commit by another process (polled
        every ``POLL_INTERVAL_S``), the next due time of the queue, or the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        future: asyncio.Future[None] = loop.create_future()
        key = (*self._file_key, queue)
        # Registered before the first look, so a wake between the look and the sleep counts.
        _WAKERS.add(key, future)
        try:
            next_due = await self.run(lambda conn: self._next_due(conn, queue, True))
            while True:
                now = self.clock()
                if next_due is not None and next_due <= now:
                    return
                remaining_s = deadline - loop.time()
                if remaining_s <= 0:
                    return
                sleep_s = min(remaining_s, POLL_INTERVAL_S)
                if next_due is not None:
                    sleep_s = min(sleep_s, max(0.0, next_due - now))
                done, _ = await asyncio.wait({future}, timeout=sleep_s)
                if done:
                    return
                changed = await self.run(lambda conn: self._next_due(conn, queue, False))
                if changed is not _UNCHANGED:
                    next_due = changed
        finally:
            _WAKERS.discard(key, future)

    def _next_due(self, conn: sqlite3.Connection, queue: str, always: bool) -> Any:
        """When a job of ``queue`` may next be claimable (None: no live job), read only when
        another connection committed since the last look (or ``always``)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if not always and version == self._data_version:
            return _UNCHANGED
        self._data_version = version
        times = conn.execute(self.statements.next_due, (queue,)).fetchone()
        known = [t for t in times if t is not None]
        return min(known) if known else None

    # reading ---------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """See ``QueueBackend.get``."""
        number = _parse_id(job_id)
        if number is None:
            return None
        sql = self.statements.get + " WHERE id = ?"
        row = await self.run(lambda conn: conn.execute(sql, (number,)).fetchone())
        return None if row is None else to_job(row, self.clock())

    async def list_jobs(
        self, *, queue: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]:
        """See ``QueueBackend.list_jobs``: newest (highest id) first."""
        now = self.clock()
        conditions: list[str] = []
        params: list[Any] = []
        if queue is not None:
            conditions.append("stream = ?")
            params.append(queue)
        if state is JobState.QUEUED:
            conditions.append("(state = 'queued' OR (state = 'delayed' AND run_at <= ?))")
            params.append(now)
        elif state is JobState.DELAYED:
            conditions.append("state = 'delayed' AND run_at > ?")
            params.append(now)
        elif state is not None:
            conditions.append("state = ?")
            params.append(JobState(state).value)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"{self.statements.get}{where} ORDER BY id DESC LIMIT ?"
        params.append(max(0, limit))
        rows = await self.run(lambda conn: conn.execute(sql, params).fetchall())
        return [to_job(row, now) for row in rows]

    async def counts(self) -> dict[str, dict[JobState, int]]:
        """See ``QueueBackend.counts``: one covering scan of the state index."""
        sql = self.statements.counts
        rows = await self.run(lambda conn: conn.execute(sql, (self.clock(),)).fetchall())
        counts: dict[str, dict[JobState, int]] = {}
        for stream, state, count in rows:
            per_state = counts.setdefault(stream, dict.fromkeys(JobState, 0))
            try:
                per_state[JobState(state)] += count
            except ValueError:  # a state another program wrote: not ours to report
                continue
        return counts

    # maintenance -----------------------------------------------------------------------

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """See ``QueueBackend.requeue``: a job whose unique key another live job holds is
        skipped (``UPDATE OR IGNORE``)."""
        numbers = [n for n in (_parse_id(job_id) for job_id in job_ids) if n is not None]
        if not numbers:
            return 0
        now = self.clock()
        rows = [(now, now, number) for number in numbers]

        def work(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            with transaction(conn):
                count = conn.executemany(self.statements.requeue, rows).rowcount
                queues = self._queues_of(conn, numbers) if count else []
            return count, queues

        count, queues = await self.run(work)
        self._wake(queues)
        return count

    async def prune(self, state: JobState, older_than_s: float) -> int:
        """See ``QueueBackend.prune``; ``ValueError`` for a state other than completed/dead."""
        state = JobState(state)
        if state not in (JobState.COMPLETED, JobState.DEAD):
            raise ValueError(f"prune deletes completed or dead jobs, not {state.value}")
        params = (state.value, self.clock() - older_than_s)
        sql = self.statements.prune

        def work(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                return conn.execute(sql, params).rowcount

        return await self.run(work)

    # cron ------------------------------------------------------------------------------

    async def enqueue_cron(self, name: str, slot: float, job: NewJob) -> str | None:
        """See ``QueueBackend.enqueue_cron``: the slot compare-and-set and the insert share
        one write transaction, so concurrent callers (any process) enqueue once."""
        [row] = self._job_rows([job], self.clock())

        def work(conn: sqlite3.Connection) -> int | None:
            with transaction(conn):
                won = conn.execute(self.statements.cron_upsert, (name, float(slot))).fetchall()
                if not won:
                    return None
                # Nested: ``_insert_jobs`` opens its own transaction; do its work inline.
                return self._insert_in_transaction(conn, row)

        job_id = await self.run(work)
        if job_id is None:
            return None
        self._wake([job.queue])
        return str(job_id)

    def _insert_in_transaction(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> int:
        statements = self.statements
        next_id = int(conn.execute(statements.next_id, (statements.table,)).fetchone()[0])
        if conn.execute(statements.insert_unique, (next_id, *row)).rowcount == 1:
            return next_id
        return int(conn.execute(statements.held_by_key, (row[9],)).fetchone()[0])

    async def cron_state(self) -> dict[str, float]:
        """See ``QueueBackend.cron_state``."""
        sql = self.statements.cron_state
        rows = await self.run(lambda conn: conn.execute(sql).fetchall())
        return {name: float(last_slot) for name, last_slot in rows}

    # the pipeline source's side --------------------------------------------------------

    async def enqueue_messages(self, payloads: list[bytes], stream: str) -> int:
        """Queue pipeline messages on ``stream`` (one transaction); returns how many."""
        now = self.clock()
        count = await self.run(
            lambda conn: insert_messages(conn, self.statements, payloads, stream, now)
        )
        if count:
            self._wake([stream])
        return count

    async def claim_messages(
        self,
        streams: Sequence[str] | None,
        limit: int,
        owner: str,
        lease_s: float,
        claim_id: str,
    ) -> list[MessageRow]:
        """Claim up to ``limit`` due rows of ``streams`` (None: every stream) in id order, as
        one claim ``claim_id`` (ack/nack it as a whole); rows sorted by id.

        Only message rows (task ``message``); the attempt is counted and the rows are leased
        until ``now + lease_s``, in one statement, without building ``Job`` objects.
        """
        now = self.clock()
        return await self.run(
            lambda conn: claim_message_rows(
                conn, self.statements, streams, limit, owner, now + lease_s, now, claim_id
            )
        )

    async def ack_claim(self, claim_id: str) -> int:
        """Delete the rows still held under ``claim_id``; returns how many."""
        sql = self.statements.ack_claim
        return await self.run(lambda conn: conn.execute(sql, (claim_id,)).rowcount)

    async def nack_claim(self, claim_id: str) -> int:
        """Queue the rows still held under ``claim_id`` again at their place, the attempt
        counted (a failed delivery, not a shutdown); returns how many."""
        sql = self.statements.nack_claim
        count = await self.run(lambda conn: conn.execute(sql, (claim_id,)).rowcount)
        return count

    async def backlog(self, streams: Sequence[str] | None = None) -> int:
        """How many rows (of ``streams``, or all) are claimable now."""
        now = self.clock()
        return await self.run(lambda conn: count_backlog(conn, self.statements, streams, now))

    async def in_flight(self) -> int:
        """Rows held under a pipeline claim whose lease has not run out."""
        sql = self.statements.in_flight
        now = self.clock()
        row = await self.run(lambda conn: conn.execute(sql, (now,)).fetchone())
        return int(row[0] or 0)

    async def release_dead_owners(self, is_dead: Callable[[str], bool]) -> dict[str, int]:
        """Queue again the claimed rows of owners ``is_dead`` says are gone; rows per owner."""
        now = self.clock()

        def work(conn: sqlite3.Connection) -> dict[str, int]:
            released: dict[str, int] = {}
            with transaction(conn):
                owners = [r[0] for r in conn.execute(self.statements.leased_owners, (now,))]
                for owner in owners:
                    if is_dead(owner):
                        cursor = conn.execute(self.statements.release_owner, (owner,))
                        released[owner] = cursor.rowcount
            return released

        return await self.run(work)


def _first(row: MessageRow) -> int:
    return row[0]


class _Unchanged:
    pass


_UNCHANGED = _Unchanged()
