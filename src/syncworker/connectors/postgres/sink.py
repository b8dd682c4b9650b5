"""``postgres``: a sink that upserts and deletes records by key in a PostgreSQL table.

A batch is one transaction. Upserts are COPYed into a temporary staging table shaped like the
target's columns (``ON COMMIT DROP``), then merged with ONE ``INSERT ... SELECT ... ON CONFLICT
(key) DO UPDATE``: COPY moves rows an order of magnitude faster than a multi-row INSERT, and
the merge is a single statement whatever the batch size. Deletes are one ``DELETE ... WHERE key
= ANY(...)``. Writing a batch twice leaves the table as writing it once.

A batch of at most ``SMALL_BATCH_ROWS`` rows skips the staging table: its rows travel as
text-array parameters of one ``INSERT ... SELECT ... FROM unnest(...)`` with the same merge
(a stream of a few changes at a time pays one statement, not a temp table, a COPY and a
merge).

Values that are the same for the whole batch (``$synced_at``, ``$op``, the fencing token) are
statement parameters, not copied per row.

Two guards can hold a change back, ANDed in the merge's ``DO UPDATE ... WHERE``: fencing (a
worker that lost its lock cannot overwrite a newer holder's rows) and the stale-write guard
(``version_column``: an older state of a row never overwrites a newer one). A change held back
by the version guard is skipped, counted and logged (``postgres_rows_stale``), never refused:
the row already holds something newer. Only changes held back by fencing count towards
``LockLost``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from operator import attrgetter
from typing import Any, ClassVar, Literal
from uuid import UUID

import psycopg
import structlog
from psycopg import sql
from pydantic import Field, field_validator, model_validator

from syncworker.connectors.mapping import check_column_mapping
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
    is_data_error,
    open_pool,
    rendered,
    split_table,
    table_identifier,
)
from syncworker.coord import current_fencing_token
from syncworker.core import jsonvalue
from syncworker.core.protocols import WriteResult
from syncworker.core.record import Record
from syncworker.errors import (
    ConfigError,
    ConnectionClosed,
    ConnectorError,
    LockLost,
    PermanentError,
)

log = structlog.get_logger(__name__)

PER_RECORD_VALUES = frozenset({"$key", "$stream", "$data"})
"""Column sources read from each record (copied into the staging table)."""
BATCH_VALUES = frozenset({"$op", "$synced_at", "$fencing_token"})
"""Column sources that are the same for the whole batch (statement parameters)."""
SPECIAL_VALUES = PER_RECORD_VALUES | BATCH_VALUES

STAGING = sql.Identifier("pg_temp", "syncworker_staging")
ISOLATION = sql.Identifier("pg_temp", "syncworker_isolation")
ROW_NUMBER = sql.Identifier("syncworker row#")  # a name no mapped column can clash with
_COPY_LINE = re.compile(r"\bCOPY \S+, line (\d+)")
# A btree entry holds at most about a third of a page (2,704 bytes with 8 kB pages): a key
# past this many characters may not fit in the key column's index (unless it compresses).
_LONG_KEY_CHARS = 1_000
_JSON_TYPES = frozenset({114, 3802})  # json, jsonb
_FLOAT_TYPES: dict[int, ValueKind] = {700: "float4", 701: "float8"}  # real, double precision
_FLOAT_TYPE_NAMES = {"float4": "real", "float8": "double precision"}
_FLOAT4 = struct.Struct("f")

Getter = Callable[[Record], Any]
ValueKind = Literal["json", "array", "scalar", "float4", "float8"]


class PostgresSinkConfig(PostgresConnectionConfig):
    """Settings of the ``postgres`` sink."""

    type: Literal["postgres"] = Field("postgres", description="Connector type: a PostgreSQL table.")
    table: str = Field(
        "records",
        description="Table written to, optionally schema-qualified ('schema.table'). Names are "
        "quoted as given (case-sensitive), so a name cannot itself contain a dot.",
    )
    key_column: str = Field(
        "key",
        description="Column holding Record.key; must be the PRIMARY KEY or have a UNIQUE "
        "constraint of its own (ON CONFLICT needs one).",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Column name -> dotted path in record.data (e.g. 'user.email'), or one of "
        "$key, $stream, $op, $synced_at, $data (the whole data as JSON), $fencing_token. A "
        "missing path writes NULL; objects and lists are written as JSON (as arrays into array "
        "columns). The table must exist. Null = default layout: key text PRIMARY KEY, stream "
        "text, data jsonb, synced_at timestamptz.",
    )
    create_table: bool = Field(
        True,
        description="Create the default-layout table if missing (ignored with `columns`: that "
        "table must exist).",
    )
    fencing_column: str | None = Field(
        None,
        description="Column (bigint) storing the fencing token of the lock holder that wrote "
        "each row. A change only applies if the stored token is NULL or <= the writer's, so a "
        "worker that lost its lock cannot overwrite a newer holder's rows; a batch refused "
        "entirely raises LockLost. Added to the default layout; must exist with `columns`.",
    )
    version_column: str | None = Field(
        None,
        description="Column keeping each row's source version (e.g. source_updated_at), for "
        "the stale-write guard: an upsert applies only where the stored version is NULL or "
        "<= the record's, so an older state of a row never overwrites a newer one (skipped "
        "and logged as postgres_rows_stale, not refused). A record whose version is NULL "
        "applies only over a NULL one. Deletes are not guarded. Needs `version`; any type "
        "with an order (timestamptz, bigint, numeric, text...); added to the default layout "
        "as timestamptz; must exist with `columns`.",
    )
    version: str | None = Field(
        None,
        description="Dotted path in record.data of the record's version, written into "
        "version_column (e.g. updated_at). Needs version_column.",
    )

    @field_validator("table")
    @classmethod
    def _valid_table(cls, value: str) -> str:
        split_table(value)
        return value

    @field_validator("key_column", "fencing_column", "version_column")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @field_validator("version")
    @classmethod
    def _version_path(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("$") or not all(value.split("."))):
            raise ValueError(f"expected a dotted field path in record.data, got {value!r}")
        return value

    @field_validator("columns")
    @classmethod
    def _valid_columns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_column_mapping(value, SPECIAL_VALUES, check_identifier)

    @model_validator(mode="after")
    def _consistent(self) -> PostgresSinkConfig:
        if (self.version_column is None) != (self.version is None):
            raise ValueError(
                "version_column and version go together: the column keeping each row's "
                "version, and the field of record.data it is read from"
            )
        names = [self.key_column, *(self.columns or {})]
        for guard in (self.fencing_column, self.version_column):
            if guard is not None:
                names.append(guard)
        if len(set(names)) != len(names):
            raise ValueError(
                "column names must be distinct from each other, from key_column, "
                "fencing_column and version_column (key_column always holds Record.key, "
                "version_column is written from `version`)"
            )
        return self


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    source: str
    sql_type: str = ""

    @property
    def per_record(self) -> bool:
        return self.source not in BATCH_VALUES


DEFAULT_LAYOUT = (
    Column("stream", "$stream", "text"),
    Column("data", "$data", "jsonb"),
    Column("synced_at", "$synced_at", "timestamptz"),
)

_PARAMETERS = {"$op": "op", "$synced_at": "synced_at", "$fencing_token": "token"}
VERSION_TYPE = "timestamptz"  # of version_column in the default layout


@dataclass(frozen=True, slots=True)
class Guards:
    """The columns that can hold a change back: fencing token and source version."""

    fencing_column: str | None = None
    version_column: str | None = None

    def conditions(self) -> list[sql.Composable]:
        """When a change applies over the stored row ``t`` (``EXCLUDED``: the change)."""
        return [
            sql.SQL("({0} IS NULL OR {0} <= EXCLUDED.{1})").format(
                sql.Identifier("t", name), sql.Identifier(name)
            )
            for name in (self.fencing_column, self.version_column)
            if name is not None
        ]


@dataclass(slots=True)
class Held:
    """Changes the guards held back: by fencing (a newer lock holder's rows) and by the
    version guard (the row holds a newer version already)."""

    fenced: int = 0
    stale: int = 0

    def add(self, other: Held) -> None:
        self.fenced += other.fenced
        self.stale += other.stale


@dataclass(frozen=True, slots=True)
class SinkStatements:
    """Every statement the sink runs, composed once; identifiers always quoted by psycopg."""

    create: Statement
    stage: Statement
    copy: Statement
    upsert: Statement
    delete: Statement
    remaining: Statement
    # Isolating the records a batch failed on: the rows staged once with their position, then
    # merged by positions inside savepoints.
    isolate_stage: Statement
    isolate_copy: Statement
    isolate_upsert: Statement
    probe: Statement
    # With both guards: of the staged rows the merge skipped, how many fencing held back and
    # how many only the version guard did (the skipped rows are still as they were).
    held: Statement
    isolate_held: Statement
    # The merge around its rows' source, for a small batch's rows sent as parameters.
    merge_head: Statement
    merge_tail: Statement

    @classmethod
    def build(
        cls, table: str, key_column: str, columns: Sequence[Column], guards: Guards
    ) -> SinkStatements:
        fencing_column = guards.fencing_column
        target, key = table_identifier(table), sql.Identifier(key_column)
        staged = [key, *(sql.Identifier(c.name) for c in columns if c.per_record)]
        written = [c for c in columns if not c.per_record]
        inserted = [*staged, *(sql.Identifier(c.name) for c in written)]
        selected = [*staged, *(sql.Placeholder(_PARAMETERS[c.source]) for c in written)]
        definitions = [sql.SQL("{} text PRIMARY KEY").format(key)]
        definitions += [
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in columns
        ]
        delete_fence: sql.Composable = sql.SQL("")
        if fencing_column is not None:
            fence = sql.Identifier(fencing_column)
            inserted.append(fence)
            selected.append(sql.Placeholder("token"))
            definitions.append(sql.SQL("{} bigint").format(fence))
            delete_fence = sql.SQL(" AND ({0} IS NULL OR {0} <= {1})").format(
                fence, sql.Placeholder("token")
            )
        conditions = guards.conditions()
        applies: sql.Composable = (
            sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions))
            if conditions
            else sql.SQL("")
        )
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(name) for name in inserted[1:]
        )
        upsert_from = sql.SQL(
            "INSERT INTO {} AS t ({}) SELECT {} FROM {}{} ON CONFLICT ({}) DO UPDATE SET {}{}"
        )
        by_position = sql.SQL(" WHERE {} = ANY({})").format(ROW_NUMBER, sql.Placeholder("rows"))
        by_position_of_s = sql.SQL(" WHERE s.{} = ANY({})").format(
            ROW_NUMBER, sql.Placeholder("rows")
        )
        return cls(
            create=sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                target, sql.SQL(", ").join(definitions)
            ),
            # Built from the target's own columns: same types (and lengths), no constraints.
            stage=sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
            ).format(STAGING, sql.SQL(", ").join(staged), target),
            copy=sql.SQL("COPY {} ({}) FROM STDIN").format(STAGING, sql.SQL(", ").join(staged)),
            upsert=upsert_from.format(
                target,
                sql.SQL(", ").join(inserted),
                sql.SQL(", ").join(selected),
                STAGING,
                sql.SQL(""),
                key,
                updates,
                applies,
            ),
            delete=sql.SQL("DELETE FROM {} WHERE {} = ANY({}){}").format(
                target, key, sql.Placeholder("keys"), delete_fence
            ),
            remaining=sql.SQL("SELECT count(*) FROM {} WHERE {} = ANY({})").format(
                target, key, sql.Placeholder("keys")
            ),
            isolate_stage=sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, 0::integer AS {} FROM {} "
                "WITH NO DATA"
            ).format(ISOLATION, sql.SQL(", ").join(staged), ROW_NUMBER, target),
            isolate_copy=sql.SQL("COPY {} ({}, {}) FROM STDIN").format(
                ISOLATION, sql.SQL(", ").join(staged), ROW_NUMBER
            ),
            probe=sql.SQL("SELECT 1 FROM {} WHERE false").format(target),
            isolate_upsert=upsert_from.format(
                target,
                sql.SQL(", ").join(inserted),
                sql.SQL(", ").join(selected),
                ISOLATION,
                by_position,
                key,
                updates,
                applies,
            ),
            held=_held_counts(STAGING, sql.SQL(""), target, key, guards),
            isolate_held=_held_counts(ISOLATION, by_position_of_s, target, key, guards),
            merge_head=sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM ").format(
                target, sql.SQL(", ").join(inserted), sql.SQL(", ").join(selected)
            ),
            merge_tail=sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}{}").format(
                key, updates, applies
            ),
        )


@dataclass(frozen=True, slots=True)
class SmallStatements:
    """A small batch's merge with its rows as parameters: one statement, no staging table
    and no COPY (a round trip and a temp table's catalog work fewer: the latency of a
    stream of a few changes at a time). Each staged column travels as a text array and is
    cast to its column's type without modifier, so PostgreSQL parses every value with the
    type's own input, as COPY does, and a length or precision it would refuse still fails
    the assignment instead of being cut by an explicit cast."""

    upsert: Statement
    held: Statement
    params: tuple[str, ...]

    @classmethod
    def build(
        cls,
        statements: SinkStatements,
        table: str,
        key_column: str,
        staged: Sequence[str],
        types: Sequence[str],
        guards: Guards,
    ) -> SmallStatements:
        params = tuple(f"col{i}" for i in range(len(staged)))
        # Type names from the catalog (format_type), not user input.
        casts = sql.SQL(", ").join(
            sql.SQL("u.{}::{} AS {}").format(sql.Identifier(p), sql.SQL(t), sql.Identifier(c))
            for p, t, c in zip(params, types, staged, strict=True)
        )
        rows = sql.SQL("(SELECT {} FROM unnest({}) AS u({}))").format(
            casts,
            sql.SQL(", ").join(sql.SQL("{}::text[]").format(sql.Placeholder(p)) for p in params),
            sql.SQL(", ").join(map(sql.Identifier, params)),
        )
        target, key = table_identifier(table), sql.Identifier(key_column)
        return cls(
            upsert=sql.Composed(
                [statements.merge_head, rows, sql.SQL(" AS s"), statements.merge_tail]
            ),
            held=_held_counts(rows, sql.SQL(""), target, key, guards),
            params=params,
        )

    def rows_params(self, rows: Sequence[tuple[Any, ...]]) -> dict[str, list[str | None]] | None:
        """Each staged column of ``rows`` as a list of texts; None when a value has no text
        form here (the batch then goes by COPY, whose adapters know every type)."""
        try:
            return {name: [_as_text(row[i]) for row in rows] for i, name in enumerate(self.params)}
        except _NoTextForm:
            return None


SMALL_BATCH_ROWS = 64
"""Batches of at most this many rows are merged with their rows as parameters."""


class _NoTextForm(Exception):
    pass


def _as_text(value: Any) -> str | None:
    """``value`` as the text PostgreSQL's input functions read (as COPY sends it)."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal | UUID):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return _FLOAT_WORDS.get(value, repr(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    raise _NoTextForm(type(value).__name__)


def _held_counts(
    staging: sql.Composable,
    where: sql.Composable,
    target: sql.Composable,
    key: sql.Identifier,
    guards: Guards,
) -> sql.Composed:
    """``SELECT fenced, stale`` over the rows of ``staging`` (``where`` filters them).

    Run right after the merge, in its transaction: a row the merge skipped was locked by it
    and still holds what held the change back; a row it wrote holds the change itself, and a
    new row too, so both guards pass on them and they are counted in neither."""
    fence = sql.Identifier(guards.fencing_column or "")
    version = sql.Identifier(guards.version_column or "")
    fence_passes = sql.SQL("coalesce(t.{0} IS NULL OR t.{0} <= {1}, false)").format(
        fence, sql.Placeholder("token")
    )
    version_passes = sql.SQL("coalesce(t.{0} IS NULL OR t.{0} <= s.{0}, false)").format(version)
    return sql.SQL(
        "SELECT count(*) FILTER (WHERE NOT {fence}), "
        "count(*) FILTER (WHERE {fence} AND NOT {version}) "
        "FROM {staging} s JOIN {target} t ON t.{key} = s.{key}{where}"
    ).format(
        fence=fence_passes,
        version=version_passes,
        staging=staging,
        target=target,
        key=key,
        where=where,
    )


@dataclass(slots=True)
class PreparedBatch:
    """A batch reduced to one record per key: rows to COPY, keys to delete, records rejected
    (by index in the batch), and for each row and delete the index of its record."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    failed: dict[int, BaseException] = field(default_factory=dict)
    row_records: list[int] = field(default_factory=list)
    delete_records: list[int] = field(default_factory=list)


class PostgresSink:
    """Upserts and deletes records by key in one PostgreSQL table, one transaction per batch.

    Duplicate keys in a batch collapse to their last record (last op wins). When the table
    rejects a value (constraint, type, length, a key over the index's size limit), the batch
    is written again in one more transaction that names the refused records itself: COPY's
    error gives the bad line, and the merge is split inside savepoints; the rest commits and
    the refused records are reported in the ``WriteResult`` (no bisection by the runtime, no
    retry). An unreachable database, a lost connection, a lock conflict or a timeout raises
    ``ConnectionFailed`` / ``ConnectionClosed`` / ``RetryableError``; wrong credentials or a
    table, column or grant gone raise ``ConfigRefused`` (the pipeline stops).
    """

    config_model: ClassVar[type[PostgresSinkConfig]] = PostgresSinkConfig

    def __init__(self, config: PostgresSinkConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, PostgresSinkConfig):
            config = PostgresSinkConfig.model_validate(config)
        self.name = name
        self.config = config
        columns = (
            DEFAULT_LAYOUT
            if config.columns is None
            else tuple(Column(column, source) for column, source in config.columns.items())
        )
        if config.version_column is not None and config.version is not None:
            columns += (Column(config.version_column, config.version, VERSION_TYPE),)
        self._columns = columns
        self._guards = Guards(config.fencing_column, config.version_column)
        self._statements = rendered(
            SinkStatements.build(config.table, config.key_column, self._columns, self._guards)
        )
        self.rows_stale = 0
        """Changes skipped by the version guard since the sink was built (never refused)."""
        self._label = f"postgres sink {describe_url(config.url)!r} table {config.table!r}"
        self._settings = ConnectSettings(
            url=config.url,
            connect_timeout_s=config.connect_timeout,
            statement_timeout_s=config.statement_timeout,
            application_name=f"syncworker:{name}",
        )
        self._pool: Pool | None = None
        self._build_row: Callable[[Record], tuple[Any, ...]] | None = None
        self._small: SmallStatements | None = None

    async def open(self) -> None:
        """Create the table if configured, check the statements against it, open the pool.

        Raises ``ConnectionFailed`` when the server is unreachable and ``ConfigError`` when the
        table or a column is missing, a type does not fit, or the key column is not unique.
        """
        if self._pool is not None:
            return
        conn = await connect(self._settings, self._label)
        async with conn:
            try:
                kinds = await self._setup(conn)
            except psycopg.Error as exc:
                translated = dependency_error(exc, self._label)
                raise (translated or ConnectorError(f"{self._label}: {describe(exc)}")) from exc
        self._build_row = (
            _default_row
            if self._columns is DEFAULT_LAYOUT
            else _row_builder(
                [
                    value_getter(c.source, kind, column=c.name)
                    for c, kind in zip(self._per_record(), kinds, strict=True)
                ]
            )
        )
        pool = create_pool(
            self._settings,
            min_size=self.config.pool_min,
            max_size=self.config.pool_max,
            name=f"syncworker-{self.name}",
        )
        await open_pool(pool, self.config.connect_timeout, self._label)
        self._pool = pool

    async def _setup(self, conn: Connection) -> list[ValueKind]:
        """Create the default table if configured, then compile (EXPLAIN, never run) the
        statements against the real table, which finds a missing table or column, a type that
        does not fit and a key column without a unique constraint before the first batch."""
        params = {"synced_at": datetime.now(UTC), "op": "upsert", "token": 0, "keys": []}
        try:
            if self.config.columns is None and self.config.create_table:
                await self._create_table(conn)
            async with conn.transaction(force_rollback=True):
                await self._check_version_column(conn)
                await conn.execute(self._statements.stage)
                await conn.execute(sql.SQL("EXPLAIN {}").format(self._statements.upsert), params)
                await conn.execute(sql.SQL("EXPLAIN {}").format(self._statements.delete), params)
                await self._check_key_is_unique(conn)
                await self._prepare_small(conn, params)
                return await _value_kinds(conn)
        except psycopg.errors.InvalidColumnReference:
            raise self._key_not_unique() from None
        except (psycopg.ProgrammingError, psycopg.DataError, psycopg.NotSupportedError) as exc:
            raise ConfigError(f"{self._label}: {describe(exc)}") from None

    async def _check_key_is_unique(self, conn: Connection) -> None:
        # EXPLAIN already refused a key column without any unique index; a deferrable one only
        # fails when the INSERT runs, so the catalog is asked too.
        cursor = await conn.execute(
            "SELECT coalesce(bool_or(i.indimmediate), false) FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = %s::regclass AND a.attname = %s AND i.indisunique"
            " AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL",
            (table_identifier(self.config.table).as_string(conn), self.config.key_column),
        )
        row = await cursor.fetchone()
        if not (row and row[0]):
            raise self._key_not_unique()

    async def _prepare_small(self, conn: Connection, params: dict[str, Any]) -> None:
        """Compose (and compile) the small-batch merge from the staged columns' types."""
        cursor = await conn.execute(
            "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a"
            " WHERE a.attrelid = 'pg_temp.syncworker_staging'::regclass"
            " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        )
        found = await cursor.fetchall()
        small = rendered(
            SmallStatements.build(
                self._statements,
                self.config.table,
                self.config.key_column,
                [name for name, _ in found],
                [type_name for _, type_name in found],
                self._guards,
            ),
            conn,
        )
        empty: dict[str, list[str]] = {name: [] for name in small.params}
        await conn.execute(sql.SQL("EXPLAIN {}").format(small.upsert), {**params, **empty})
        self._small = small

    async def _check_version_column(self, conn: Connection) -> None:
        """``version_column`` is a column of the table whose type has an order (``<=``):
        said with the setting's name, not as the merge's "operator does not exist". A
        missing table is left to the statements' own check."""
        column = self.config.version_column
        if column is None:
            return
        target = table_identifier(self.config.table)
        cursor = await conn.execute(
            "SELECT c.oid IS NOT NULL, format_type(a.atttypid, a.atttypmod)"
            " FROM (SELECT to_regclass(%s) AS oid) c LEFT JOIN pg_attribute a"
            " ON a.attrelid = c.oid AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (target.as_string(conn), column),
        )
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return
        if row[1] is None:
            raise ConfigError(
                f"{self._label}: version_column {column!r} is not a column of the table; add "
                f"it (e.g. {column} {VERSION_TYPE}) or name the one keeping each row's version"
            )
        try:
            async with conn.transaction():
                await conn.execute(
                    sql.SQL("SELECT t.{0} <= t.{0} FROM {1} t WHERE false").format(
                        sql.Identifier(column), target
                    )
                )
        except psycopg.errors.UndefinedFunction:
            raise ConfigError(
                f"{self._label}: version_column {column!r} is of type {row[1]}, which has no "
                "order (<=) to compare versions with; use a timestamptz, bigint, numeric or "
                "text column"
            ) from None

    def _key_not_unique(self) -> ConfigError:
        return ConfigError(
            f"{self._label}: key column {self.config.key_column!r} needs a PRIMARY KEY or a "
            "UNIQUE constraint of its own, not deferrable (ON CONFLICT needs one)"
        )

    async def _create_table(self, conn: Connection) -> None:
        # UniqueViolation: another worker created it at the same moment (IF NOT EXISTS races).
        with suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            await conn.execute(self._statements.create)

    def _per_record(self) -> list[Column]:
        return [c for c in self._columns if c.per_record]

    async def write(self, records: Sequence[Record]) -> WriteResult:
        """Write ``records``, committed before returning: one transaction, or with the
        version guard and a key more than once in the batch, one per occurrence (the first
        of each key, then the second...), so the guard orders them as it orders batches.

        Raises ``LockLost`` when a fencing column is configured and a newer lock holder's rows
        refused every change of the batch (nothing is written then). Changes skipped by the
        version guard are not refusals: they neither fail a record nor count towards it.
        """
        if self._pool is None or self._build_row is None:
            raise ConnectionClosed(f"{self._label}: not open")
        token = current_fencing_token()
        rounds = _occurrences(records) if self.config.version_column is not None else None
        if rounds is None:
            failed, held, changes = await self._write_once(records, token)
        else:
            failed, held, changes = {}, Held(), 0
            for indices in rounds:
                part = await self._write_once([records[i] for i in indices], token)
                failed.update((indices[i], error) for i, error in part[0].items())
                held.add(part[1])
                changes += part[2]
        self._report(held, changes, token)
        return WriteResult(failed=failed)

    def _report(self, held: Held, changes: int, token: int | None) -> None:
        """Count and log what the guards held back of ``changes``; ``LockLost`` when
        fencing held back every one of them (a newer lock holder wrote them all)."""
        if held.stale:
            self.rows_stale += held.stale
            log.info("postgres_rows_stale", sink=self.name, skipped=held.stale, changes=changes)
        if held.fenced:
            log.warning("postgres_rows_fenced", sink=self.name, refused=held.fenced, token=token)
        if held.fenced and held.fenced == changes:
            raise LockLost(
                f"{self._label}: every change of the batch was refused: its rows were written "
                f"under a newer fencing token than this writer's ({token})"
            )

    async def _write_once(
        self, records: Sequence[Record], token: int | None
    ) -> tuple[dict[int, BaseException], Held, int]:
        """One transaction: the records refused (by index), the changes the guards held
        back, and how many changes reached the table (refused ones not counted)."""
        assert self._pool is not None and self._build_row is not None
        batch = self._prepare(records, self._build_row)
        if not batch.rows and not batch.deletes:
            return batch.failed, Held(), 0
        not_built = len(batch.failed)
        params = {
            "synced_at": datetime.now(UTC),
            "op": "upsert",
            "token": token,
            "keys": batch.deletes,
        }
        try:
            if _suspect(batch, records):
                # Likely refused (a NUL, a key too long for its index): one transaction that
                # names the bad rows costs less than a failed one first.
                held = await self._write_isolating(batch, params, records)
            else:
                small_rows = self._small_rows(batch)
                async with self._pool.connection() as conn:
                    if self._one_statement(batch, small_rows):
                        # A statement is a transaction of its own: BEGIN and COMMIT would
                        # cost two round trips more on every small batch of a stream.
                        held = await self._apply(conn, batch, params, small_rows)
                    else:
                        async with conn.transaction():
                            held = await self._apply(conn, batch, params, small_rows)
        except psycopg.Error as exc:
            translated = dependency_error(exc, self._label)
            if translated is not None:
                raise translated from exc
            held = await self._write_isolating(batch, params, records)
        refused = len(batch.failed) - not_built
        return batch.failed, held, len(batch.rows) + len(batch.deletes) - refused

    def _small_rows(self, batch: PreparedBatch) -> dict[str, list[str | None]] | None:
        """The batch's rows as the small merge's parameters, when it goes that way."""
        small = self._small
        if small is None or not 0 < len(batch.rows) <= SMALL_BATCH_ROWS:
            return None
        return small.rows_params(batch.rows)

    def _one_statement(
        self, batch: PreparedBatch, small_rows: dict[str, list[str | None]] | None
    ) -> bool:
        """Whether ``_apply`` runs one statement only: the small merge, no delete, and no
        question after it of which guard held a row back (asked only with both guards)."""
        guards = self._guards
        both_guards = guards.fencing_column is not None and guards.version_column is not None
        return small_rows is not None and not batch.deletes and not both_guards

    async def _apply(
        self,
        conn: Connection,
        batch: PreparedBatch,
        params: dict[str, Any],
        small_rows: dict[str, list[str | None]] | None,
    ) -> Held:
        """Run the batch's statements; the changes the guards held back. ``small_rows``:
        the rows as the small merge's parameters (``_small_rows``), or None for COPY."""
        held = Held()
        small = self._small
        if small is not None and small_rows is not None:
            merged = {**params, **small_rows}
            async with conn.cursor() as cursor:
                await cursor.execute(small.upsert, merged)
                skipped = len(batch.rows) - cursor.rowcount
                if skipped:
                    held.add(await self.held_back(cursor, skipped, small.held, merged))
        elif batch.rows:
            await conn.execute(self._statements.stage)
            async with conn.cursor() as cursor:
                async with cursor.copy(self._statements.copy) as copy:
                    for row in batch.rows:
                        await copy.write_row(row)
                await cursor.execute(self._statements.upsert, params, prepare=False)
                skipped = len(batch.rows) - cursor.rowcount
                if skipped:
                    held.add(await self.held_back(cursor, skipped, self._statements.held, params))
        if batch.deletes:
            async with conn.cursor() as cursor:
                await cursor.execute(self._statements.delete, params)
                held.fenced += await self.deletes_fenced(cursor, params)
        return held

    async def deletes_fenced(self, cursor: psycopg.AsyncCursor[Any], params: dict[str, Any]) -> int:
        """After the delete of ``params["keys"]``: how many fencing held back (the keys
        still there: a newer lock holder's rows)."""
        if self.config.fencing_column is None:
            return 0
        await cursor.execute(self._statements.remaining, params)
        remaining = await cursor.fetchone()
        return int(remaining[0]) if remaining else 0

    async def held_back(
        self,
        cursor: psycopg.AsyncCursor[Any],
        skipped: int,
        statement: Statement,
        params: dict[str, Any],
    ) -> Held:
        """Why the merge skipped ``skipped`` staged rows: with one guard configured, that
        guard; with both, asked of the rows themselves (``statement``, right after it)."""
        guards = self._guards
        if guards.fencing_column is None:
            return Held(stale=skipped)
        if guards.version_column is None:
            return Held(fenced=skipped)
        await cursor.execute(statement, params)
        counts = await cursor.fetchone()
        fenced, stale = (int(counts[0]), int(counts[1])) if counts else (skipped, 0)
        return Held(fenced=fenced, stale=stale)

    async def probe(self) -> None:
        """The runtime's check that the database answers (``Probes``): one statement on the
        table that reads nothing. Raises whatever the driver raises when it does not."""
        if self._pool is None:
            raise ConnectionClosed(f"{self._label}: not open")
        async with self._pool.connection() as conn:
            await conn.execute(self._statements.probe)

    async def _write_isolating(
        self, batch: PreparedBatch, params: dict[str, Any], records: Sequence[Record]
    ) -> Held:
        """The batch failed on its data: write it again in one transaction that sets aside
        the rows and deletes the table refuses (``batch.failed``) and commits the rest.
        Returns the changes the guards held back."""
        assert self._pool is not None
        isolation = _Isolation(self, batch, records, params)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return await isolation.run(conn)
        except psycopg.Error as exc:
            translated = dependency_error(exc, self._label)
            raise (translated or ConnectorError(f"{self._label}: {describe(exc)}")) from exc

    def refusal(self, record: Record, exc: psycopg.Error) -> PermanentError:
        """The error reported for one record the table refused (the driver's as its cause)."""
        key = (
            record.key
            if len(record.key) <= 80
            else f"{record.key[:80]}... ({len(record.key)} chars)"
        )
        error = PermanentError(f"{self._label}: record {key!r} refused: {describe(exc)}")
        error.__cause__ = exc
        return error

    def _prepare(
        self, records: Sequence[Record], build: Callable[[Record], tuple[Any, ...]]
    ) -> PreparedBatch:
        """One record per key (the last), split into COPY rows and keys to delete."""
        last = {record.key: index for index, record in enumerate(records)}
        indices = range(len(records)) if len(last) == len(records) else last.values()
        batch = PreparedBatch()
        rows, deletes = batch.rows, batch.deletes
        for index in indices:
            record = records[index]
            if record.op == "delete":
                deletes.append(record.key)
                batch.delete_records.append(index)
                continue
            try:
                rows.append(build(record))
                batch.row_records.append(index)
            except NotHeldExactly as exc:  # PostgreSQL would round it, silently
                error = PermanentError(f"{self._label}: record {record.key!r} refused: {exc}")
                batch.failed[index] = error
            except TypeError as exc:  # jsonvalue.JSONValueError: no exact JSON form
                batch.failed[index] = _not_serializable(self._label, record, exc)
        return batch

    async def close(self) -> None:
        """Close the pool's connections (waiting for writes in progress)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


class _Isolation:
    """One transaction writing a batch that failed on its data, record by record where needed.

    Rows are COPYed once, with their position, into a second staging table; a COPY error
    names its line, so that row is set aside and the COPY repeated without it. The merge then
    runs on sets of positions inside savepoints: rows with a key long enough to overflow an
    index entry are tried alone first (the usual culprit, and one statement each), then the
    rest, halving a set that fails until each refusal is pinned on one row, so a batch with
    one bad row costs a few statements (about 2 log2(n) at worst) in the same transaction.
    Deletes are split the same way (a foreign key may refuse one).
    """

    def __init__(
        self,
        sink: PostgresSink,
        batch: PreparedBatch,
        records: Sequence[Record],
        params: dict[str, Any],
    ) -> None:
        self.sink = sink
        self.batch = batch
        self.records = records
        self.params = params
        self.statements = sink._statements

    async def run(self, conn: Connection) -> Held:
        held = Held()
        if self.batch.rows:
            await conn.execute(self.statements.isolate_stage)
            staged = await self._copy(conn, list(range(len(self.batch.rows))))
            suspects = [p for p in staged if self._long_key(p)]
            if suspects:
                staged = [p for p in staged if not self._long_key(p)]
                for position in suspects:
                    held.add(await self._upsert(conn, [position]))
            if staged:
                held.add(await self._upsert(conn, staged))
        if self.batch.deletes:
            held.fenced += await self._delete(conn, list(range(len(self.batch.deletes))))
        return held

    def _long_key(self, position: int) -> bool:
        key = self.records[self.batch.row_records[position]].key
        return len(key) > _LONG_KEY_CHARS

    def _refuse(self, record_index: int, exc: psycopg.Error) -> None:
        self.batch.failed[record_index] = self.sink.refusal(self.records[record_index], exc)

    async def _copy(self, conn: Connection, positions: list[int]) -> list[int]:
        """COPY the rows at ``positions``; returns those staged (the others are refused)."""
        while positions:
            try:
                async with (
                    conn.transaction(),
                    conn.cursor() as cursor,
                    cursor.copy(self.statements.isolate_copy) as copy,
                ):
                    for position in positions:
                        await copy.write_row((*self.batch.rows[position], position))
                return positions
            except psycopg.Error as exc:
                if not is_data_error(exc):
                    raise
                line = _copy_line(exc)
                if line is None or not 1 <= line <= len(positions):
                    return await self._copy_halves(conn, positions, exc)
                bad = positions[line - 1]
                self._refuse(self.batch.row_records[bad], exc)
                positions = positions[: line - 1] + positions[line:]
        return positions

    async def _copy_halves(
        self, conn: Connection, positions: list[int], exc: psycopg.Error
    ) -> list[int]:
        if len(positions) == 1:
            self._refuse(self.batch.row_records[positions[0]], exc)
            return []
        middle = len(positions) // 2
        first = await self._copy(conn, positions[:middle])
        return first + await self._copy(conn, positions[middle:])

    async def _upsert(self, conn: Connection, positions: list[int]) -> Held:
        try:
            async with conn.transaction(), conn.cursor() as cursor:
                params = {**self.params, "rows": positions}
                await cursor.execute(self.statements.isolate_upsert, params, prepare=False)
                skipped = len(positions) - cursor.rowcount
                if not skipped:
                    return Held()
                statement = self.statements.isolate_held
                return await self.sink.held_back(cursor, skipped, statement, params)
        except psycopg.Error as exc:
            if not is_data_error(exc):
                raise
            if len(positions) == 1:
                self._refuse(self.batch.row_records[positions[0]], exc)
                return Held()
            middle = len(positions) // 2
            held = await self._upsert(conn, positions[:middle])
            held.add(await self._upsert(conn, positions[middle:]))
            return held

    async def _delete(self, conn: Connection, positions: list[int]) -> int:
        keys = [self.batch.deletes[p] for p in positions]
        try:
            async with conn.transaction(), conn.cursor() as cursor:
                params = {**self.params, "keys": keys}
                await cursor.execute(self.statements.delete, params)
                return await self.sink.deletes_fenced(cursor, params)
        except psycopg.Error as exc:
            if not is_data_error(exc):
                raise
            if len(positions) == 1:
                self._refuse(self.batch.delete_records[positions[0]], exc)
                return 0
            middle = len(positions) // 2
            return await self._delete(conn, positions[:middle]) + await self._delete(
                conn, positions[middle:]
            )


def _occurrences(records: Sequence[Record]) -> list[list[int]] | None:
    """The batch's indices split by occurrence of their key: every key's first record, then
    every key's second... in batch order; None when no key occurs twice."""
    seen: dict[str, int] = {}
    rounds: list[list[int]] = []
    for index, record in enumerate(records):
        occurrence = seen.get(record.key, 0)
        seen[record.key] = occurrence + 1
        if occurrence == len(rounds):
            rounds.append([])
        rounds[occurrence].append(index)
    return rounds if len(rounds) > 1 else None


def _suspect(batch: PreparedBatch, records: Sequence[Record]) -> bool:
    """True when a row holds what PostgreSQL usually refuses: a NUL character (text and jsonb
    cannot hold one) or a key long enough to overflow its index entry. Only a hint for which
    path to take first: a row the table accepts after all is written like any other."""
    for position, row in enumerate(batch.rows):
        if len(records[batch.row_records[position]].key) > _LONG_KEY_CHARS:
            return True
        for value in row:
            if type(value) is str and ("\x00" in value or "\\u0000" in value):
                return True
    return False


def _copy_line(exc: psycopg.Error) -> int | None:
    """The line of a COPY that the server refused (its error context names it)."""
    match = _COPY_LINE.search(exc.diag.context or "")
    return int(match.group(1)) if match else None


async def _value_kinds(conn: Connection) -> list[ValueKind]:
    """How each staged column after the key is written: JSON, an array, or a plain value."""
    cursor = await conn.execute(
        "SELECT t.typcategory = 'A', coalesce(nullif(t.typbasetype, 0), t.oid)::int"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = 'pg_temp.syncworker_staging'::regclass"
        " AND a.attnum > 1 AND NOT a.attisdropped ORDER BY a.attnum"
    )
    kinds: list[ValueKind] = []
    for is_array, base_oid in await cursor.fetchall():
        if base_oid in _JSON_TYPES:
            kinds.append("json")
        else:
            kinds.append("array" if is_array else _FLOAT_TYPES.get(base_oid, "scalar"))
    return kinds


def value_getter(source: str, kind: ValueKind, *, column: str = "") -> Getter:
    """How one staged column's value is read from a record (``source`` as in ``columns``)."""
    if source == "$data":
        return _data_json
    if source in ("$key", "$stream"):
        attribute = attrgetter(source[1:])
        return attribute if kind != "json" else lambda record: _to_json(attribute(record))
    convert: Callable[[Any], Any]
    if kind in _FLOAT_TYPES.values():
        convert = _float_converter(kind, column)
    else:
        convert = {"json": _to_json, "array": _to_array, "scalar": _to_scalar}[kind]
    parts = source.split(".")
    if len(parts) == 1:
        return lambda record: convert(record.data.get(source))
    return lambda record: convert(_dig(record.data, parts))


def _default_row(record: Record) -> tuple[str, str, str]:
    """The default layout's staged row (key, stream, data as JSON) in one call per record."""
    return record.key, record.stream, jsonvalue.dumps_text(record.data)


def _row_builder(getters: list[Getter]) -> Callable[[Record], tuple[Any, ...]]:
    # Unrolled for the common widths: this runs once per record on the hot path.
    if len(getters) == 1:
        (first,) = getters
        return lambda record: (record.key, first(record))
    if len(getters) == 2:
        first, second = getters
        return lambda record: (record.key, first(record), second(record))
    return lambda record: (record.key, *[get(record) for get in getters])


def _data_json(record: Record) -> str:
    return jsonvalue.dumps_text(record.data)


def _dig(data: dict[str, Any], parts: list[str]) -> Any:
    value: Any = data
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _to_json(value: Any) -> str | None:
    return None if value is None else jsonvalue.dumps_text(value)


def _to_array(value: Any) -> Any:
    """A list for an array column as PostgreSQL's array literal text, which COPY parses
    into any array type exactly: psycopg's own list dumper refuses a list mixing Python
    types (``[1.5, 10**30]``, ``["NaN", 1.5]``: what exact numeric arrays decode to) and
    would send a float where the column is numeric. Anything else is PostgreSQL's to parse."""
    if isinstance(value, list | tuple):
        return _array_literal(value)
    return value


def _array_literal(items: list[Any] | tuple[Any, ...]) -> str:
    return "{" + ",".join(_array_element(item) for item in items) + "}"


_ARRAY_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_FLOAT_WORDS = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _array_element(item: Any) -> str:
    """One element: NULL, a nested array, a bare number or boolean, else a quoted text
    (JSON for objects, ISO for dates, \\x hex for bytes)."""
    if item is None:
        return "NULL"
    if isinstance(item, list | tuple):
        return _array_literal(item)
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | Decimal):
        return str(item) if not isinstance(item, Decimal) or item.is_finite() else f'"{item}"'
    if isinstance(item, float):
        if math.isnan(item):
            return "NaN"
        return _FLOAT_WORDS.get(item, repr(item))
    if isinstance(item, dict):
        text = jsonvalue.dumps_text(item)
    elif isinstance(item, bytes | bytearray | memoryview):
        text = "\\x" + bytes(item).hex()
    elif isinstance(item, datetime | date | time):
        text = item.isoformat()
    else:
        text = str(item)
    return '"' + text.translate(_ARRAY_ESCAPES) + '"'


def _to_scalar(value: Any) -> Any:
    """A value PostgreSQL parses for any column type: objects and lists as JSON text,
    booleans as true/false; numbers, dates and UUIDs go to psycopg's own adapters."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return jsonvalue.dumps_text(value)
    return value


class NotHeldExactly(ValueError):
    """A number the column's type would round (DESIGN.md guarantee 8: refused, not rounded)."""


def _float_converter(kind: ValueKind, column: str) -> Callable[[Any], Any]:
    """The value for a ``real`` or ``double precision`` column, or ``NotHeldExactly`` for an
    integer or ``Decimal`` (or, in a ``real``, a float) that the column would store rounded:
    PostgreSQL casts whatever it is given, silently. Strings are PostgreSQL's to parse.

    Held exactly means read back as the same number: the stored binary value equals it, or
    PostgreSQL's output of it (the shortest digits that read back as that value, as
    core.jsonvalue and Python's repr write floats) does. So 2**60 and Decimal("0.1") fit a
    double, 0.1 fits a real, 2**53 + 1 and Decimal("0.1000000000000000000000001") do not.
    Hand-written: no library checks a value against IEEE single and double precision."""
    single = kind == "float4"
    type_name = _FLOAT_TYPE_NAMES[kind]

    def convert(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            return _to_scalar(value)
        if type(value) is float and not single:
            return value  # a Python float is a double already
        stored: float | None
        try:
            stored = float(value)
            if single:
                stored = _FLOAT4.unpack(_FLOAT4.pack(stored))[0]
        except (OverflowError, ValueError):  # past the type's range; a signaling NaN
            stored = None
        if stored is not None and _held(value, stored, single):
            return stored
        if stored is None or math.isinf(stored):
            shown = f"it is out of the range of {type_name}"
        else:
            shown = f"it would be stored as {_shortest(stored, single)}"
        raise NotHeldExactly(
            f"column {column!r} ({type_name}) cannot hold {_quote_number(value)} exactly: "
            f"{shown}; map it to a numeric column to keep every digit"
        )

    return convert


def _held(value: int | float | Decimal, stored: float, single: bool) -> bool:
    if not math.isfinite(stored):
        # inf/nan in, inf/nan out; a finite value that overflowed to inf is not held.
        return not (isinstance(value, Decimal | float) and math.isfinite(value))
    sent = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return Decimal(stored) == sent or Decimal(_shortest(stored, single)) == sent


def _shortest(stored: float, single: bool) -> str:
    """What PostgreSQL prints for ``stored`` (extra_float_digits 1, the default since 12):
    the fewest digits that read back as the same value."""
    if not single or not math.isfinite(stored):
        return repr(stored)
    for digits in range(1, 10):  # 9 significant digits always identify a single
        text = f"{stored:.{digits}g}"
        if _FLOAT4.unpack(_FLOAT4.pack(float(text)))[0] == stored:
            return text
    return repr(stored)


def _quote_number(value: int | float | Decimal) -> str:
    try:
        text = str(value)
    except ValueError:  # an int past Python's digit limit for str()
        return f"an integer of {value.bit_length()} bits"  # type: ignore[union-attr]
    return text if len(text) <= 60 else f"{text[:30]}...({len(text)} characters)"


def _not_serializable(label: str, record: Record, exc: Exception) -> PermanentError:
    error = PermanentError(f"{label}: record {record.key!r} is not JSON-serializable: {exc}")
    error.__cause__ = exc
    return error
