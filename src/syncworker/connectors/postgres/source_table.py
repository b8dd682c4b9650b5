"""``pg_table``: a source that keeps a PostgreSQL table in sync (seed 004): an initial snapshot by
keyset pages, then every change through a trigger-fed change log, woken by LISTEN/NOTIFY, plus
a scheduled lookback over ``updated_at``.

Phases, all inside ``claim`` (the pipeline loop is the usual one):

1. **snapshot** (when due: ``snapshot: initial`` once, ``always`` at every start, and at every
   ``full`` run): pages ``WHERE (where) AND key > last ORDER BY key LIMIT n``, never OFFSET
   (``read_page``). The position saved (``snapshot`` checkpoint, through the pipeline's
   ``SourceContext``) is the last key of the contiguous prefix of ACKED pages, so a restart,
   even after kill -9, continues from there instead of from zero.
2. **stream**: starts once every snapshot page is acked, so changes made during the snapshot
   wait in the change log and land after it: a snapshot row never overwrites a streamed one.
   A claim takes the oldest log rows whose key is not in a batch in flight, collapses them
   per key and re-reads the rows' current state by key in one statement; a row gone, no
   longer matching ``where`` or soft-deleted is a delete. The ack deletes exactly the log
   rows claimed.
3. **lookback** (every ``lookback.interval``, and after every reconnect of the listener):
   one ``INSERT INTO log SELECT key, 'R' ... WHERE updated_at >= now() - window``, so the
   rows go through the stream path with its ordering; never two at once. The net for what
   bypasses the triggers; the change log covers everything else.

The install (``table_capture.install``, ``syncworker pg install``) creates the log, function
and triggers; ``open`` checks they exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Literal

import psycopg
import structlog
from psycopg import sql
from pydantic import BaseModel, Field, field_validator, model_validator

from syncworker.connectors.postgres import table_capture
from syncworker.connectors.postgres.client import (
    Connection,
    ConnectSettings,
    Pool,
    PostgresConnectionConfig,
    Statement,
    check_identifier,
    connect,
    create_pool,
    dependency_error,
    describe,
    describe_url,
    open_pool,
    rendered,
    split_table,
)
from syncworker.connectors.postgres.listener import Backoff, Listener
from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.protocols import BulkBatch, SourceContext
from syncworker.core.record import Batch, Record, wrap
from syncworker.errors import (
    ConfigError,
    ConnectionClosed,
    ConnectorError,
    PermanentError,
    SyncWorkerError,
)

log = structlog.get_logger(__name__)

SNAPSHOT_CHECKPOINT = "snapshot"
REALTIME_ERROR = "REALTIME_SYNC_CONNECTION_ERROR"
"""The seed's error type for the listening connection's failures (sync_errors.error_type)."""
TRUNCATE_ERROR = "SOURCE_TABLE_TRUNCATED"
_BACKLOG_REFRESH_S = 5.0


class _Settings(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class SoftDeleteConfig(_Settings):
    """A column marking rows as deleted: such rows are deleted from the target."""

    column: str = Field(description="The marking column (e.g. deleted_at or is_deleted).")
    value: bool | int | str | None = Field(
        None,
        description="The value meaning 'deleted' (e.g. true); null: deleted when the column "
        "is not NULL (a deleted_at timestamp).",
    )

    @field_validator("column")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier(value)


class LookbackConfig(_Settings):
    """The scheduled lookback (seed: SYNC_INTERVAL_MINUTES, SYNC_WINDOW_MULTIPLIER)."""

    interval: DurationS = Field(60.0, gt=0, description="How often it runs (seed: 1 minute).")
    window_multiplier: float = Field(
        3.0, ge=1, description="It looks back interval x this over updated_at (seed: 3)."
    )

    @property
    def window_s(self) -> float:
        return self.interval * self.window_multiplier


class ReconnectConfig(_Settings):
    """Backoff of the listening connection (seed: MAX_RECONNECT_ATTEMPTS)."""

    max_attempts: int = Field(
        10,
        ge=1,
        description="Failed attempts before the listener reports itself unhealthy "
        "(it keeps retrying every max_delay).",
    )
    initial_delay: DurationS = Field(1.0, gt=0, description="Wait after the first failure.")
    max_delay: DurationS = Field(30.0, gt=0, description="Longest wait between attempts.")
    multiplier: float = Field(2.0, ge=1, description="Growth of the wait per failure.")

    def backoff(self) -> Backoff:
        return Backoff(self.max_attempts, self.initial_delay, self.max_delay, self.multiplier)


class PgTableSourceConfig(PostgresConnectionConfig):
    """Settings of the ``pg_table`` source."""

    type: Literal["pg_table"] = Field(
        "pg_table", description="Connector type: a PostgreSQL table (snapshot + changes)."
    )
    table: str = Field(description="Source table ('table' or 'schema.table').")
    key: str = Field(
        "id",
        description="Its single-column primary key (or a column with a unique index of its "
        "own): bigint, integer, uuid, text... Its value as text is Record.key.",
    )
    updated_at: str | None = Field(
        "updated_at",
        description="Column the lookback scans (timestamptz); null: no lookback.",
    )
    columns: list[str] | None = Field(
        None,
        description="Columns read into Record.data (the key is always read); null: all.",
    )
    where: str | None = Field(
        None,
        description="SQL filter on the source (trusted config text, checked at open), e.g. "
        "\"status = 'active'\". A row that stops matching is deleted from the target.",
    )
    soft_delete: SoftDeleteConfig | None = Field(
        None,
        description="e.g. {column: deleted_at} or {column: is_deleted, value: true}: such rows "
        "are deleted from the target.",
    )
    change_table: str | None = Field(
        None,
        description="Change log table (default syncworker_<table>_changes, in the table's schema).",
    )
    trigger: str | None = Field(
        None, description="Row trigger name (default <table>_changes_trigger)."
    )
    function: str | None = Field(
        None, description="Trigger function name (default notify_<table>_changes)."
    )
    channel: str | None = Field(
        None, description="NOTIFY channel (default: the change log's name)."
    )
    snapshot: Literal["initial", "always", "never"] = Field(
        "initial",
        description="initial: once (resumable), then changes only; always: at every start; "
        "never: changes only. A full run (sync --full) always snapshots.",
    )
    snapshot_page_rows: int = Field(
        100_000,
        ge=1,
        description="Most rows per snapshot page. A page read as records never exceeds a "
        "batch (batch.size); a page copied by binary COPY (no processor, one postgres sink) "
        "streams through without being held in memory, so it takes this many rows: fewer, "
        "larger pages cost fewer commits and checkpoints (100,000: 1M rows in 10 pages).",
    )
    lookback: LookbackConfig = Field(default_factory=LookbackConfig)
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    listen: bool = Field(
        True,
        description="Wake on NOTIFY; false polls the change log every poll_interval only "
        "(behind PgBouncer in transaction mode, where LISTEN does not work).",
    )
    poll_interval: DurationS = Field(
        1.0, gt=0, description="How often the change log is read while not woken by NOTIFY."
    )

    @field_validator("table")
    @classmethod
    def _valid_table(cls, value: str) -> str:
        split_table(value)
        return value

    @field_validator("key", "updated_at", "trigger", "function", "channel")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @field_validator("columns")
    @classmethod
    def _valid_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one column, or null for all")
        for column in value:
            check_identifier(column)
        if len(set(value)) != len(value):
            raise ValueError("columns are listed more than once")
        return value

    @field_validator("change_table")
    @classmethod
    def _valid_change_table(cls, value: str | None) -> str | None:
        if value is not None:
            split_table(value)
        return value

    @field_validator("where")
    @classmethod
    def _valid_where(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _names_fit(self) -> PgTableSourceConfig:
        self.names()  # a derived name too long for PostgreSQL is a config error
        return self

    def names(self) -> table_capture.CaptureNames:
        """What the install created for this source (``table_capture.CaptureNames``)."""
        return table_capture.CaptureNames.for_table(
            self.table,
            change_table=self.change_table,
            trigger=self.trigger,
            function=self.function,
            channel=self.channel,
        )

    @property
    def read_columns(self) -> list[str] | None:
        """The columns read (the key first when not listed), or None for all."""
        if self.columns is None:
            return None
        return self.columns if self.key in self.columns else [self.key, *self.columns]


@dataclass(slots=True)
class TableToken:
    """What a batch carries back to ack/nack: its snapshot pages, or its change-log rows and
    the keys it holds (never claimed again until it is settled)."""

    pages: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Page:
    after: str | None
    last: str
    rows: int
    acked: bool = False


class Snapshot:
    """The snapshot's position: pages read, pages acked, and the checkpoint.

    The checkpoint (``snapshot``, JSON) holds ``last_key`` (the last key of the contiguous
    prefix of acked pages), ``rows`` (rows acked), ``started_at``, ``done`` and
    ``finished_at``. A nacked page rewinds the read position to its start and forgets the
    pages read after it (their acks no longer count), so no key range is skipped.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.context: SourceContext | None = None
        self.done = True
        self.cursor: str | None = None
        self.acked_key: str | None = None
        self.rows_acked = 0
        self.rows_read = 0
        self.rows_estimate: int | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.exhausted = False
        self.epoch = 0
        self._pages: dict[int, _Page] = {}
        self._next_page = 0
        self._save_lock = asyncio.Lock()

    @property
    def pending(self) -> bool:
        return bool(self._pages)

    async def load(self, mode: Literal["initial", "always", "never"]) -> None:
        """Where the snapshot stands at open: resumed, restarted, done or never."""
        if mode == "never":
            self._reset(done=True)
            return
        saved = await self._saved()
        if not saved or (mode == "always" and saved.get("done")):
            await self.restart()
            return
        self._reset(done=bool(saved.get("done")))
        self.cursor = self.acked_key = saved.get("last_key")
        self.rows_acked = self.rows_read = int(saved.get("rows") or 0)
        self.started_at = saved.get("started_at")
        self.finished_at = saved.get("finished_at")
        if not self.done:
            log.info(
                "pg_table_snapshot_resumed",
                source=self.source,
                after_key=self.acked_key,
                rows_done=self.rows_acked,
            )

    async def restart(self) -> None:
        self._reset(done=False)
        self.started_at = time.time()
        await self.save()
        log.info("pg_table_snapshot_started", source=self.source)

    def _reset(self, *, done: bool) -> None:
        self.done = done
        self.cursor = self.acked_key = None
        self.rows_acked = self.rows_read = 0
        self.started_at = self.finished_at = None
        self.exhausted = False
        self.epoch += 1
        self._pages.clear()

    async def _saved(self) -> dict[str, Any] | None:
        if self.context is None:
            return None
        text = await self.context.get_checkpoint(SNAPSHOT_CHECKPOINT)
        if not text:
            return None
        try:
            value = jsonvalue.loads(text)
        except ValueError:
            log.warning("pg_table_checkpoint_unreadable", source=self.source, value=text[:200])
            return None
        return value if isinstance(value, dict) else None

    def add_page(self, after: str | None, keys: Sequence[str], limit: int) -> int | None:
        """Record a page read after ``after``; its id (None for an empty page)."""
        return self.add_range(after, keys[-1] if keys else None, len(keys), limit)

    def add_range(
        self, after: str | None, last: str | None, rows: int, limit: int, *, ends: bool = True
    ) -> int | None:
        """Record a page of ``rows`` keys in ``(after, last]``; its id (None when empty).
        A page short of ``limit`` exhausts the snapshot unless ``ends`` is False (a page
        bounded above, the end of its range only)."""
        if rows < limit and ends:
            self.exhausted = True
        if not rows or last is None:
            return None
        page = self._next_page
        self._next_page += 1
        self._pages[page] = _Page(after, last, rows)
        self.cursor = last
        self.rows_read += rows
        return page

    def page_range(self, page: int) -> tuple[str | None, str] | None:
        """``(after, last]`` of a page still pending, or None."""
        found = self._pages.get(page)
        return None if found is None else (found.after, found.last)

    async def acked(self, pages: Sequence[int]) -> bool:
        """Mark ``pages`` acked and advance the checkpoint; True when this finished it."""
        for page in pages:
            if page in self._pages:
                self._pages[page].acked = True
        advanced = False
        while self._pages:
            first = next(iter(self._pages))
            if not self._pages[first].acked:
                break
            settled = self._pages.pop(first)
            self.acked_key = settled.last
            self.rows_acked += settled.rows
            advanced = True
        if self.exhausted and not self._pages and not self.done:
            await self.finish()
            return True
        if advanced:
            await self.save()
        return False

    def nacked(self, pages: Sequence[int]) -> None:
        """Pages handed back: read again from the earliest one's start."""
        known = [page for page in pages if page in self._pages]
        if not known:
            return
        first = min(known)
        restart_after = self._pages[first].after
        for page in [p for p in self._pages if p >= first]:
            del self._pages[page]
        self.cursor = restart_after
        self.rows_read = self.rows_acked + sum(p.rows for p in self._pages.values())
        self.exhausted = False
        self.epoch += 1

    async def finish(self) -> None:
        self.done = True
        self.finished_at = time.time()
        await self.save()
        log.info(
            "pg_table_snapshot_done",
            source=self.source,
            rows=self.rows_acked,
            duration_s=round(self.finished_at - (self.started_at or self.finished_at), 3),
        )

    async def save(self) -> None:
        """Write the checkpoint (the latest position, whatever order acks came in). A
        failure is logged: the position stays in memory and the next save writes it."""
        if self.context is None:
            return
        async with self._save_lock:
            value = jsonvalue.dumps_text(
                {
                    "last_key": self.acked_key,
                    "rows": self.rows_acked,
                    "started_at": self.started_at,
                    "done": self.done,
                    "finished_at": self.finished_at,
                }
            )
            try:
                await self.context.set_checkpoint(SNAPSHOT_CHECKPOINT, value)
            except Exception as exc:
                log.warning("pg_table_checkpoint_failed", source=self.source, error=str(exc))

    def status(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "rows": self.rows_acked,
            "rows_read": self.rows_read,
            "rows_estimate": self.rows_estimate,
            "last_key": self.acked_key,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(slots=True)
class _Lookback:
    next_due: float = 0.0
    requested: str | None = None
    last_at: float | None = None
    last_rows: int | None = None
    last_duration_ms: float | None = None
    runs: int = 0


@dataclass(frozen=True, slots=True)
class TableStatements:
    """Every statement of one source, composed once (identifiers quoted by psycopg; the
    ``where`` filter is the configuration's own SQL text)."""

    first_page: Statement
    next_page: Statement
    first_page_until: Statement
    next_page_until: Statement
    by_keys: Statement
    claim: Statement
    claim_reading: Statement
    ack: Statement
    lookback: Statement | None
    resync: Statement
    backlog: Statement
    estimate: Statement

    @classmethod
    def build(
        cls, config: PgTableSourceConfig, names: table_capture.CaptureNames, key_type: str
    ) -> TableStatements:
        key = sql.Identifier(config.key)
        # The statements run with parameters: a literal % of the filter (LIKE 'a%') is doubled.
        where = sql.SQL(config.where.replace("%", "%%")) if config.where else sql.SQL("true")
        fields = {
            "key": key,
            "table": names.table_id,
            "row": _row_json(config.read_columns),
            "keep": _not_soft_deleted(config.soft_delete),
            "where": where,
            # A type name from the catalog (format_type), not user input.
            "key_type": sql.SQL(key_type),
        }
        log_table = {"change_table": names.change_table_id}
        lookback = None
        if config.updated_at is not None:
            lookback = table_capture.LOOKBACK.format(
                key=key,
                table=names.table_id,
                updated_at=sql.Identifier(config.updated_at),
                **log_table,
            )
        return cls(
            first_page=FIRST_PAGE.format(**fields),
            next_page=NEXT_PAGE.format(**fields),
            first_page_until=FIRST_PAGE_UNTIL.format(**fields),
            next_page_until=NEXT_PAGE_UNTIL.format(**fields),
            by_keys=BY_KEYS.format(**fields),
            claim=table_capture.CLAIM_CHANGES.format(**log_table),
            claim_reading=CLAIM_READING.format(
                claim=table_capture.CLAIM_CHANGES.format(**log_table), **fields
            ),
            ack=table_capture.DELETE_CHANGES.format(**log_table),
            lookback=lookback,
            resync=table_capture.RESYNC.format(**log_table),
            backlog=table_capture.BACKLOG.format(**log_table),
            estimate=ESTIMATE.format(**fields),
        )


class PgTableSource:
    """Snapshot, then changes, of one PostgreSQL table (see the module docstring).

    Records: ``key`` the primary key as text, ``stream`` the table (as configured), ``op``
    ``upsert`` with ``data`` the row's columns (``to_jsonb``: numbers exact through
    ``core.jsonvalue``, jsonb as its JSON value, arrays as lists, timestamps, uuids and
    bytea as PostgreSQL's text of them, which the ``postgres`` sink writes back unchanged),
    or ``delete`` with empty ``data``; ``meta`` has ``phase`` (``snapshot``/``stream``) and,
    streamed, ``operation`` (the last logged: I, U, D or R). A column whose value cannot be
    read as exact JSON (nested deeper than sinks write) arrives wrapped
    (``core.record.wrap``) with its text, and is logged.

    One consumer per change log: run the pipeline with a lock for a standby worker.
    """

    config_model: ClassVar[type[PgTableSourceConfig]] = PgTableSourceConfig
    full_sync: ClassVar[bool] = True

    def __init__(self, config: PgTableSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, PgTableSourceConfig):
            config = PgTableSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self.names = config.names()
        self._label = f"pg_table {describe_url(config.url)!r} table {config.table!r}"
        self._settings = ConnectSettings(
            url=config.url,
            connect_timeout_s=config.connect_timeout,
            statement_timeout_s=config.statement_timeout,
            application_name=f"syncworker:{name}",
        )
        self._context = SourceContext(name)
        self._pool: Pool | None = None
        self._sql: TableStatements | None = None
        self._listener: Listener | None = None
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        self._drained = False
        self._snapshot = Snapshot(name)
        self._lookback = _Lookback()
        self._lookback_lock = asyncio.Lock()
        self._full_run = -1
        self._bulk_sink: Any = None
        self._bulk_checked = False
        self._copier: Any = None  # bulk.SnapshotCopier, when the fast path applies
        self._bulk_pages: set[int] = set()
        self._records_until: str | None = None
        self._changes_as_records = False
        self._wake_deferred = False  # a notification for a busy key waits for its settle
        self._backlog: int | None = None
        self._backlog_at = 0.0
        self._truncates: dict[str, Any] = {"seen": 0, "last_at": None}

    # -- lifecycle -------------------------------------------------------------------------

    def bind(self, context: SourceContext) -> None:
        """Checkpoints, error log and run mode from the pipeline (``UsesContext``)."""
        self._context = context

    async def open(self) -> None:
        """Check the table, its key, columns, filter and the installed capture, open the
        pool, load the snapshot position and start listening.

        Raises ``ConnectionFailed`` when the server is unreachable, ``ConfigError`` when the
        table, a column or the capture is missing or the filter does not compile. A LISTEN
        that fails is not fatal: the listener keeps retrying and the log is polled.
        """
        if self._pool is not None:
            return
        conn = await connect(self._settings, self._label)
        async with conn:
            try:
                key_type = await self._inspect(conn)
                statements = rendered(
                    TableStatements.build(self.config, self.names, key_type), conn
                )
                await self._check_filter(conn, statements)
            except psycopg.Error as exc:
                raise self._error(exc, "open failed") from exc
        self._sql = statements
        pool = create_pool(
            self._settings,
            min_size=self.config.pool_min,
            max_size=self.config.pool_max,
            name=f"syncworker-{self.name}",
        )
        await open_pool(pool, self.config.connect_timeout, self._label)
        self._pool = pool
        self._busy.clear()
        self._drained = False
        self._bulk_pages.clear()
        self._records_until = None
        self._snapshot = Snapshot(self.name)
        self._snapshot.context = self._context
        self._lookback = _Lookback(next_due=time.monotonic() + self.config.lookback.interval)
        try:
            await self._snapshot.load(self.config.snapshot)
            if not self._snapshot.done:
                await self._estimate()
            await self._warm_up()
        except BaseException:
            await self.close()
            raise
        if self.config.listen:
            self._listener = self._new_listener()
            await self._listener.start()

    async def close(self) -> None:
        """Stop listening and close the pool; unacked changes stay in the log."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        copier, self._copier = self._copier, None
        self._bulk_checked = False
        if copier is not None:
            await copier.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self._busy.clear()

    async def _inspect(self, conn: Connection) -> str:
        """The key column's type, after checking the table, key, columns and capture."""
        regclass = self.names.table_id.as_string(conn)
        table = self.config.table
        cursor = await conn.execute(_COLUMNS, (regclass,))
        types = {name: type_name for name, type_name in await cursor.fetchall()}
        if not types:
            raise ConfigError(f"{self._label}: table {table!r} does not exist")
        soft = self.config.soft_delete
        wanted = [
            ("key", self.config.key),
            *(("columns", column) for column in self.config.columns or ()),
            ("updated_at", self.config.updated_at),
            ("soft_delete.column", soft.column if soft else None),
        ]
        for setting, column in wanted:
            if column and column not in types:
                hint = " (null: no lookback)" if setting == "updated_at" else ""
                raise ConfigError(f"{self._label}: {setting}: table has no column {column!r}{hint}")
        row = await (await conn.execute(_UNIQUE_KEY, (regclass, self.config.key))).fetchone()
        if not row or not row[0]:
            raise ConfigError(
                f"{self._label}: key: column {self.config.key!r} is neither the primary key nor "
                "covered by a unique index of its own (keyset pages need a unique key)"
            )
        await self._check_capture(conn, regclass)
        return str(types[self.config.key])

    async def _warm_up(self) -> None:
        """Run the stream's reads once on the pool's connection, reading nothing, so the
        first claim after a start (the first change) does not pay for loading the server's
        catalog caches of the table and its log. A failure is only logged: the claim that
        follows reports it if it lasts."""
        statements = self._statements()
        try:
            async with self._connection() as conn:
                await conn.execute(statements.claim, {"busy": [], "limit": 0})
                await conn.execute(statements.claim_reading, {"busy": [], "limit": 0})
                await conn.execute(statements.by_keys, {"keys": []})
        except psycopg.Error as exc:
            log.warning("pg_table_warm_up_failed", source=self.name, error=describe(exc))

    async def _check_capture(self, conn: Connection, regclass: str) -> None:
        names = self.names
        log_row = await (
            await conn.execute("SELECT to_regclass(%s)", (names.change_table_id.as_string(conn),))
        ).fetchone()
        cursor = await conn.execute(_TRIGGER_STATE, (regclass, names.trigger))
        trigger = await cursor.fetchone()
        if not log_row or log_row[0] is None or trigger is None:
            raise ConfigError(
                f"{self._label}: change capture not installed (change table "
                f"{names.change_table_qualified!r}, trigger {names.trigger!r}); run "
                "`syncworker pg install --config FILE PIPELINE` first"
            )
        if trigger[0] == "D":
            log.warning(
                "pg_table_trigger_disabled",
                source=self.name,
                trigger=names.trigger,
                action="only the lookback over updated_at sees changes: ENABLE the trigger",
            )

    async def _check_filter(self, conn: Connection, statements: TableStatements) -> None:
        """Compile (EXPLAIN, never run) the page and key reads: a bad ``where`` stops here."""
        params: dict[str, Any] = {"after": None, "limit": 1, "keys": []}
        try:
            async with conn.transaction(force_rollback=True):
                await conn.execute(sql.SQL("EXPLAIN {}").format(statements.first_page), params)
                await conn.execute(sql.SQL("EXPLAIN {}").format(statements.by_keys), params)
        except psycopg.Error as exc:
            if self.config.where and (exc.sqlstate or "")[:2] in ("42", "22"):
                raise ConfigError(
                    f"{self._label}: where: {self.config.where!r} does not compile: {describe(exc)}"
                ) from None
            raise

    def _new_listener(self) -> Listener:
        settings = ConnectSettings(
            url=self.config.url,
            connect_timeout_s=self.config.connect_timeout,
            statement_timeout_s=0.0,
            application_name=f"syncworker:{self.name}:listen",
        )
        return Listener(
            settings,
            self.names.channel,
            self.config.reconnect.backoff(),
            source=self.name,
            label=self._label,
            on_notify=self._notified,
            on_reconnect=self._reconnected,
            on_error=self._listener_error,
        )

    def _notified(self, payload: str) -> None:
        """A change was logged (payload ``op:key``, the key left out when too long). A key
        in a batch still in flight cannot be claimed until that batch settles, so its
        notification wakes nothing now; the settle does (``_wake_deferred``)."""
        _, _, key = payload.partition(":")
        if key and key in self._busy:
            self._wake_deferred = True
            return
        self._wake.set()

    def _reconnected(self) -> None:
        # The log kept every change meanwhile; the lookback is the seed's extra net.
        self._lookback.requested = "reconnect"
        self._wake.set()

    async def _listener_error(self, message: str, attempt: int) -> None:
        metadata = {"channel": self.names.channel, "attempt": attempt, "source": self.name}
        await self._context.report_error(REALTIME_ERROR, message, metadata=metadata)

    # -- claim -----------------------------------------------------------------------------

    async def claim(self, limit: int) -> Batch | None:
        """The next snapshot page, or the next changes (see the module docstring).

        Never waits for more than is there. Raises ``ConnectorError`` (or a subclass) when
        the database fails; nothing is claimed then.
        """
        if limit <= 0:
            return None
        woken = self._wake.is_set()
        self._wake.clear()
        try:
            await self._follow_run_mode()
            if not self._snapshot.done:
                batch = await self._claim_snapshot(limit)
                if batch is not None or not self._snapshot.done:
                    return batch
            await self._lookback_if_due()
            if not (woken or self._wake.is_set()) and self._still_drained():
                return None  # a lookback that queued rows has set the wake
            return await self._claim_changes(limit)
        except psycopg.Error as exc:
            raise self._error(exc, "claim failed") from exc

    async def _follow_run_mode(self) -> None:
        context = self._context
        if context.mode == "full" and context.run != self._full_run:
            self._full_run = context.run
            await self._snapshot.restart()
            await self._estimate()

    async def _claim_snapshot(self, limit: int) -> Batch | None:
        snapshot = self._snapshot
        page_rows = min(limit, self.config.snapshot_page_rows)
        await self._prepare_bulk()
        while not snapshot.exhausted:
            epoch, after, until = snapshot.epoch, snapshot.cursor, self._records_until
            if self._copier is not None and until is None:
                # A copied page is streamed, never held: not bounded by the batch size.
                batch = await self._claim_bulk(after, self.config.snapshot_page_rows)
                if epoch != snapshot.epoch:
                    continue  # a nack rewound the position meanwhile
                if batch is not None:
                    return batch
                continue
            records = await self.read_page(after, page_rows, until)
            if epoch != snapshot.epoch:
                continue  # a nack rewound the position while this page was read
            if until is not None and len(records) < page_rows:
                self._records_until = None  # the refused range is served: bulk again
                snapshot.cursor = records[-1].key if records else until
            keys = [r.key for r in records]
            page = snapshot.add_range(
                after, keys[-1] if keys else None, len(keys), page_rows, ends=until is None
            )
            if page is not None:
                return Batch(records, TableToken(pages=[page]))
        if not snapshot.pending and not snapshot.done:
            await snapshot.finish()
        return None

    # -- the bulk fast path (connectors/postgres/bulk.py) ----------------------------------

    def offer_bulk(self, sink: Any) -> None:
        """Records would reach ``sink`` unchanged (no processors, one sink): snapshot pages
        may be copied into it with binary COPY, when ``bulk.SnapshotCopier.prepare`` finds
        every mapped column a plain source column of the same type (``CopiesInBulk``)."""
        self._bulk_sink = sink

    async def _prepare_bulk(self) -> None:
        """At the first snapshot claim (the sinks are open by then): the copier, or None
        (logged as ``pg_bulk_ineligible``) to stay on the record path."""
        if self._bulk_sink is None or self._bulk_checked:
            return
        from syncworker.connectors.postgres import bulk

        if "%" in (self.config.where or ""):
            # bulk.py composes the filter into statements run with parameters as it is: a
            # literal % (LIKE 'a%') would be read as a placeholder there.
            log.info("pg_bulk_ineligible", table=self.config.table, reason="the filter has a %")
            self._bulk_checked = True
            return

        soft = self.config.soft_delete
        spec = bulk.SnapshotSpec(
            settings=self._settings,
            table=self.config.table,
            key=self.config.key,
            stream=self.config.table,
            where=self.config.where,
            keep=None if soft is None else _not_soft_deleted(soft),
            columns=self.config.read_columns,
        )
        self._copier = await bulk.SnapshotCopier.prepare(spec, self._bulk_sink)
        self._bulk_checked = True

    async def _claim_bulk(self, after: str | None, limit: int) -> Batch | None:
        """A page planned for the copier: a ``BulkBatch`` whose ``load`` copies it; None
        when no row is left (the snapshot is exhausted) or a nack rewound meanwhile."""
        copier = self._copier
        assert copier is not None
        epoch = self._snapshot.epoch
        plan = await copier.plan_page(after, limit)
        if epoch != self._snapshot.epoch:
            return None
        if plan is None:
            self._snapshot.exhausted = True
            return None
        page = self._snapshot.add_range(after, plan.last_key, plan.rows, limit)
        if page is None:
            return None
        self._bulk_pages.add(page)
        return BulkBatch(
            records=[],
            token=TableToken(pages=[page]),
            rows=plan.rows,
            stream=self.config.table,
            load=partial(copier.copy_page, plan),
        )

    async def read_page(
        self, after_key: str | None, limit: int, until_key: str | None = None
    ) -> list[Record]:
        """One snapshot page: the rows matching ``where`` with a key above ``after_key``
        (None: from the first) and, given ``until_key``, at most it, in key order, at most
        ``limit``. A soft-deleted row is a delete record. No bookkeeping: the caller owns
        the position (``Snapshot``)."""
        statements = self._statements()
        if until_key is None:
            query = statements.first_page if after_key is None else statements.next_page
        else:
            query = statements.first_page_until if after_key is None else statements.next_page_until
        params = {"after": after_key, "limit": limit, "until": until_key}
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            rows: list[tuple[str, str, bool]] = await cursor.fetchall()
            decoded = await self._decode(conn, rows)
        return [self._record(key, data, "snapshot") for key, data in decoded]

    def _still_drained(self) -> bool:
        """True when the log cannot hold a row to claim: the last claim found fewer free
        rows than it asked for, nothing woke the source since (a commit after that claim's
        read NOTIFYs while the listener is connected), and no batch was settled since (its
        keys' later rows become free then). Only while a batch is in flight: the claims that
        fill a batch, or come while one is being written, then cost no round trip; any other
        claim reads the log (a row logged without a NOTIFY is found then)."""
        listener = self._listener
        return self._drained and bool(self._busy) and listener is not None and listener.connected

    async def _claim_changes(self, limit: int) -> Batch | None:
        statements = self._statements()
        await self._prepare_bulk()
        while True:
            # A claim that cannot be copied in bulk reads its keys' rows in the same
            # statement: one round trip where a claim and a read of the keys take two.
            # (A claim of up to ``limit`` rows that could go by the copier reads nothing.)
            reads = not self._copies_changes(limit)
            async with self._connection() as conn:
                params = {"busy": list(self._busy), "limit": limit}
                # Planned with its values every time, never prepared: a generic plan tests
                # ``key <> ALL(busy)`` by scanning the array for every log row (10,000 keys in
                # flight over 10,000 rows: seconds per claim); a custom plan hashes it.
                statement = statements.claim_reading if reads else statements.claim
                claim = await conn.execute(statement, params, prepare=False)
                found = await claim.fetchall()
                rows = [row[:3] for row in found if row[0] is not None] if reads else found
                self._drained = len(rows) < limit
                await self._refresh_backlog(conn)
                if not rows:
                    return None
                truncates = [row_id for row_id, _, op in rows if op == "T"]
                if truncates:
                    await self._truncated(conn, truncates)
                changes = _collapse([row for row in rows if row[2] != "T"])
                if not changes:
                    continue
                ids = [row_id for change in changes.values() for row_id in change.ids]
                if self._copies_changes(len(changes)):
                    return self._bulk_changes(list(changes), ids)
                self._changes_as_records = False
                if reads:
                    read = [(row[1], row[3], row[4]) for row in found if row[0] is None]
                    current = dict(await self._decode(conn, read))
                else:
                    current = dict(await self._read_keys(conn, list(changes)))
            records = [
                self._record(key, current.get(key), "stream", change.operation)
                for key, change in changes.items()
            ]
            self._busy.update(changes)
            return Batch(records, TableToken(ids=ids, keys=list(changes)))

    def _copies_changes(self, keys: int) -> bool:
        """Whether a claim of ``keys`` changed keys goes by the copier (bulk.py): there is
        one, the claim is big enough to gain from it, and the last copied claim was not
        refused (its keys are then served once as records, which names the bad rows)."""
        from syncworker.connectors.postgres.bulk import CHANGES_MIN_KEYS

        if self._copier is None or self._changes_as_records:
            return False
        return keys >= CHANGES_MIN_KEYS

    def _bulk_changes(self, keys: list[str], ids: list[int]) -> BulkBatch:
        """The claimed changes as a ``BulkBatch`` whose ``load`` copies the keys' current
        state into the sink's table (and deletes those gone); settled like any batch."""
        copier = self._copier
        assert copier is not None
        self._busy.update(keys)
        return BulkBatch(
            records=[],
            token=TableToken(ids=ids, keys=keys),
            rows=len(keys),
            stream=self.config.table,
            load=partial(copier.copy_keys, keys),
        )

    async def _read_keys(
        self, conn: Connection, keys: list[str]
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """The current state of ``keys``: data, or None when gone, filtered out or
        soft-deleted (keys not found are simply absent)."""
        cursor = await conn.execute(self._statements().by_keys, {"keys": keys})
        return await self._decode(conn, await cursor.fetchall())

    async def _decode(
        self, conn: Connection, rows: Sequence[tuple[str, str, bool]]
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """Rows (key, row JSON text, kept) as (key, exact data or None for a delete)."""
        decoded: list[tuple[str, dict[str, Any] | None]] = []
        for key, text, keep in rows:
            if not keep:
                decoded.append((key, None))
                continue
            try:
                data = jsonvalue.loads(text, writable=True)
            except (jsonvalue.UndecodableJSON, ValueError, RecursionError):
                data = await self._decode_by_column(conn, key, text)
            decoded.append((key, data))
        return decoded

    async def _decode_by_column(self, conn: Connection, key: str, text: str) -> dict[str, Any]:
        """A row whose JSON cannot be read exactly as a whole: column by column, the ones
        that cannot wrapped with their text (``core.record.wrap``), loudly."""
        cursor = await conn.execute(_COLUMNS_OF_ROW, (text,))
        data: dict[str, Any] = {}
        for column, value_text in await cursor.fetchall():
            try:
                data[column] = jsonvalue.loads(value_text, writable=True)
            except jsonvalue.UndecodableJSON as exc:
                data[column] = wrap(value_text.encode(), exc.reason)
                log.warning(
                    "pg_table_value_wrapped",
                    source=self.name,
                    record_key=key[:200],
                    column=column,
                    reason=exc.reason,
                    detail=str(exc),
                )
        return data

    async def _truncated(self, conn: Connection, ids: list[int]) -> None:
        """A TRUNCATE emptied the table: its rows' deletes cannot be told one by one, so it
        is reported loudly (error log, status); ``verify --repair`` removes what the target
        still holds. The T rows are then dropped from the log."""
        self._truncates["seen"] = int(self._truncates["seen"]) + len(ids)
        self._truncates["last_at"] = time.time()
        message = (
            f"table {self.config.table!r} was truncated: the target keeps the rows it had; run "
            "`syncworker verify PIPELINE --repair` to delete them"
        )
        log.error("pg_table_truncated", source=self.name, table=self.config.table, action=message)
        await self._context.report_error(TRUNCATE_ERROR, message, metadata={"log_ids": ids})
        await conn.execute(self._statements().ack, {"ids": ids})

    def _record(
        self, key: str, data: dict[str, Any] | None, phase: str, operation: str | None = None
    ) -> Record:
        """An upsert of ``data``, or a delete when it is None (gone, filtered out)."""
        meta: dict[str, Any] = {"phase": phase}
        if operation is not None:
            meta["operation"] = operation
        if data is None:
            return Record(key, {}, self.config.table, "delete", meta)
        return Record(key, data, self.config.table, "upsert", meta)

    def merge(self, batches: list[Batch]) -> Batch:
        """The claims that filled one batch as one (one ack). Their keys never overlap: a key
        in flight is not claimed again, and snapshot pages do not repeat keys."""
        records: list[Record] = []
        merged = TableToken()
        for batch in batches:
            token = batch.token
            if not isinstance(token, TableToken):
                raise TypeError(f"{self._label}: cannot merge a batch it did not claim")
            records += batch.records
            merged.pages += token.pages
            merged.ids += token.ids
            merged.keys += token.keys
        return Batch(records, merged)

    # -- finish ----------------------------------------------------------------------------

    async def ack(self, batch: Batch) -> None:
        """Forget the batch: its change-log rows are deleted, its snapshot pages counted
        (the checkpoint advances over the acked prefix). Its keys may be claimed again even
        when the delete fails (raised as ``ConnectorError``): the rows left are delivered
        once more, which idempotent sinks absorb."""
        token = batch.token
        if not isinstance(token, TableToken):
            return
        self._drained = False
        try:
            if token.ids:
                async with self._connection() as conn:
                    await conn.execute(self._statements().ack, {"ids": token.ids})
        except psycopg.Error as exc:
            raise self._error(exc, "ack failed") from exc
        finally:
            self._busy.difference_update(token.keys)
            self._wake_if_deferred()
        self._bulk_pages.difference_update(token.pages)
        if token.pages and await self._snapshot.acked(token.pages):
            self._wake.set()  # the stream may start now

    def _wake_if_deferred(self) -> None:
        if self._wake_deferred:
            self._wake_deferred = False
            self._wake.set()

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Hand the batch back: its change-log rows stay (claimed again, in order), its
        snapshot pages are read again. No I/O; never raises."""
        token = batch.token
        if not isinstance(token, TableToken):
            return
        self._drained = False
        self._busy.difference_update(token.keys)
        if isinstance(batch, BulkBatch) and token.ids and isinstance(error, PermanentError):
            # The target refused copied changes: the same keys (the oldest in the log, so
            # claimed next) come once as records, whose path dead-letters the bad rows.
            self._changes_as_records = True
        if token.pages:
            refused = isinstance(error, PermanentError) and self._bulk_pages.intersection(
                token.pages
            )
            # Page ids grow with the key within a position: the last page ends the range.
            last = self._snapshot.page_range(max(token.pages))
            self._snapshot.nacked(token.pages)
            if refused and last is not None:
                # The target refused the page's data: the same rows as records, so the record
                # path names the bad ones (dead letters) and writes the rest; then bulk again.
                self._records_until = last[1]
        self._bulk_pages.difference_update(token.pages)
        self._wake.set()

    # -- lookback, resync ------------------------------------------------------------------

    async def _lookback_if_due(self) -> None:
        if self._statements().lookback is None:
            return
        reason = self._lookback.requested
        if reason is None and time.monotonic() < self._lookback.next_due:
            return
        await self.lookback(reason or "schedule")

    async def lookback(self, reason: str = "manual") -> int | None:
        """Queue a re-read of every row whose ``updated_at`` is within the window
        (``lookback.interval`` x ``window_multiplier``): 'R' rows in the change log. Never
        two at once: returns None, doing nothing, when one is running (or there is no
        ``updated_at``); else how many rows it queued. The next scheduled one is due one
        interval after this one ends."""
        statement = self._statements().lookback
        if statement is None or self._lookback_lock.locked():
            return None
        async with self._lookback_lock:
            self._lookback.requested = None
            started, started_mono = time.time(), time.monotonic()
            window_s = self.config.lookback.window_s
            try:
                async with self._connection() as conn:
                    cursor = await conn.execute(statement, {"window_s": window_s})
                    rows = int(cursor.rowcount)
            except psycopg.Error as exc:
                raise self._error(exc, "lookback failed") from exc
            finally:
                self._lookback.next_due = time.monotonic() + self.config.lookback.interval
            duration_ms = (time.monotonic() - started_mono) * 1000.0
            self._lookback.last_at = started
            self._lookback.last_rows = rows
            self._lookback.last_duration_ms = round(duration_ms, 1)
            self._lookback.runs += 1
        log.info(
            "pg_table_lookback",
            source=self.name,
            reason=reason,
            rows=rows,
            window_s=window_s,
            duration_ms=round(duration_ms, 1),
        )
        if rows:
            self._wake.set()
        return rows

    async def resync(self, keys: list[str]) -> int:
        """Queue ``keys`` for a re-read through the stream path ('R' rows): each arrives with
        its current state, or as a delete when gone or filtered out (``Resyncs``)."""
        if not keys:
            return 0
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(self._statements().resync, {"keys": list(keys)})
                count = int(cursor.rowcount)
        except psycopg.Error as exc:
            raise self._error(exc, "resync failed") from exc
        self._wake.set()
        return count

    # -- wait, status ----------------------------------------------------------------------

    async def wait(self, timeout_s: float) -> None:
        """Return on a NOTIFY (or a reason to claim: a snapshot finished, a reconnect, a
        nack), or after ``timeout_s`` at most; ``poll_interval`` at most while not
        listening. Never raises."""
        if self._wake.is_set():
            return
        listening = self._listener is not None and self._listener.connected
        limit_s = timeout_s if listening else min(timeout_s, self.config.poll_interval)
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, limit_s))
        except TimeoutError:
            return

    async def backlog(self) -> int:
        """Rows waiting in the change log (those of batches in flight included)."""
        try:
            async with self._connection() as conn:
                await self._refresh_backlog(conn, force=True)
        except psycopg.Error as exc:
            raise self._error(exc, "backlog failed") from exc
        return self._backlog or 0

    async def _refresh_backlog(self, conn: Connection, *, force: bool = False) -> None:
        if not force and time.monotonic() < self._backlog_at:
            return
        row = await (await conn.execute(self._statements().backlog)).fetchone()
        self._backlog = int(row[0]) if row else 0
        self._backlog_at = time.monotonic() + _BACKLOG_REFRESH_S

    def status(self) -> dict[str, Any]:
        """``source_status``: phase, snapshot progress, listener, lookback, backlog (the
        last count, refreshed every few seconds by claims) and truncates seen."""
        lookback = self._lookback
        next_at = None
        if self._sql is not None and self._sql.lookback is not None:
            next_at = time.time() + max(0.0, lookback.next_due - time.monotonic())
        listener = (
            self._listener.status()
            if self._listener is not None
            else {
                "enabled": self.config.listen,
                "connected": False,
                "reconnect_attempts": 0,
                "gave_up": False,
                "last_error": None,
            }
        )
        return {
            "phase": "stream" if self._snapshot.done else "snapshot",
            "snapshot": {**self._snapshot.status(), "bulk": self._bulk_status()},
            "listener": listener,
            "lookback": {
                "enabled": next_at is not None,
                "running": self._lookback_lock.locked(),
                "last_at": lookback.last_at,
                "last_rows": lookback.last_rows,
                "last_duration_ms": lookback.last_duration_ms,
                "runs": lookback.runs,
                "next_at": next_at,
                "interval_s": self.config.lookback.interval,
                "window_s": self.config.lookback.window_s,
            },
            "backlog": self._backlog,
            "in_flight_keys": len(self._busy),
            "truncates": dict(self._truncates),
        }

    def _bulk_status(self) -> dict[str, Any]:
        copier = self._copier
        if copier is None:
            return {"enabled": False, "pages": 0, "pages_direct": 0}
        return {"enabled": True, "pages": copier.pages, "pages_direct": copier.pages_direct}

    async def listener_pid(self) -> int | None:
        """The backend pid of the listening connection (for diagnostics and tests)."""
        return None if self._listener is None else self._listener.backend_pid

    # -- helpers ---------------------------------------------------------------------------

    async def _estimate(self) -> None:
        """The planner's row count for the snapshot (``where`` applied): progress bars."""
        try:
            async with self._connection() as conn:
                # {}: run with (no) parameters, so the filter's doubled % reads as one.
                row = await (await conn.execute(self._statements().estimate, {})).fetchone()
        except psycopg.Error as exc:
            log.warning("pg_table_estimate_failed", source=self.name, error=describe(exc))
            return
        if row and row[0]:
            plan = row[0][0] if isinstance(row[0], list) else row[0]
            rows = plan.get("Plan", {}).get("Plan Rows") if isinstance(plan, dict) else None
            self._snapshot.rows_estimate = int(rows) if rows is not None else None

    def _statements(self) -> TableStatements:
        if self._sql is None:
            raise ConnectionClosed(f"{self._label}: not open")
        return self._sql

    def _connection(self) -> Any:
        if self._pool is None:
            raise ConnectionClosed(f"{self._label}: not open")
        return self._pool.connection()

    def _error(self, exc: psycopg.Error, what: str) -> SyncWorkerError:
        context = f"{self._label}: {what}"
        return dependency_error(exc, context) or ConnectorError(f"{context}: {describe(exc)}")


@dataclass(slots=True)
class _Change:
    ids: list[int]
    operation: str


def _collapse(rows: Sequence[tuple[int, str, str]]) -> dict[str, _Change]:
    """One change per key, in the order of its first log row (the rows come in id order)."""
    changes: dict[str, _Change] = {}
    for row_id, key, op in rows:
        change = changes.get(key)
        if change is None:
            changes[key] = _Change([row_id], op)
        else:
            change.ids.append(row_id)
            change.operation = op
    return changes


def _row_json(columns: list[str] | None) -> sql.Composable:
    """The row as jsonb: every column, or only ``columns`` (in a scope of their own, so the
    ``where`` filter's unqualified names still mean the table's columns). ``t.*``, not ``t``:
    a column named ``t`` would be taken instead of the row."""
    if columns is None:
        return sql.SQL("to_jsonb(t.*)")
    listed = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns)
    return sql.SQL("(SELECT to_jsonb(r.*) FROM (SELECT {}) AS r)").format(listed)


def _not_soft_deleted(soft_delete: SoftDeleteConfig | None) -> sql.Composable:
    if soft_delete is None:
        return sql.SQL("true")
    column = sql.SQL("t.{}").format(sql.Identifier(soft_delete.column))
    if soft_delete.value is None:
        return sql.SQL("{} IS NULL").format(column)
    # A configured constant, quoted by psycopg (never a record's value).
    return sql.SQL("{} IS DISTINCT FROM {}").format(column, sql.Literal(soft_delete.value))


# The source's reads. {row}, {keep} and {where} are built above; the key type is the
# catalog's. Casting the text keys to it keeps the primary key index usable.
_PAGE = "SELECT t.{key}::text, {row}::text, {keep} FROM {table} AS t WHERE ({where})"
_UNTIL = " AND t.{key} <= %(until)s::text::{key_type}"
_AFTER = " AND t.{key} > %(after)s::text::{key_type}"
_ORDER = " ORDER BY t.{key} LIMIT %(limit)s"
FIRST_PAGE = sql.SQL(_PAGE + _ORDER)
NEXT_PAGE = sql.SQL(_PAGE + _AFTER + _ORDER)
FIRST_PAGE_UNTIL = sql.SQL(_PAGE + _UNTIL + _ORDER)
NEXT_PAGE_UNTIL = sql.SQL(_PAGE + _AFTER + _UNTIL + _ORDER)
"""Pages bounded above: a range a bulk copy could not write, served again as records."""
BY_KEYS = sql.SQL(
    "SELECT t.{key}::text, {row}::text, coalesce(({where}), false) AND {keep}"
    " FROM {table} AS t WHERE t.{key} = ANY(%(keys)s::text[]::{key_type}[])"
)
"""Rows by key, each with whether it is still to be kept (matches ``where``, not
soft-deleted): a row not kept, or not found, becomes a delete."""
CLAIM_READING = sql.SQL(
    "WITH c AS ({claim})"
    " SELECT c.id, c.key, c.op, NULL::text, NULL::boolean FROM c"
    " UNION ALL"
    " SELECT NULL, t.{key}::text, NULL, {row}::text, coalesce(({where}), false) AND {keep}"
    " FROM {table} AS t"
    " WHERE t.{key} = ANY(ARRAY(SELECT c.key::{key_type} FROM c WHERE c.op <> 'T'))"
    " ORDER BY 1"
)
"""The claim (``table_capture.CLAIM_CHANGES``) and ``BY_KEYS`` of its keys in one statement,
so in one snapshot: the log rows (id, key, op) in id order, then the rows read (no id; key,
row, kept). The keys go to the index as an array, as ``BY_KEYS`` sends them."""
ESTIMATE = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} AS t WHERE ({where})")

_COLUMNS = (
    "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
    " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
)
_UNIQUE_KEY = (
    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a"
    " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
    " WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indnkeyatts = 1"
    " AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = %s)"
)
_TRIGGER_STATE = (
    "SELECT tgenabled FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s"
    " AND NOT tgisinternal"
)
_COLUMNS_OF_ROW = "SELECT key, value::text FROM jsonb_each(%s::jsonb)"
