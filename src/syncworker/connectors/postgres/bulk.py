"""The snapshot fast path: pages of a ``pg_table`` source copied into a ``postgres`` sink's
table with binary COPY, without ever becoming records in Python.

A snapshot page is a key range ``(after_key, last_key]`` of the source table (keyset, as the
record path pages). ``SnapshotCopier.copy_page`` streams ``COPY (SELECT <mapped columns>
FROM <table> WHERE <filter> AND <range>) TO STDOUT (FORMAT binary)`` from the source into
``COPY ... FROM STDIN (FORMAT binary)`` on the target, in one target transaction:

- when the page's key range holds no row in the target yet (an initial snapshot), straight
  into the target table: what the hand-written ``psql | psql`` floor does;
- otherwise into the sink's staging table, then the sink's own merge (its ``upsert``
  statement: the same ``ON CONFLICT DO UPDATE`` with the stale-write guard and fencing), so a
  stale snapshot row never overwrites a newer one;
- soft-deleted rows of the range (not the source's ``keep`` condition) are deleted from the
  target with the sink's ``delete`` statement.

Exactly the rows the record path would write reach the target, with the same values: a page
is copied only when every staged column is a plain source column of the very same built-in
type as its target column (or text into text), the key too, so the binary representations
match by construction and no SQL cast can alter a value; anything else (``$data``, a nested
path, a json column the record path re-encodes, a user-defined type, a processor in the
pipeline) makes the whole pipeline use the record path (``prepare`` says why).

Changes go the same way (``SnapshotCopier.copy_keys``): a claim of at least
``CHANGES_MIN_KEYS`` changed keys streams ``COPY (SELECT <mapped columns> FROM <table> WHERE
<filter> AND <key> = ANY(<keys>))`` into the staging table and the sink's merge, and deletes
from the target the keys with no live source row left (gone, filtered out, soft-deleted): the
record path's reading of the same keys, without decoding and re-encoding every value in Python.

When the target refuses a page's data (a NOT NULL, a CHECK, a length, a foreign key...), the
transaction is rolled back and ``BulkRefused`` raised: the source then serves the same rows
as records, so the record path names and dead-letters the bad rows one by one and writes the
rest. A database that is down raises the sink's usual ``ConnectionClosed`` /
``ConnectionFailed`` / ``RetryableError`` (the batch is rolled back and retried), a refused
configuration ``ConfigRefused``.

The copy runs in a worker thread on plain (synchronous) connections, one source and one
target connection per page in flight: the bytes pass through Python in 256 kB blocks, and
the event loop stays free meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from psycopg import sql

from syncworker.connectors.postgres.client import (
    ConnectSettings,
    Statement,
    dependency_error,
    describe,
    describe_url,
    table_identifier,
)
from syncworker.coord import current_fencing_token
from syncworker.errors import ConnectorError, PermanentError, SyncWorkerError

if TYPE_CHECKING:
    from syncworker.connectors.postgres.sink import PostgresSink

log = structlog.get_logger(__name__)

FIRST_USER_OID = 16_384
"""Types below this OID are built in: the same type (and binary format) in every database."""
TEXT_TYPES = frozenset({25, 1043})  # text, varchar: one binary format (varchar checks length)
KEY_ORDER_TYPES = frozenset({20, 21, 23, 2950})
"""int8, int2, int4, uuid: ordered the same way in any two databases (no collation), so the
target can be asked whether a page's key range is empty."""
JSON_TYPE = 114  # json keeps its text as sent; the record path re-encodes it: not copied
WRITE_BLOCK_BYTES = 256 * 1024
BATCH_VALUES = frozenset({"$op", "$synced_at", "$fencing_token"})

COLUMN_TYPES = (
    "SELECT a.attname, a.atttypid::int FROM pg_attribute a"
    " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
)
KEY_TYPE = (
    "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a"
    " WHERE a.attrelid = %s::regclass AND a.attname = %s"
)
COPY_KEYS = sql.SQL(
    "COPY (SELECT {exprs} FROM {table} AS t WHERE {live} AND {key} = ANY({keys}::{type}[]))"
    " TO STDOUT (FORMAT binary)"
)
CHANGES_MIN_KEYS = 500
"""The fewest changed keys a claim copies in bulk: below it the record path's one-statement
merge costs less than the copy's extra round trips (staging, COPY out and in, the deletes)."""
COPY_OUT = sql.SQL(
    "COPY (SELECT {exprs} FROM {table} AS t WHERE {live} AND ({after}::{type} IS NULL OR {key} >"
    " {after}::{type}) AND {key} <= {last}::{type} ORDER BY {key}) TO STDOUT (FORMAT binary)"
)


