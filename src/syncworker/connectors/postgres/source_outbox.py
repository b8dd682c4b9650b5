"""``pg_outbox``: a source that claims changes from a trigger-filled PostgreSQL queue table
(seed 001) and sends each changed row's current state.

- Claim: ONE ``UPDATE ... WHERE id IN (SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED)
  RETURNING`` sets a lease (``locked_by``, ``locked_until``), so workers never share a row and a
  crashed worker's rows come back when its lease expires. In the same transaction the rows'
  current state is read from their source tables, one ``SELECT ... WHERE key = ANY(...)`` per
  table: a burst of changes to one row becomes one record, a row gone is a delete.
- Wake-up: a dedicated connection LISTENs on the channel the triggers NOTIFY, so a change
  wakes the worker within milliseconds; ``poll_interval`` is only the fallback (no LISTEN, e.g.
  behind PgBouncer in transaction mode, or while the listening connection is re-established).
- Ack: rows ``completed`` plus one log row per record. A record a sink refused
  (``ack_except``, with ``dead_letter: {store: source}``) is a counted attempt: back to
  ``pending`` after a backoff through ``next_attempt_at``, or ``failed`` (error kept) after
  ``max_retries``. Nack (sink down, shutdown, lock lost) hands rows back uncounted.

The install (``syncworker.connectors.postgres.outbox.install``) creates the queue table,
triggers, stats view, log table and clean-up function; ``open`` checks the queue exists.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import psycopg
import structlog
from psycopg import sql
from pydantic import Field, field_validator, model_validator

from syncworker.connectors.postgres import outbox
from syncworker.connectors.postgres.client import (
    Connection,
    ConnectSettings,
    Pool,
    PostgresConnectionConfig,
    check_identifier,
    connect,
    create_pool,
    dependency_error,
    describe,
    describe_url,
    open_pool,
    split_table,
    table_identifier,
)
from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.record import Batch, Record
from syncworker.errors import ConfigError, ConnectionClosed, ConnectorError, SyncWorkerError
from syncworker.observe.logging import redact_url

log = structlog.get_logger(__name__)

ClaimedRow = tuple[int, str, str, str, int, float]


class PgOutboxSourceConfig(PostgresConnectionConfig):
    """Settings of the ``pg_outbox`` source."""

    type: Literal["pg_outbox"] = Field(
        "pg_outbox", description="Connector type: a trigger-filled PostgreSQL outbox table."
    )
    queue_table: str = Field(
        outbox.DEFAULT_QUEUE_TABLE,
        description="Queue table (seed 001: algolia_sync_queue). The log table, stats view "
        "and clean-up function are named after it: <name without _queue>_log, _stats, "
        "_cleanup(days).",
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Source tables the install puts triggers on ('table' or 'schema.table').",
    )
    key_columns: dict[str, str] = Field(
        default_factory=dict,
        description="Key column per source table (default 'id'); its value, as text, is "
        "Record.key.",
    )
    channel: str | None = Field(
        None, description="LISTEN/NOTIFY channel (default: the queue table name)."
    )
    listen: bool = Field(
        True,
        description="Wake on NOTIFY; false polls every poll_interval only (e.g. behind "
        "PgBouncer in transaction mode, where LISTEN does not work).",
    )
    worker_id: str | None = Field(
        None,
        description="Written to locked_by and to the log (default: host:pid:random).",
    )
    lease: DurationS = Field(
        60.0,
        description="How long claimed rows stay invisible to other workers; after that a "
        "crashed worker's rows are claimed again. Must exceed the time a batch takes.",
    )
    poll_interval: DurationS = Field(
        5.0,
        description="Fallback sleep when LISTEN is unavailable (seed: POLLING_INTERVAL).",
    )
    max_retries: int = Field(
        5, ge=1, description="Attempts before a row ends 'failed' (seed: MAX_RETRIES)."
    )
    retry_delay: DurationS = Field(
        1.0, description="Backoff after the first failed attempt, doubled after each."
    )
    retry_max_delay: DurationS = Field(300.0, description="Longest backoff between attempts.")

    @field_validator("queue_table")
    @classmethod
    def _valid_queue(cls, value: str) -> str:
        return outbox.check_queue_table(value)

    @field_validator("tables")
    @classmethod
    def _valid_tables(cls, value: list[str]) -> list[str]:
        for table in value:
            split_table(table)
        if len(set(value)) != len(value):
            raise ValueError("tables are listed more than once")
        return value

    @field_validator("key_columns")
    @classmethod
    def _valid_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for column in value.values():
            check_identifier(column)
        return value

    @field_validator("channel")
    @classmethod
    def _valid_channel(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @field_validator("lease", "poll_interval", "retry_delay", "retry_max_delay")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a duration greater than 0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PgOutboxSourceConfig:
        unknown = sorted(set(self.key_columns) - set(self.tables))
        if unknown:
            raise ValueError(f"key_columns names tables not in `tables`: {unknown}")
        return self


@dataclass(slots=True)
class OutboxToken:
    """What a batch carries back to ack/nack: every claimed queue id, per record."""

    queue_ids: list[list[int]] = field(default_factory=list)

    @property
    def all_ids(self) -> list[int]:
        return [queue_id for ids in self.queue_ids for queue_id in ids]


@dataclass(slots=True)
class _Change:
    """The queue rows of one (table, record_id) within a claimed batch."""

    table: str
    record_id: str
    queue_ids: list[int]
    operation: str
    attempts: int
    received_at: float


class PgOutboxSource:
    """Claims changes from a PostgreSQL outbox and reads the changed rows' current state.

    Records: ``stream`` is the source table (as configured), ``key`` the row's key as text,
    ``op`` ``upsert`` with ``data`` the row as JSON (``to_jsonb``: timestamps as ISO text,
    numbers exact, see ``core.jsonvalue``) or ``delete`` with empty ``data`` when the row
    is gone; ``meta`` has ``queue_ids``, ``operation`` (the last queued one), ``attempts``
    and ``received_at``.
    """

    config_model: ClassVar[type[PgOutboxSourceConfig]] = PgOutboxSourceConfig

    def __init__(self, config: PgOutboxSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, PgOutboxSourceConfig):
            config = PgOutboxSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self.worker_id = config.worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self._names = outbox.OutboxNames.for_queue(config.queue_table)
        queue = sql.Identifier(self._names.queue)
        log_table = sql.Identifier(self._names.log)
        self._claim = outbox.CLAIM.format(queue=queue)
        self._ack_batch = outbox.ACK_BATCH.format(queue=queue, log=log_table)
        self._notify = outbox.NOTIFY
        self._fail_abandoned = outbox.FAIL_ABANDONED.format(queue=queue, log=log_table)
        self._next_abandoned_check = 0.0
        self._release = outbox.RELEASE.format(queue=queue)
        self._fail = outbox.FAIL.format(queue=queue)
        self._log = outbox.LOG.format(log=log_table)
        self._backlog = outbox.BACKLOG.format(queue=queue)
        self._channel = config.channel or config.queue_table
        self._label = f"pg_outbox {describe_url(config.url)!r} queue {config.queue_table!r}"
        self._settings = ConnectSettings(
            url=config.url,
            connect_timeout_s=config.connect_timeout,
            statement_timeout_s=config.statement_timeout,
            application_name=f"syncworker:{name}",
        )
        self._listen_settings = ConnectSettings(
            url=config.url,
            connect_timeout_s=config.connect_timeout,
            statement_timeout_s=config.statement_timeout,
            application_name=f"syncworker:{name}:listen",
        )
        self._pool: Pool | None = None
        self._listener: Connection | None = None
        self._readers: dict[str, sql.Composed] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Check the queue table exists, open the pool and LISTEN.

        Raises ``ConnectionFailed`` when the server is unreachable and ``ConfigError`` when
        the outbox is not installed. A failed LISTEN is not fatal: ``wait`` polls and retries.
        """
        if self._pool is not None:
            return
        conn = await connect(self._settings, self._label)
        async with conn:
            cursor = await conn.execute("SELECT to_regclass(%s)", (self._queue_regclass(conn),))
            row = await cursor.fetchone()
        if not row or row[0] is None:
            raise ConfigError(
                f"{self._label}: queue table {self.config.queue_table!r} does not exist; "
                "run `syncworker pg install` first"
            )
        pool = create_pool(
            self._settings,
            min_size=self.config.pool_min,
            max_size=self.config.pool_max,
            name=f"syncworker-{self.name}",
        )
        await open_pool(pool, self.config.connect_timeout, self._label)
        self._pool = pool
        if self.config.listen:
            await self._start_listening()

    def _queue_regclass(self, conn: Connection) -> str:
        return sql.Identifier(self._names.queue).as_string(conn)

    async def close(self) -> None:
        """Close the listening connection and the pool; unacked rows wait for their lease."""
        await self._stop_listening()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- claim -----------------------------------------------------------------------------

    async def claim(self, limit: int) -> Batch | None:
        """Lease up to ``limit`` queue rows in id order and read their rows' current state.

        Claim and reads are one transaction: when a read fails nothing stays claimed. Raises
        ``ConnectorError`` (or a subclass) when the database fails.
        """
        if limit <= 0:
            return None
        params = {
            "worker": self.worker_id,
            "lease_s": self.config.lease,
            "limit": limit,
            "max_retries": self.config.max_retries,
        }
        try:
            if time.monotonic() >= self._next_abandoned_check:
                await self._give_up_abandoned()
            while True:
                async with self._connection() as conn, conn.transaction():
                    cursor = await conn.execute(self._claim, params)
                    rows: list[ClaimedRow] = await cursor.fetchall()
                    if not rows:
                        return None
                    changes = _collapse(rows)
                    current, unreadable = await self._read_current(conn, changes)
                    if unreadable:
                        changes = await self._fail_unreadable(conn, changes, unreadable)
                if changes:
                    break
        except psycopg.Error as exc:
            raise self._error(exc, "claim failed") from exc
        records = [
            _to_record(change, current.get((change.table, change.record_id))) for change in changes
        ]
        return Batch(records, token=OutboxToken([change.queue_ids for change in changes]))

    async def _fail_unreadable(
        self, conn: Connection, changes: list[_Change], unreadable: dict[tuple[str, str], str]
    ) -> list[_Change]:
        """Fail, in the claim's transaction, the changes whose row cannot be read as exact
        JSON (``unreadable``: why, per (table, key)): ``failed`` at once with the reason in
        ``last_error`` and the log, since reading it again gives the same answer (a later
        change of the row queues it anew). The other changes, to deliver."""
        failed = [c for c in changes if (c.table, c.record_id) in unreadable]
        ids = [queue_id for change in failed for queue_id in change.queue_ids]
        errors = [
            unreadable[(change.table, change.record_id)]
            for change in failed
            for _ in change.queue_ids
        ]
        params = {**self._fail_params(ids, errors), "max_retries": 0}
        await conn.execute(self._fail, params)
        records = [_to_record(change, {}) for change in failed]
        token = OutboxToken([change.queue_ids for change in failed])
        entries = [
            (n, "failed", unreadable[(change.table, change.record_id)])
            for n, change in enumerate(failed)
        ]
        await self._write_log(conn, Batch(records, token), token, entries)
        for change in failed:
            log.warning(
                "pg_outbox_row_unreadable",
                source=self.name,
                table=change.table,
                record_key=change.record_id,
                queue_ids=change.queue_ids,
                error=unreadable[(change.table, change.record_id)],
            )
        return [c for c in changes if (c.table, c.record_id) not in unreadable]

    def merge(self, batches: list[Batch]) -> Batch:
        """The claims that filled one batch as one: a row claimed twice becomes one record
        with the later (newer) state and every queue id, at its first place."""
        records: list[Record] = []
        queue_ids: list[list[int]] = []
        where: dict[tuple[str, str], int] = {}
        for batch in batches:
            token = batch.token
            if not isinstance(token, OutboxToken):
                raise TypeError(f"{self._label}: cannot merge a batch it did not claim")
            for record, ids in zip(batch.records, token.queue_ids, strict=True):
                at = where.get((record.stream, record.key))
                if at is None:
                    where[(record.stream, record.key)] = len(records)
                    records.append(record)
                    queue_ids.append(list(ids))
                    continue
                merged = sorted(queue_ids[at] + ids)
                first = records[at]
                meta = {
                    **record.meta,
                    "queue_ids": merged,
                    "attempts": max(first.meta["attempts"], record.meta["attempts"]),
                    "received_at": min(first.meta["received_at"], record.meta["received_at"]),
                }
                records[at] = replace(record, meta=meta)
                queue_ids[at] = merged
        return Batch(records, token=OutboxToken(queue_ids))

    async def _give_up_abandoned(self) -> None:
        """Fail the rows that ran out of retries with their workers gone (``FAIL_ABANDONED``);
        at most once per lease, as that is how fast new ones can appear."""
        self._next_abandoned_check = time.monotonic() + self.config.lease
        params = {"max_retries": self.config.max_retries, "worker": self.worker_id}
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(self._fail_abandoned, params)
            failed = len(await cursor.fetchall())
        if failed:
            log.warning(
                "pg_outbox_rows_failed",
                source=self.name,
                records=failed,
                max_retries=self.config.max_retries,
                error="abandoned: the workers holding them died or stalled past their lease",
            )

    async def _read_current(
        self, conn: Connection, changes: list[_Change]
    ) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], str]]:
        """The current row of every change, by (table, key) (missing rows are absent), and
        the rows that cannot be read as exact JSON, with why.

        A row PostgreSQL cannot turn into JSON (a ``json`` column holding ``\\u0000``, a
        value nested past its stack depth) fails the table's whole SELECT; the rows are then
        read one by one, each in a savepoint, so only that row is set apart.
        """
        keys_by_table: dict[str, list[str]] = {}
        for change in changes:
            keys_by_table.setdefault(change.table, []).append(change.record_id)
        current: dict[tuple[str, str], dict[str, Any]] = {}
        unreadable: dict[tuple[str, str], str] = {}
        for table, keys in keys_by_table.items():
            reader = await self._reader(conn, table)
            try:
                async with conn.transaction():
                    cursor = await conn.execute(reader, (keys,))
                    rows = await cursor.fetchall()
            except psycopg.Error as exc:
                if not _is_row_error(exc):
                    raise
                rows = await self._read_one_by_one(conn, reader, table, keys, unreadable)
            for key, text in rows:
                data = _row_data(text)
                if isinstance(data, str):
                    unreadable[(table, key)] = data
                else:
                    current[(table, key)] = data
        return current, unreadable

    async def _read_one_by_one(
        self,
        conn: Connection,
        reader: sql.Composed,
        table: str,
        keys: list[str],
        unreadable: dict[tuple[str, str], str],
    ) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        for key in keys:
            try:
                async with conn.transaction():
                    cursor = await conn.execute(reader, ([key],))
                    rows += await cursor.fetchall()
            except psycopg.Error as exc:
                if not _is_row_error(exc):
                    raise
                unreadable[(table, key)] = f"the row cannot be read as JSON: {describe(exc)}"
        return rows

    async def _reader(self, conn: Connection, table: str) -> sql.Composed:
        """The SELECT reading rows of ``table`` by key, built once per table."""
        reader = self._readers.get(table)
        if reader is not None:
            return reader
        key = self.config.key_columns.get(table, "id")
        cursor = await conn.execute(outbox.KEY_TYPE, (table_identifier(table).as_string(conn), key))
        row = await cursor.fetchone()
        if row is None:
            raise ConnectorError(f"{self._label}: table {table!r} has no key column {key!r}")
        reader = sql.SQL(outbox.READ_ROWS).format(
            key=sql.Identifier(key),
            table=table_identifier(table),
            # A type name from the catalog (format_type), not user input.
            key_type=sql.SQL(row[0]),
        )
        self._readers[table] = reader
        return reader

    # -- finish ----------------------------------------------------------------------------

    async def ack(self, batch: Batch) -> None:
        """Mark the batch's rows ``completed``, log one ``success`` row per record and queue
        again the records a later change overtook, in one statement (``ACK_BATCH``). Rows
        whose lease another worker took over are left to that worker. Raises
        ``ConnectorError`` when the database fails."""
        await self.ack_except(batch, {})

    async def ack_except(self, batch: Batch, failures: dict[int, str]) -> None:
        """Ack the batch except the records at the indexes of ``failures``: each of those
        failed one attempt with its error and goes back to ``pending`` after a backoff
        (``retry_delay`` doubled per attempt, at most ``retry_max_delay``), or to ``failed``
        once ``max_retries`` attempts are used (``dead_letter: {store: source}``). One
        transaction, one log row per record. Raises ``ConnectorError`` when the database
        fails."""
        token = batch.token
        if not isinstance(token, OutboxToken) or not batch.records:
            return
        done_ids = [i for n, ids in enumerate(token.queue_ids) if n not in failures for i in ids]
        failed_ids = [i for n in failures for i in token.queue_ids[n]]
        done = requeued = 0
        statuses: dict[int, str] = {}
        try:
            async with self._connection() as conn, conn.transaction():
                if done_ids:
                    params = {"ids": done_ids, "worker": self.worker_id}
                    cursor = await conn.execute(self._ack_batch, params)
                    row = await cursor.fetchone()
                    done, requeued = row if row else (0, 0)
                if failed_ids:
                    statuses = await self._fail_attempt(conn, batch, token, failures)
                if requeued:
                    await conn.execute(self._notify, (self._channel, self._names.queue))
        except psycopg.Error as exc:
            raise self._error(exc, "ack failed") from exc
        expected = len(done_ids) + len(failed_ids)
        if done + len(statuses) != expected:
            log.warning(
                "pg_outbox_ack_lease_lost",
                source=self.name,
                expected=expected,
                settled=done + len(statuses),
                lease_s=self.config.lease,
            )
        if requeued:
            log.info("pg_outbox_overtaken_requeued", source=self.name, records=requeued)
        gave_up = sum(status == "failed" for status in statuses.values())
        if gave_up:
            log.warning(
                "pg_outbox_rows_failed",
                source=self.name,
                rows=gave_up,
                max_retries=self.config.max_retries,
                error=next(iter(failures.values())),
            )

    async def _fail_attempt(
        self, conn: Connection, batch: Batch, token: OutboxToken, failures: dict[int, str]
    ) -> dict[int, str]:
        """Count a failed attempt for the records at ``failures``' indexes (``FAIL``) and log
        each as ``retry`` or ``failed`` with its error; the new status per queue id."""
        ids: list[int] = []
        errors: list[str] = []
        for n, message in failures.items():
            ids.extend(token.queue_ids[n])
            errors.extend([message] * len(token.queue_ids[n]))
        cursor = await conn.execute(self._fail, self._fail_params(ids, errors))
        statuses: dict[int, str] = dict(await cursor.fetchall())
        entries: list[tuple[int, str, str | None]] = []
        for n, message in failures.items():
            status = next((statuses[i] for i in token.queue_ids[n] if i in statuses), None)
            if status is not None:
                entries.append((n, "failed" if status == "failed" else "retry", message))
        await self._write_log(conn, batch, token, entries)
        return statuses

    def _fail_params(self, ids: list[int], errors: list[str]) -> dict[str, Any]:
        return {
            "ids": ids,
            "errors": errors,
            "worker": self.worker_id,
            "max_retries": self.config.max_retries,
            "delay_s": self.config.retry_delay,
            "max_delay_s": self.config.retry_max_delay,
        }

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Hand the batch's rows back, due at once and without counting the attempt: the
        whole batch failed because a sink or the network is down (``error``, kept in
        ``last_error`` and logged as ``retry``; the pipeline's circuit breaker paces the next
        try), or the worker is stopping or lost its lock (``error`` None, nothing logged).
        Raises ``ConnectorError`` when the database fails; the lease then brings them back."""
        token = batch.token
        if not isinstance(token, OutboxToken) or not batch.records:
            return
        message = None if error is None else _error_text(error)
        params = {"ids": token.all_ids, "worker": self.worker_id, "error": message}
        try:
            async with self._connection() as conn, conn.transaction():
                cursor = await conn.execute(self._release, params)
                released = {row[0] for row in await cursor.fetchall()}
                if message is not None:
                    entries = [
                        (n, "retry", message)
                        for n, ids in enumerate(token.queue_ids)
                        if released.intersection(ids)
                    ]
                    await self._write_log(conn, batch, token, entries)
        except psycopg.Error as exc:
            raise self._error(exc, "nack failed") from exc

    async def _write_log(
        self,
        conn: Connection,
        batch: Batch,
        token: OutboxToken,
        entries: Sequence[tuple[int, str, str | None]],
    ) -> None:
        """One log row per (record index, result, error) entry."""
        if not entries:
            return
        records = [batch.records[n] for n, _, _ in entries]
        params = {
            "queue_ids": [",".join(map(str, token.queue_ids[n])) for n, _, _ in entries],
            "tables": [record.stream for record in records],
            "records": [record.key for record in records],
            "operations": [str(record.meta.get("operation", "")) for record in records],
            "results": [result for _, result, _ in entries],
            "errors": [error for _, _, error in entries],
            "worker": self.worker_id,
        }
        await conn.execute(self._log, params)

    async def backlog(self) -> int:
        """Rows claimable now: pending and due, or processing with an expired lease."""
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(self._backlog)
                row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise self._error(exc, "backlog failed") from exc
        return int(row[0]) if row else 0

    async def failed_count(self) -> int:
        """Rows this source gave up on (``failed``, kept with ``last_error``): what
        ``dead_letter: {store: source}`` keeps here instead of dead letters, for health,
        metrics and the dashboard. ``syncworker outbox retry-failed`` sends them again."""
        return int(await self._figure(_FAILED_COUNT) or 0)

    async def oldest_waiting_s(self) -> float | None:
        """Age in seconds of the oldest row not delivered yet (pending or being processed);
        None when nothing waits."""
        age = await self._figure(_OLDEST_WAITING_S)
        return None if age is None else float(age)

    async def _figure(self, query: sql.SQL) -> Any:
        statement = query.format(queue=sql.Identifier(self._names.queue))
        try:
            async with self._connection() as conn:
                row = await (await conn.execute(statement)).fetchone()
        except psycopg.Error as exc:
            raise self._error(exc, "count failed") from exc
        return row[0] if row else None

    # -- wait ------------------------------------------------------------------------------

    async def wait(self, timeout_s: float) -> None:
        """Return on a NOTIFY on the channel, or after ``timeout_s`` at most.

        Without a listening connection (LISTEN off, failed, or the connection dropped) this
        sleeps ``poll_interval`` (or ``timeout_s`` if shorter) after trying to LISTEN again;
        a re-established LISTEN returns at once so the caller claims what came in meanwhile.
        Never raises.
        """
        timeout_s = max(0.0, timeout_s)
        relisten = self.config.listen and self._listener is None
        if relisten and await self._start_listening(timeout_s):
            return
        listener = self._listener
        if listener is None:
            await asyncio.sleep(min(timeout_s, self.config.poll_interval))
            return
        started = time.monotonic()
        try:
            async for _ in listener.notifies(timeout=timeout_s, stop_after=1):
                break
        except psycopg.Error as exc:
            log.warning("pg_outbox_listen_lost", source=self.name, error=describe(exc))
            await self._stop_listening()
            if await self._start_listening(timeout_s):
                return
            left = timeout_s - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, min(left, self.config.poll_interval)))

    async def _start_listening(self, timeout_s: float | None = None) -> bool:
        """Open the dedicated connection and LISTEN; False (logged) when it cannot.

        From ``wait`` the attempt is bounded by its timeout (at least a second), so a server
        that does not answer cannot hold ``wait`` for the whole connect timeout.
        """
        limit_s = None if timeout_s is None else max(1.0, timeout_s)
        try:
            async with asyncio.timeout(limit_s):
                conn = await connect(self._listen_settings, self._label)
        except (SyncWorkerError, TimeoutError) as exc:
            log.warning("pg_outbox_listen_unavailable", source=self.name, error=str(exc))
            return False
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error as exc:
            log.warning("pg_outbox_listen_unavailable", source=self.name, error=describe(exc))
            await conn.close()
            return False
        self._listener = conn
        return True

    async def _stop_listening(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            await conn.close()

    async def listener_pid(self) -> int | None:
        """The backend pid of the listening connection (for diagnostics and tests)."""
        conn = self._listener
        return None if conn is None or conn.closed else conn.info.backend_pid

    # -- helpers ---------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._pool is None:
            raise ConnectionClosed(f"{self._label}: not open")
        return self._pool.connection()

    def _error(self, exc: psycopg.Error, what: str) -> SyncWorkerError:
        context = f"{self._label}: {what}"
        return dependency_error(exc, context) or ConnectorError(f"{context}: {describe(exc)}")


_FAILED_COUNT = sql.SQL("SELECT count(*) FROM {queue} WHERE status = 'failed'")
# Pending and processing rows are the ones the claim index holds, so this reads only them.
_OLDEST_WAITING_S = sql.SQL(
    "SELECT extract(epoch FROM now() - min(created_at)) FROM {queue}"
    " WHERE status IN ('pending', 'processing')"
)


def _collapse(rows: Sequence[ClaimedRow]) -> list[_Change]:
    """One change per (table, record_id), in the order of its first queue row."""
    changes: dict[tuple[str, str], _Change] = {}
    for queue_id, table, record_id, operation, attempts, created_at in sorted(rows):
        change = changes.get((table, record_id))
        if change is None:
            changes[(table, record_id)] = _Change(
                table, record_id, [queue_id], operation, attempts, created_at
            )
            continue
        change.queue_ids.append(queue_id)
        change.operation = operation
        change.attempts = max(change.attempts, attempts)
    return list(changes.values())


def _is_row_error(exc: psycopg.Error) -> bool:
    """A SELECT failing because of a row's value (data exception, class 22, or a program
    limit such as the stack depth, class 54), not because of the database."""
    return (exc.sqlstate or "")[:2] in ("22", "54")


def _row_data(text: str) -> dict[str, Any] | str:
    """A row's ``to_jsonb`` text as exact values (``core.jsonvalue``: integers and decimals
    beyond a double keep their digits), or why it cannot be."""
    try:
        data = jsonvalue.loads(text, writable=True)
    except jsonvalue.UndecodableJSON as exc:
        return f"the row cannot be read as JSON ({exc.reason}): {exc}"
    except (ValueError, RecursionError) as exc:
        return f"the row cannot be read as JSON: {type(exc).__name__}: {exc}"
    return data if type(data) is dict else f"the row is not a JSON object: {text[:100]}"


def _to_record(change: _Change, row: dict[str, Any] | None) -> Record:
    meta = {
        "queue_ids": change.queue_ids,
        "operation": change.operation,
        "attempts": change.attempts,
        "received_at": change.received_at,
    }
    if row is None:
        return Record(change.record_id, {}, change.table, "delete", meta)
    return Record(change.record_id, row, change.table, "upsert", meta)


def _error_text(error: BaseException) -> str:
    if isinstance(error, psycopg.Error):
        return describe(error)
    return redact_url(f"{type(error).__name__}: {error}")
