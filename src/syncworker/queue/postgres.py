"""The job queue on PostgreSQL: one table of jobs (and one of cron slots) in a schema.

Every state change is one statement (``sql/postgres.sql``, named blocks read once): a claim
picks with ``FOR UPDATE SKIP LOCKED`` and takes in the same UPDATE (promoting due delayed jobs
and reclaiming expired leases, the last attempt of an expired one going dead); a batch of
outcomes is one UPDATE over arrays, fenced by (id, attempt, worker); ``enqueue_many`` is one
INSERT over arrays, or a binary COPY for large batches without unique keys. Waiters LISTEN on
one channel (payload: the queue name) over a dedicated connection that reconnects by itself;
each enqueue statement NOTIFYs once per queue, in its own transaction.

Time: every run_at, lease and due decision uses the backend's ``clock`` (epoch seconds passed
to the statements), never the server's ``now()``; the hosts sharing a queue need synchronised
clocks (NTP), as leases are compared across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import psycopg
import structlog
from psycopg import sql

from syncworker.connectors.postgres.client import (
    Connection,
    ConnectSettings,
    Pool,
    check_identifier,
    check_url,
    connect,
    create_pool,
    dependency_error,
    describe,
    describe_url,
    open_pool,
)
from syncworker.core import jsonvalue
from syncworker.errors import ConnectorError, SyncWorkerError
from syncworker.queue.base import Job, JobState, NewJob, Outcome, check_new_job, encode_payload

log = structlog.get_logger(__name__)

COPY_MIN_JOBS = 1000
"""From this many jobs without unique keys, enqueue_many COPYs instead of INSERTing arrays."""
PRUNE_CHUNK = 10_000
# The order of the claim's RETURNING and of _job().
_COLUMNS = (
    "id",
    "task",
    "queue",
    "data",
    "state",
    "priority",
    "run_at",
    "enqueued_at",
    "attempts",
    "max_attempts",
    "unique_key",
    "timeout_s",
    "worker",
    "lease_until",
    "progress",
    "result",
    "error",
    "stack",
    "finished_at",
)
_COPY_TYPES = ["int8", "text", "text", "bytea", "int4", "float8", "float8", "int4", "float8"]


@cache
def _blocks() -> dict[str, str]:
    """The named blocks of ``sql/postgres.sql`` (read once per process)."""
    text = (files(__package__) / "sql" / "postgres.sql").read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)[ \t]*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _check_schema(schema: str) -> str:
    check_identifier(schema)
    check_identifier(_channel(schema))  # the channel must not be truncated either
    return schema


def _channel(schema: str) -> str:
    return f"{schema}_jobs"


class PostgresQueueBackend:
    """``QueueBackend`` on PostgreSQL (see the module docstring)."""

    kind = "postgres"

    def __init__(
        self,
        url: str,
        *,
        schema: str = "syncworker",
        pool_size: int = 4,
        clock: Callable[[], float] = time.time,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._url = check_url(url)
        self._schema = _check_schema(schema)
        self._pool_size = pool_size
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._label = f"postgres queue {describe_url(url)!r} schema {schema!r}"
        self._settings = ConnectSettings(url=url, connect_timeout_s=10.0, statement_timeout_s=60.0)
        self._pool: Pool | None = None
        self._queries = self._compose()
        self._rendered: dict[str, bytes] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._listener: _Listener | None = None

    def _compose(self) -> dict[str, sql.Composed]:
        ident = {
            "schema": sql.Identifier(self._schema),
            "jobs": sql.Identifier(self._schema, "jobs"),
            "cron": sql.Identifier(self._schema, "cron"),
            "claim_index": sql.Identifier("jobs_claim"),
            "due_index": sql.Identifier("jobs_due"),
            "unique_index": sql.Identifier("jobs_unique_key"),
            "channel": sql.Literal(_channel(self._schema)),
            "columns": sql.SQL(", ").join(sql.Identifier("j", c) for c in _COLUMNS),
        }
        return {name: sql.SQL(body).format(**ident) for name, body in _blocks().items()}

    def _query(self, name: str, conn: Connection) -> bytes:
        rendered = self._rendered.get(name)
        if rendered is None:
            rendered = self._rendered[name] = self._queries[name].as_bytes(conn)
        return rendered

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """See ``QueueBackend.open``: the pool, then the schema (idempotent)."""
        if self._pool is not None:
            return
        pool = create_pool(
            self._settings, min_size=1, max_size=self._pool_size, name=f"queue:{self._schema}"
        )
        await open_pool(pool, self._settings.connect_timeout_s, self._label)
        self._pool = pool
        try:
            async with self._conn("install") as conn, conn.transaction():
                # Concurrent installs (several workers starting) would race on the catalog.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._schema])
                await conn.execute(self._query("install", conn))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """See ``QueueBackend.close``."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        for event in self._wakes.values():
            event.set()
        self._wakes.clear()

    @contextlib.asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[Connection]:
        if self._pool is None:
            raise ConnectorError(f"{self._label}: {what}: not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._error(exc, what) from exc

    def _error(self, exc: psycopg.Error, what: str) -> SyncWorkerError:
        context = f"{self._label}: {what}"
        return dependency_error(exc, context) or ConnectorError(f"{context}: {describe(exc)}")

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue_many(
        self, jobs: Sequence[NewJob], *, conn: Connection | None = None
    ) -> list[str]:
        """See ``QueueBackend.enqueue_many``. With ``conn`` (an open psycopg connection) the
        jobs are inserted on it, inside the caller's transaction, and the NOTIFY is sent by
        that transaction: committed, the jobs exist and waiters wake; rolled back, neither."""
        if not jobs:
            return []
        rows = [_row(job) for job in jobs]  # refuses a bad job before anything is written
        now = self._clock()
        if conn is not None:
            try:
                return await self._enqueue_on(conn, jobs, rows, now)
            except psycopg.Error as exc:
                raise self._error(exc, "enqueue") from exc
        async with self._conn("enqueue") as own:
            return await self._enqueue_on(own, jobs, rows, now)

    async def _enqueue_on(
        self, conn: Connection, jobs: Sequence[NewJob], rows: list[_NewRow], now: float
    ) -> list[str]:
        if len(jobs) >= COPY_MIN_JOBS and all(job.unique_key is None for job in jobs):
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                async with conn.transaction():
                    return await self._copy(conn, jobs, rows, now)
            return await self._copy(conn, jobs, rows, now)
        return await self._insert(conn, jobs, rows, now)

    async def _insert(
        self, conn: Connection, jobs: Sequence[NewJob], rows: list[_NewRow], now: float
    ) -> list[str]:
        keys = sorted({job.unique_key for job in jobs if job.unique_key is not None})
        columns = list(zip(*rows, strict=True))
        params = {
            "task": list(columns[0]),
            "queue": list(columns[1]),
            "data": list(columns[2]),
            "priority": list(columns[3]),
            "run_at": [now if r is None else r for r in columns[4]],
            "unique_key": list(columns[5]),
            "max_attempts": list(columns[6]),
            "timeout_s": list(columns[7]),
            "keys": keys,
            "now": now,
        }
        cur = await conn.execute(self._query("enqueue", conn), params)
        inserted: list[tuple[int, str | None]] = []
        holders: dict[str, int] = {}
        for is_new, job_id, key in await cur.fetchall():
            if is_new:
                inserted.append((job_id, key))
            else:
                holders[key] = job_id
        inserted.sort()
        ids = await self._map_ids(conn, jobs, inserted, holders)
        return [str(job_id) for job_id in ids]

    async def _map_ids(
        self,
        conn: Connection,
        jobs: Sequence[NewJob],
        inserted: list[tuple[int, str | None]],
        holders: dict[str, int],
    ) -> list[int]:
        """The id of each input job: inserted rows come in input order (ascending ids); a
        job not inserted gets its key's holder (a batch's first job with a key holds it)."""
        ids: list[int | None] = []
        pending = iter(inserted)
        upcoming = next(pending, None)
        for job in jobs:
            key = job.unique_key
            if key is not None and key in holders:
                ids.append(holders[key])
            elif upcoming is not None and upcoming[1] == key:
                ids.append(upcoming[0])
                if key is not None:
                    holders[key] = upcoming[0]
                upcoming = next(pending, None)
            else:
                ids.append(None)  # held by a job committed while the statement ran
        missing = sorted(
            {
                job.unique_key
                for job, i in zip(jobs, ids, strict=True)
                if i is None and job.unique_key
            }
        )
        if missing:
            cur = await conn.execute(self._query("holders", conn), {"keys": missing})
            holders.update({key: job_id for job_id, key in await cur.fetchall()})
            ids = [
                holders.get(job.unique_key or "") if i is None else i
                for job, i in zip(jobs, ids, strict=True)
            ]
        if any(i is None for i in ids):
            raise ConnectorError(f"{self._label}: enqueue: a unique key's holder vanished")
        return [i for i in ids if i is not None]

    async def _copy(
        self, conn: Connection, jobs: Sequence[NewJob], rows: list[_NewRow], now: float
    ) -> list[str]:
        table = f"{sql.Identifier(self._schema).as_string(conn)}.jobs"
        cur = await conn.execute(
            self._query("reserve_ids", conn), {"table": table, "n": len(jobs)}, binary=True
        )
        ids = sorted(row[0] for row in await cur.fetchall())
        async with conn.cursor().copy(self._query("copy_jobs", conn)) as copy:
            copy.set_types([*_COPY_TYPES, "text"])
            for job_id, (task, queue, data, priority, run_at, _, attempts, timeout_s) in zip(
                ids, rows, strict=True
            ):
                at = now if run_at is None else run_at
                state = "delayed" if at > now else "queued"
                await copy.write_row(
                    (job_id, task, queue, data, priority, at, now, attempts, timeout_s, state)
                )
        queues = sorted({job.queue for job in jobs})
        await conn.execute(self._query("notify", conn), {"queues": queues})
        return [str(job_id) for job_id in ids]

    # -- claim and finish ------------------------------------------------------------------

    async def claim(self, queue: str, limit: int, worker_id: str, lease_s: float) -> list[Job]:
        """See ``QueueBackend.claim``."""
        if limit <= 0:
            return []
        now = self._clock()
        params = {
            "queue": queue,
            "now": now,
            "limit": limit,
            "worker": worker_id,
            "lease_until": now + lease_s,
        }
        claimed: list[Job] = []
        async with self._conn("claim") as conn:
            # Jobs moved to dead took places in the LIMIT: claim again for those places, so
            # an empty answer means nothing is due.
            while len(claimed) < limit:
                params["limit"] = limit - len(claimed)
                cur = await conn.execute(
                    self._query("claim", conn), params, prepare=True, binary=True
                )
                jobs = [_job(row, now) for row in await cur.fetchall()]
                claimed += [job for job in jobs if job.state is JobState.ACTIVE]
                dead = [job for job in jobs if job.state is JobState.DEAD]
                for job in dead:
                    log.warning(
                        "job_lease_expired_dead", queue=queue, job_id=job.id, attempts=job.attempts
                    )
                if not dead:
                    break
        # RETURNING follows the join, not the pick: put the priority order back.
        claimed.sort(key=lambda job: (-job.priority, job.run_at, int(job.id)))
        return claimed

    async def heartbeat(
        self, tokens: Sequence[tuple[str, int]], worker_id: str, lease_s: float
    ) -> list[str]:
        """See ``QueueBackend.heartbeat``."""
        if not tokens:
            return []
        ids, attempts, bad = _tokens(tokens)
        params = {
            "ids": ids,
            "attempts": attempts,
            "worker": worker_id,
            "lease_until": self._clock() + lease_s,
        }
        async with self._conn("heartbeat") as conn:
            cur = await conn.execute(self._query("heartbeat", conn), params, prepare=True)
            held = {str(row[0]) for row in await cur.fetchall()}
        return [job_id for job_id, _ in tokens if job_id not in held or job_id in bad]

    async def finish(self, outcomes: Sequence[Outcome], worker_id: str) -> list[str]:
        """See ``QueueBackend.finish``: one statement for the batch."""
        if not outcomes:
            return []
        now = self._clock()
        results = [_json(o.result) for o in outcomes]  # refuse before applying any
        valid = [
            (o, r)
            for o, r in zip(outcomes, results, strict=True)
            if o.job_id.isascii() and o.job_id.isdigit()
        ]
        # Numbers and kinds go as array literals, and a column of NULLs as an empty array
        # (unnest pads the shorter arrays with NULLs): psycopg's list dumper inspects every
        # element, which cost a tenth of the worker's CPU on no-op jobs.
        params = {
            "ids": _literal(int(o.job_id) for o, _ in valid),
            "attempts": _literal(int(o.attempt) for o, _ in valid),
            "kinds": _literal(o.kind for o, _ in valid),
            "results": _or_empty([r for _, r in valid]),
            "run_ats": _literal(float(now if o.run_at is None else o.run_at) for o, _ in valid),
            "errors": _or_empty([_text(o.error) for o, _ in valid]),
            "stacks": _or_empty([_text(o.stack) for o, _ in valid]),
            "worker": worker_id,
            "now": now,
        }
        async with self._conn("finish") as conn:
            cur = await conn.execute(self._query("finish", conn), params, prepare=True)
            applied = {str(row[0]) for row in await cur.fetchall()}
        return [o.job_id for o in outcomes if o.job_id not in applied]

    async def release(self, tokens: Sequence[tuple[str, int]], worker_id: str) -> int:
        """See ``QueueBackend.release``."""
        if not tokens:
            return 0
        ids, attempts, _ = _tokens(tokens)
        params = {"ids": ids, "attempts": attempts, "worker": worker_id}
        async with self._conn("release") as conn:
            cur = await conn.execute(self._query("release", conn), params)
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def set_progress(self, token: tuple[str, int], worker_id: str, progress: Any) -> bool:
        """See ``QueueBackend.set_progress``."""
        job_id, attempt = token
        if not (job_id.isascii() and job_id.isdigit()):
            return False
        params = {
            "id": int(job_id),
            "attempt": attempt,
            "worker": worker_id,
            "progress": _json(progress),
        }
        async with self._conn("set_progress") as conn:
            cur = await conn.execute(self._query("set_progress", conn), params, prepare=True)
            return cur.rowcount == 1

    # -- waiting ---------------------------------------------------------------------------

    async def wait(self, queue: str, timeout_s: float) -> None:
        """See ``QueueBackend.wait``: returns at once when a job is claimable, else on a
        NOTIFY for ``queue``, when the next delayed job falls due, or after ``timeout_s``;
        while the listening connection is down, after ``poll_interval_s`` at most."""
        listener = await self._ensure_listener()
        # Taken before the check: a NOTIFY arriving during it sets this very event.
        event = self._wakes.setdefault(queue, asyncio.Event())
        now = self._clock()
        async with self._conn("wait") as conn:
            cur = await conn.execute(
                self._query("wait_state", conn), {"queue": queue, "now": now}, prepare=True
            )
            row = await cur.fetchone()
        ready, next_due = (False, None) if row is None else row
        if ready:
            return
        wait_s = timeout_s
        if next_due is not None:
            wait_s = min(wait_s, max(0.0, next_due - now))
        if not listener.connected:
            wait_s = min(wait_s, self._poll_interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait_s)

    async def _ensure_listener(self) -> _Listener:
        if self._listener is None:
            if self._pool is None:
                raise ConnectorError(f"{self._label}: wait: not open")
            self._listener = _Listener(
                self._settings, _channel(self._schema), self._label, self._wake, self._wake_all
            )
            await self._listener.start()
        return self._listener

    def _wake(self, queue: str) -> None:
        event = self._wakes.pop(queue, None)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        # A notification may have been lost while the listener was down: every waiter checks.
        wakes, self._wakes = self._wakes, {}
        for event in wakes.values():
            event.set()

    @property
    def listener_pid(self) -> int | None:
        """The server process of the listening connection (None when down or not started)."""
        return None if self._listener is None else self._listener.backend_pid

    # -- inspection and maintenance --------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """See ``QueueBackend.get``."""
        if not (job_id.isascii() and job_id.isdigit()) or int(job_id) >= 2**63:
            return None
        async with self._conn("get") as conn:
            cur = await conn.execute(
                self._query("get", conn), {"id": int(job_id)}, prepare=True, binary=True
            )
            row = await cur.fetchone()
        return None if row is None else _job(row, self._clock())

    async def list_jobs(
        self, *, queue: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]:
        """See ``QueueBackend.list_jobs``."""
        now = self._clock()
        params = {
            "queue": queue,
            "state": None if state is None else state.value,
            "limit": limit,
            "now": now,
        }
        async with self._conn("list_jobs") as conn:
            cur = await conn.execute(self._query("list_jobs", conn), params, binary=True)
            return [_job(row, now) for row in await cur.fetchall()]

    async def counts(self) -> dict[str, dict[JobState, int]]:
        """See ``QueueBackend.counts`` (a scan of the table: for dashboards, not hot paths)."""
        async with self._conn("counts") as conn:
            cur = await conn.execute(self._query("counts", conn), {"now": self._clock()})
            rows = await cur.fetchall()
        counts: dict[str, dict[JobState, int]] = {}
        for queue, state, n in rows:
            per = counts.setdefault(queue, dict.fromkeys(JobState, 0))
            per[JobState(state)] += n
        return counts

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """See ``QueueBackend.requeue``; a job whose unique key another job holds is skipped."""
        ids = [int(i) for i in job_ids if i.isascii() and i.isdigit() and int(i) < 2**63]
        if not ids:
            return 0
        async with self._conn("requeue") as conn:
            cur = await conn.execute(self._query("requeue", conn), {"ids": ids})
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def prune(self, state: JobState, older_than_s: float) -> int:
        """See ``QueueBackend.prune``; ``ValueError`` for a state other than completed/dead."""
        if state not in (JobState.COMPLETED, JobState.DEAD):
            raise ValueError(f"prune takes completed or dead, not {state.value}")
        params = {
            "state": state.value,
            "cutoff": self._clock() - older_than_s,
            "chunk": PRUNE_CHUNK,
        }
        pruned = 0
        async with self._conn("prune") as conn:
            while True:
                cur = await conn.execute(self._query("prune", conn), params)
                pruned += cur.rowcount
                if cur.rowcount < PRUNE_CHUNK:
                    return pruned

    async def enqueue_cron(self, name: str, slot: float, job: NewJob) -> str | None:
        """See ``QueueBackend.enqueue_cron``: the compare-and-set and the enqueue are one
        statement. When the slot advances but the job's unique key is held, the holder's id
        is returned."""
        task, queue, data, priority, run_at, key, attempts, timeout_s = _row(job)
        now = self._clock()
        params = {
            "name": name,
            "slot": slot,
            "task": task,
            "queue": queue,
            "data": data,
            "priority": priority,
            "run_at": now if run_at is None else run_at,
            "unique_key": key,
            "max_attempts": attempts,
            "timeout_s": timeout_s,
            "now": now,
        }
        async with self._conn("enqueue_cron") as conn:
            cur = await conn.execute(self._query("enqueue_cron", conn), params)
            row = await cur.fetchone()
            assert row is not None
            advanced, job_id, _ = row
            if not advanced:
                return None
            if job_id is None and key is not None:
                cur = await conn.execute(self._query("holders", conn), {"keys": [key]})
                held = await cur.fetchone()
                job_id = None if held is None else held[0]
        return None if job_id is None else str(job_id)

    async def cron_state(self) -> dict[str, float]:
        """See ``QueueBackend.cron_state``."""
        async with self._conn("cron_state") as conn:
            cur = await conn.execute(self._query("cron_state", conn))
            return {name: slot for name, slot in await cur.fetchall()}


_NewRow = tuple[str, str, bytes, int, float | None, str | None, int, float | None]


def _row(job: NewJob) -> _NewRow:
    check_new_job(job)
    for field, value in (("task", job.task), ("queue", job.queue), ("unique_key", job.unique_key)):
        if value is not None and "\x00" in value:
            raise ValueError(f"job {field} contains a NUL character")
    return (
        job.task,
        job.queue,
        encode_payload(job),
        job.priority,
        job.run_at,
        job.unique_key,
        job.max_attempts,
        job.timeout_s,
    )


def _tokens(tokens: Sequence[tuple[str, int]]) -> tuple[list[int], list[int], set[str]]:
    ids: list[int] = []
    attempts: list[int] = []
    bad: set[str] = set()
    for job_id, attempt in tokens:
        if job_id.isascii() and job_id.isdigit() and int(job_id) < 2**63:
            ids.append(int(job_id))
            attempts.append(attempt)
        else:
            bad.add(job_id)
    return ids, attempts, bad


def _literal(values: Iterable[int | float | str]) -> str:
    """An array literal of numbers or plain words (``Outcome.kind``), nothing to quote."""
    return "{" + ",".join(map(str, values)) + "}"


def _or_empty(values: list[Any]) -> list[Any]:
    """``values``, or [] when every one is None (unnest pads with NULLs)."""
    return values if any(v is not None for v in values) else []


def _json(value: Any) -> bytes | None:
    return None if value is None else jsonvalue.dumps(value)


def _text(value: str | None) -> str | None:
    # text cannot hold NUL; an error message is a diagnostic, so it is escaped, not refused.
    return None if value is None else value.replace("\x00", "\\x00")


def _job(row: tuple[Any, ...], now: float) -> Job:
    (
        job_id,
        task,
        queue,
        data,
        state,
        priority,
        run_at,
        enqueued_at,
        attempts,
        max_attempts,
        unique_key,
        timeout_s,
        worker,
        lease_until,
        progress,
        result,
        error,
        stack,
        finished_at,
    ) = row
    if state == "delayed" and run_at <= now:
        state = "queued"  # due: the next claim takes it (promotion is the claim itself)
    return Job(
        id=str(job_id),
        task=task,
        queue=queue,
        data=bytes(data),
        state=JobState(state),
        priority=priority,
        run_at=run_at,
        enqueued_at=enqueued_at,
        attempts=attempts,
        max_attempts=max_attempts,
        unique_key=unique_key,
        timeout_s=timeout_s,
        worker=worker,
        lease_until=lease_until,
        progress=None if progress is None else jsonvalue.loads(bytes(progress)),
        result=None if result is None else jsonvalue.loads(bytes(result)),
        error=error,
        stack=stack,
        finished_at=finished_at,
    )


class _Listener:
    """LISTEN on the queue channel over a dedicated connection, kept up by a background task:
    each loss and each failed reconnect is logged with its reason, reconnects back off from
    0.1 s to 5 s, and every (re)connect wakes all waiters (notifications sent while it was
    down are lost; the waiters check the table again)."""

    INITIAL_BACKOFF_S = 0.1
    MAX_BACKOFF_S = 5.0

    def __init__(
        self,
        settings: ConnectSettings,
        channel: str,
        label: str,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._label = label
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def backend_pid(self) -> int | None:
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def start(self) -> None:
        """Start the task and wait (at most the connect timeout) for the first LISTEN, so a
        wait that follows sees every later enqueue; a failure leaves it polling."""
        self._task = asyncio.create_task(self._run(), name=f"pg-queue-listen:{self._channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self._settings.connect_timeout_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
                failures = 0
            except (SyncWorkerError, psycopg.Error, OSError) as exc:
                failures += 1
                reason = describe(exc) if isinstance(exc, psycopg.Error) else str(exc)
                delay_s = min(self.MAX_BACKOFF_S, self.INITIAL_BACKOFF_S * 2 ** (failures - 1))
                log.warning(
                    "pg_queue_listen_failed",
                    channel=self._channel,
                    attempt=failures,
                    error=reason,
                    retry_in_s=delay_s,
                )
                await self._drop()
                self._on_connect()  # waiters fall back to polling meanwhile
                await asyncio.sleep(delay_s)

    async def _listen(self) -> None:
        conn = await connect(self._settings, self._label)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
            raise
        # Counted before the connection is published: whoever sees the new backend pid also
        # sees the reconnect that brought it.
        if self._connected.is_set():
            self.reconnects += 1
            log.info("pg_queue_listen_reconnected", channel=self._channel)
        self._conn = conn
        self._connected.set()
        self._on_connect()
        async for notify in conn.notifies():
            self._on_notify(notify.payload)
        raise ConnectorError("the listening connection closed")

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