class _RaceLost(Exception):
    """A direct COPY met a key written since the range was found empty."""


class BulkRefused(PermanentError):
    """The target refused a bulk page's data: serve the same rows again as records, so the
    record path isolates and dead-letters the bad ones."""


@dataclass(frozen=True, slots=True)
class SnapshotSpec:
    """What the source tells the copier about its snapshot."""

    settings: ConnectSettings
    """How to connect to the source database."""
    table: str
    key: str
    stream: str
    """``Record.stream`` of the source's records (for a ``$stream`` column)."""
    where: str | None = None
    """The source's SQL filter (trusted configuration text), or None."""
    keep: sql.Composable | None = None
    """A SQL condition on the row (alias ``t``) true when it is not soft-deleted, or None
    without soft delete. Soft-deleted rows of a page are deleted from the target, as the
    record path's delete records do."""
    columns: Sequence[str] | None = None
    """The source columns records carry (``columns`` of the source), None for all: a
    target column mapped to any other reads NULL in the record path, so is not copied."""


@dataclass(frozen=True, slots=True)
class PagePlan:
    """One snapshot page: the source rows matching the filter with a key in
    ``(after_key, last_key]`` (``after_key`` None: from the first key); ``rows`` of them."""

    after_key: str | None
    last_key: str
    rows: int


@dataclass(frozen=True, slots=True)
class _Target:
    """The sink's side, read from the sink itself so the bulk path runs its statements."""

    settings: ConnectSettings
    label: str
    table: str
    key_column: str
    staged: list[tuple[str, str]]
    """(target column, source path) of every staged column after the key."""
    stage: Statement
    upsert: Statement
    delete: Statement
    remaining: Statement
    held: Statement
    fencing_column: str | None
    version_column: str | None
    has_batch_values: bool


def _target_of(sink: PostgresSink) -> _Target:
    # The sink's own compiled statements, so a bulk page is merged exactly as a batch of
    # records is (stale-write guard, fencing). Follow-up: a public accessor on the sink.
    statements = sink._statements
    columns = sink._columns
    return _Target(
        settings=sink._settings,
        label=f"postgres sink {describe_url(sink.config.url)!r} table {sink.config.table!r}",
        table=sink.config.table,
        key_column=sink.config.key_column,
        staged=[(c.name, c.source) for c in columns if c.source not in BATCH_VALUES],
        stage=statements.stage,
        upsert=statements.upsert,
        delete=statements.delete,
        remaining=statements.remaining,
        held=statements.held,
        fencing_column=sink.config.fencing_column,
        version_column=sink.config.version_column,
        has_batch_values=any(c.source in BATCH_VALUES for c in columns),
    )


@dataclass(slots=True)
class _Pair:
    source: psycopg.Connection[Any]
    target: psycopg.Connection[Any]

    def close(self) -> None:
        for conn in (self.source, self.target):
            with contextlib.suppress(psycopg.Error):
                conn.close()


@dataclass(slots=True)
class _Statements:
    """Everything one page runs, composed once at ``prepare``."""

    plan: sql.Composed
    copy_out: dict[str, sql.Composable]
    """COPY_OUT's parts but the bounds: COPY takes no parameters, so they are bound as
    literals per page."""
    deleted_keys: sql.Composed | None
    gone_keys: sql.Composed
    """Of ``%(keys)s``, those no row was staged for (no live source row left)."""
    direct_check: sql.Composed | None
    copy_direct: sql.Composed
    copy_staged: sql.Composed


@dataclass(slots=True)
class PageOutcome:
    """What one page did in the target."""

    written: int = 0
    deleted: int = 0
    stale: int = 0
    fenced: int = 0
    direct: bool = False


@dataclass(slots=True)
class SnapshotCopier:
    """Copies snapshot pages of one source table into one postgres sink's table."""

    spec: SnapshotSpec
    sink: PostgresSink
    target: _Target
    statements: _Statements
    key_type: str
    _idle: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False
    pages: int = 0
    pages_direct: int = 0
    changes: int = 0
    """Claims of changed keys copied (``copy_keys``)."""

    @classmethod
    async def prepare(cls, spec: SnapshotSpec, sink: Any) -> SnapshotCopier | None:
        """A copier when the pages of ``spec`` can go straight into ``sink`` (a postgres sink,
        open), or None, logged as ``pg_bulk_ineligible`` with the reason, when the record
        path must carry them. Raises the sink's errors when a database cannot be reached."""
        from syncworker.connectors.postgres.sink import PostgresSink

        if not isinstance(sink, PostgresSink):
            _ineligible(spec, f"the sink is {type(sink).__name__}, not postgres")
            return None
        target = _target_of(sink)
        if any(src.startswith("$") and src not in ("$key", "$stream") for _, src in target.staged):
            _ineligible(spec, "a column takes $data (the whole record as JSON)")
            return None
        try:
            pair = await asyncio.to_thread(_connect, spec.settings, target.settings)
            try:
                found = await asyncio.to_thread(_catalog, spec, target, pair)
            except BaseException:
                await asyncio.to_thread(pair.close)
                raise
        except psycopg.Error as exc:
            raise _translated(exc, target.label) from exc
        if isinstance(found, str):
            await asyncio.to_thread(pair.close)
            _ineligible(spec, found)
            return None
        source_types, target_types, key_type = found
        exprs = _select_list(spec, target, source_types, target_types)
        if isinstance(exprs, str):
            await asyncio.to_thread(pair.close)
            _ineligible(spec, exprs)
            return None
        direct = (
            not target.has_batch_values
            and target.fencing_column is None
            and source_types[spec.key] in KEY_ORDER_TYPES
            and target_types.get(target.key_column) == source_types[spec.key]
        )
        statements = _statements(spec, target, exprs, key_type, direct=direct)
        log.info(
            "pg_bulk_enabled",
            table=spec.table,
            sink=sink.name,
            direct_when_empty=direct,
            columns=len(exprs),
        )
        # The catalog's connections serve the first page (or claim of changes).
        return cls(spec, sink, target, statements, key_type, _idle=[pair])

    async def plan_page(self, after_key: str | None, limit: int) -> PagePlan | None:
        """The next page: up to ``limit`` rows matching the filter after ``after_key``
        (None: from the start), or None when no row is left."""
        found = await self._in_thread(self._plan_sync, after_key, limit)
        return found  # type: ignore[no-any-return]

    async def copy_page(self, plan: PagePlan) -> int:
        """Copy ``plan``'s rows into the target, committed before returning; the rows
        written (upserted, skipped as stale, or deleted as soft-deleted).

        Raises ``BulkRefused`` when the target refused the data (nothing of the page is
        written then), the sink's connection errors when a database is unavailable, and
        ``LockLost`` when fencing refused every row of the page."""
        token = current_fencing_token()
        try:
            outcome: PageOutcome = await self._in_thread(self._copy_sync, plan, token, True)
        except _RaceLost:
            # Rows of the range were written meanwhile (a racing writer): merge them instead,
            # on fresh connections (the failed COPY may have left the pair mid-stream).
            outcome = await self._in_thread(self._copy_sync, plan, token, False)
        self.pages += 1
        self.pages_direct += outcome.direct
        changes = outcome.written + outcome.deleted
        from syncworker.connectors.postgres.sink import Held

        self.sink._report(Held(fenced=outcome.fenced, stale=outcome.stale), changes, token)
        log.debug(
            "pg_bulk_page",
            table=self.spec.table,
            rows=plan.rows,
            last_key=plan.last_key,
            direct=outcome.direct,
            stale=outcome.stale,
        )
        return changes

    async def copy_keys(self, keys: Sequence[str]) -> int:
        """Bring the target's rows of ``keys`` (changed source keys, as text) to the source's
        current state, committed before returning: live rows copied and merged as a page's
        are (stale-write guard, fencing), the other keys deleted as the record path's delete
        records are. Returns the rows changed (written, skipped as stale, or deleted).

        Raises what ``copy_page`` raises: ``BulkRefused`` when the target refused the data
        (nothing written), the sink's connection errors, ``LockLost``."""
        token = current_fencing_token()
        outcome: PageOutcome = await self._in_thread(self._copy_keys_sync, list(keys), token)
        self.changes += 1
        changes = outcome.written + outcome.deleted
        from syncworker.connectors.postgres.sink import Held

        self.sink._report(Held(fenced=outcome.fenced, stale=outcome.stale), changes, token)
        log.debug(
            "pg_bulk_changes",
            table=self.spec.table,
            keys=len(keys),
            deleted=outcome.deleted,
            stale=outcome.stale,
        )
        return changes

    async def close(self) -> None:
        """Close the connections kept between pages (and those of pages still running, as
        they end)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for pair in idle:
            await asyncio.to_thread(pair.close)

    # -- in the worker thread ------------------------------------------------------------

    async def _in_thread(self, work: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(self._with_pair, work, *args)
        except (BulkRefused, _RaceLost):
            raise
        except psycopg.Error as exc:
            raise _translated(exc, self.target.label) from exc

    def _with_pair(self, work: Any, *args: Any) -> Any:
        pair = self._take()
        try:
            result = work(pair, *args)
        except BaseException:
            pair.close()  # mid-COPY or broken: never reused
            raise
        with self._lock:
            if not self._closed:
                self._idle.append(pair)
                return result
        pair.close()  # closed while this page ran (its await was cancelled)
        return result

    def _take(self) -> _Pair:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _connect(self.spec.settings, self.target.settings)

    def _plan_sync(self, pair: _Pair, after_key: str | None, limit: int) -> PagePlan | None:
        row = pair.source.execute(self.statements.plan, {"after": after_key, "limit": limit})
        last_key, rows = row.fetchone() or (None, 0)
        if last_key is None:
            return None
        return PagePlan(after_key, last_key, int(rows))

    def _copy_sync(
        self, pair: _Pair, plan: PagePlan, token: int | None, direct: bool
    ) -> PageOutcome:
        copy_out = COPY_OUT.format(
            **self.statements.copy_out,
            after=sql.Literal(plan.after_key),
            last=sql.Literal(plan.last_key),
        )
        params = {
            "synced_at": datetime.now(UTC),
            "op": "upsert",
            "token": token,
            "keys": [],
            "after": plan.after_key,
            "last": plan.last_key,
        }
        outcome = PageOutcome()
        with pair.target.transaction():
            if direct and self._range_empty(pair, params):
                try:
                    outcome.written = _pipe(pair, copy_out, self.statements.copy_direct)
                except psycopg.errors.UniqueViolation as exc:
                    raise _RaceLost from exc
                outcome.direct = True
            else:
                self._copy_staged(pair, copy_out, params, outcome)
            self._delete_soft_deleted(pair, params, outcome)
        return outcome

    def _copy_keys_sync(self, pair: _Pair, keys: list[str], token: int | None) -> PageOutcome:
        copy_out = COPY_KEYS.format(**self.statements.copy_out, keys=sql.Literal(keys))
        params = {"synced_at": datetime.now(UTC), "op": "upsert", "token": token, "keys": keys}
        outcome = PageOutcome()
        with pair.target.transaction():
            self._copy_staged(pair, copy_out, params, outcome)
            gone = [k for (k,) in pair.target.execute(self.statements.gone_keys, params)]
            if gone:
                deleting = {**params, "keys": gone}
                pair.target.execute(self.target.delete, deleting)
                outcome.deleted = len(gone)
                if self.target.fencing_column is not None:
                    row = pair.target.execute(self.target.remaining, deleting).fetchone()
                    outcome.fenced += int(row[0]) if row else 0
        return outcome

    def _range_empty(self, pair: _Pair, params: dict[str, Any]) -> bool:
        if self.statements.direct_check is None:
            return False
        row = pair.target.execute(self.statements.direct_check, params).fetchone()
        return bool(row and row[0])

    def _copy_staged(
        self, pair: _Pair, copy_out: sql.Composed, params: dict[str, Any], outcome: PageOutcome
    ) -> None:
        pair.target.execute(self.target.stage)
        staged = _pipe(pair, copy_out, self.statements.copy_staged)
        with pair.target.cursor() as cursor:
            cursor.execute(self.target.upsert, params, prepare=False)
            skipped = staged - cursor.rowcount
            outcome.written = staged
            if skipped:
                fenced, stale = self._held(cursor, skipped, params)
                outcome.fenced, outcome.stale = fenced, stale

    def _held(
        self, cursor: psycopg.Cursor[Any], skipped: int, params: dict[str, Any]
    ) -> tuple[int, int]:
        """(fenced, stale) of the ``skipped`` staged rows, as the sink's ``held_back``."""
        if self.target.fencing_column is None:
            return 0, skipped
        if self.target.version_column is None:
            return skipped, 0
        counts = cursor.execute(self.target.held, params).fetchone()
        return (int(counts[0]), int(counts[1])) if counts else (skipped, 0)

    def _delete_soft_deleted(
        self, pair: _Pair, params: dict[str, Any], outcome: PageOutcome
    ) -> None:
        if self.statements.deleted_keys is None:
            return
        keys = [k for (k,) in pair.source.execute(self.statements.deleted_keys, params)]
        if keys:
            pair.target.execute(self.target.delete, {**params, "keys": keys})
            outcome.deleted = len(keys)


def _pipe(pair: _Pair, copy_out: sql.Composed, copy_in: sql.Composed) -> int:
    """Stream one binary COPY from the source into one on the target; the rows moved."""
    with (
        pair.source.cursor() as out_cursor,
        pair.target.cursor() as in_cursor,
        out_cursor.copy(copy_out) as reading,
        in_cursor.copy(copy_in) as writing,
    ):
        block = bytearray()
        for data in reading:
            block += data
            if len(block) >= WRITE_BLOCK_BYTES:
                writing.write(block)
                block = bytearray()
        if block:
            writing.write(block)
        rows = out_cursor.rowcount  # reset when the cursor closes
    return max(0, rows)


# -- prepare ----------------------------------------------------------------------------


def _connect(source: ConnectSettings, target: ConnectSettings) -> _Pair:
    """A source and a target connection (autocommit), or neither."""
    source_conn = psycopg.connect(source.url, **source.kwargs())
    try:
        target_conn = psycopg.connect(target.url, **target.kwargs())
    except BaseException:
        source_conn.close()
        raise
    return _Pair(source_conn, target_conn)


def _catalog(
    spec: SnapshotSpec, target: _Target, pair: _Pair
) -> tuple[dict[str, int], dict[str, int], str] | str:
    """Column types of both tables and the source key's type name (or why not eligible)."""
    conn = pair.source
    source_types = _types(conn, spec.table)
    row = conn.execute(KEY_TYPE, (table_identifier(spec.table).as_string(conn), spec.key))
    key_row = row.fetchone()
    target_types = _types(pair.target, target.table)
    if not source_types or key_row is None:
        return f"source table {spec.table!r} or its key {spec.key!r} not found"
    return source_types, target_types, str(key_row[0])


def _types(conn: psycopg.Connection[Any], table: str) -> dict[str, int]:
    try:
        rows = conn.execute(COLUMN_TYPES, (table_identifier(table).as_string(conn),))
    except psycopg.errors.UndefinedTable:
        return {}
    return {name: oid for name, oid in rows}


def _select_list(
    spec: SnapshotSpec,
    target: _Target,
    source_types: dict[str, int],
    target_types: dict[str, int],
) -> list[sql.Composable] | str:
    """The source expression of every staged target column (key first), or why the page
    cannot be copied as it is."""
    exprs: list[sql.Composable] = []
    columns = [(target.key_column, "$key"), *target.staged]
    for column, source in columns:
        wanted = target_types.get(column)
        if wanted is None:
            return f"target column {column!r} not found"
        expr = _expression(spec, source, wanted, source_types)
        if isinstance(expr, str):
            return f"target column {column!r}: {expr}"
        exprs.append(expr)
    return exprs


def _expression(
    spec: SnapshotSpec, source: str, wanted: int, source_types: dict[str, int]
) -> sql.Composable | str:
    if source == "$stream":
        if wanted not in TEXT_TYPES:
            return "$stream into a non-text column"
        return sql.SQL("{}::text").format(sql.Literal(spec.stream))
    name = spec.key if source == "$key" else source
    if "." in name and name not in source_types:
        return f"{source!r} is a nested path"
    have = source_types.get(name)
    if have is None or (spec.columns is not None and name not in spec.columns):
        return f"{source!r} is not a column the source reads from {spec.table!r}"
    if wanted == JSON_TYPE or have == JSON_TYPE:
        return "json is re-encoded by the record path"
    if have == wanted and have < FIRST_USER_OID:
        return sql.Identifier(name)
    if wanted in TEXT_TYPES and have in TEXT_TYPES:
        return sql.SQL("{}::text").format(sql.Identifier(name))
    if source == "$key" and wanted in TEXT_TYPES and have in KEY_ORDER_TYPES:
        return sql.SQL("{}::text").format(sql.Identifier(name))  # what str(key) gives
    return f"source type oid {have} differs from target type oid {wanted} (or is user-defined)"


def _statements(
    spec: SnapshotSpec,
    target: _Target,
    exprs: Sequence[sql.Composable],
    key_type: str,
    *,
    direct: bool,
) -> _Statements:
    table, key = table_identifier(spec.table), sql.Identifier(spec.key)
    where = sql.SQL("({})").format(sql.SQL(spec.where)) if spec.where else sql.SQL("true")
    live = where if spec.keep is None else sql.SQL("{} AND ({})").format(where, spec.keep)
    typed = sql.SQL(key_type)
    in_range = sql.SQL("({0}::{2} IS NULL OR {1} > {0}::{2}) AND {1} <= {3}::{2}").format(
        sql.Placeholder("after"), key, typed, sql.Placeholder("last")
    )
    staged_names = [target.key_column, *(column for column, _ in target.staged)]
    in_columns = sql.SQL(", ").join(sql.Identifier(name) for name in staged_names)
    target_table, target_key = table_identifier(target.table), sql.Identifier(target.key_column)
    target_range = sql.SQL("({0}::{2} IS NULL OR {1} > {0}::{2}) AND {1} <= {3}::{2}").format(
        sql.Placeholder("after"), target_key, typed, sql.Placeholder("last")
    )
    deleted_keys = None
    if spec.keep is not None:
        deleted_keys = sql.SQL("SELECT {}::text FROM {} AS t WHERE {} AND NOT ({}) AND {}").format(
            key, table, where, spec.keep, in_range
        )
    gone_keys = sql.SQL(
        "SELECT k FROM unnest({}::text[]) AS k EXCEPT SELECT {}::text FROM {}"
    ).format(sql.Placeholder("keys"), target_key, sql.Identifier("pg_temp", "syncworker_staging"))
    return _Statements(
        # The page's last key and size in one index range scan; max() is not defined for
        # every key type (uuid), the window count is.
        plan=sql.SQL(
            "SELECT k::text, count(*) OVER () FROM (SELECT {key} AS k FROM {table} AS t"
            " WHERE {where} AND ({after}::{type} IS NULL OR {key} > {after}::{type})"
            " ORDER BY {key} LIMIT {limit}) page ORDER BY page.k DESC LIMIT 1"
        ).format(
            key=key,
            table=table,
            where=where,
            after=sql.Placeholder("after"),
            type=typed,
            limit=sql.Placeholder("limit"),
        ),
        copy_out={
            "exprs": sql.SQL(", ").join(exprs),
            "table": table,
            "live": live,
            "key": key,
            "type": typed,
        },
        deleted_keys=deleted_keys,
        gone_keys=gone_keys,
        direct_check=None
        if not direct
        else sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} WHERE {})").format(
            target_table, target_range
        ),
        copy_direct=sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            target_table, in_columns
        ),
        copy_staged=sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            sql.Identifier("pg_temp", "syncworker_staging"), in_columns
        ),
    )


def _ineligible(spec: SnapshotSpec, reason: str) -> None:
    log.info("pg_bulk_ineligible", table=spec.table, reason=reason, path="records")
    return None


def _translated(exc: psycopg.Error, label: str) -> SyncWorkerError:
    """The sink's error for a failed page: a dependency's, or ``BulkRefused`` for data."""
    translated = dependency_error(exc, label)
    if translated is not None:
        return translated
    if isinstance(exc, psycopg.DatabaseError) and exc.sqlstate:
        return BulkRefused(f"{label}: bulk page refused: {describe(exc)}")
    return ConnectorError(f"{label}: bulk page failed: {describe(exc)}")
