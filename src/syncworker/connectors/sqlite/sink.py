"""``sqlite``: a sink that upserts and deletes records by key in a SQLite table.

A batch is one transaction: upserts (``INSERT ... ON CONFLICT (key) DO UPDATE``) and deletes,
each one ``executemany``. Writing a batch twice leaves the table as writing it once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import Field, field_validator, model_validator

from syncworker.connectors.mapping import check_column_mapping
from syncworker.connectors.sqlite.client import (
    SqliteClient,
    check_identifier,
    dependency_error,
    quote_identifier,
    transaction,
)
from syncworker.core import jsonvalue
from syncworker.core.protocols import ConnectorConfig, WriteResult
from syncworker.core.record import Record
from syncworker.errors import ConfigError, PermanentError

SPECIAL_VALUES = frozenset({"$key", "$stream", "$op", "$synced_at", "$data"})
"""Column sources that are not a path in ``record.data``; ``$data`` is the whole data as JSON."""

Getter = Callable[[Record, str], Any]
"""A column's value from a record and the batch's ``synced_at``."""


class SqliteSinkConfig(ConnectorConfig):
    """Settings of the ``sqlite`` sink."""

    type: Literal["sqlite"] = Field("sqlite", description="Connector type: a SQLite table.")
    path: Path = Field(description="SQLite database file; created if missing.")
    table: str = Field("records", description="Table written to.")
    key_column: str = Field(
        "key", description="Column holding Record.key; must be the PRIMARY KEY or UNIQUE."
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Column name -> dotted path in record.data (e.g. 'user.email'), or one of "
        "$key, $stream, $op, $synced_at, $data (the whole data as JSON). A missing path writes "
        "NULL; objects and lists are written as JSON. Null = default layout: key, stream, data "
        "(JSON), synced_at.",
    )
    create_table: bool = Field(
        True,
        description="Create the table if missing (key column TEXT PRIMARY KEY plus the mapped "
        "columns). An existing table is used as it is, with its own constraints.",
    )

    @field_validator("table", "key_column")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier(value)

    @field_validator("columns")
    @classmethod
    def _valid_columns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_column_mapping(value, SPECIAL_VALUES, check_identifier)

    @model_validator(mode="after")
    def _distinct_columns(self) -> SqliteSinkConfig:
        # SQLite compares identifiers case-insensitively.
        names = [self.key_column.lower(), *(c.lower() for c in self.columns or {})]
        if len(set(names)) != len(names):
            raise ValueError(
                "column names must be distinct from each other and from key_column "
                "(case-insensitive)"
            )
        return self


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    source: str
    sql_type: str = ""


DEFAULT_LAYOUT = (
    Column("stream", "$stream", "TEXT"),
    Column("data", "$data", "TEXT"),
    Column("synced_at", "$synced_at", "TEXT"),
)


@dataclass(frozen=True, slots=True)
class SinkStatements:
    create: str
    upsert: str
    delete: str

    @classmethod
    def build(cls, table: str, key_column: str, columns: Sequence[Column]) -> SinkStatements:
        t, key = quote_identifier(table), quote_identifier(key_column)
        names = [quote_identifier(c.name) for c in columns]
        definitions = [f"{n} {c.sql_type}".rstrip() for n, c in zip(names, columns, strict=True)]
        placeholders = ", ".join("?" * (len(columns) + 1))
        updates = ", ".join(f"{n} = excluded.{n}" for n in names)
        on_conflict = f"DO UPDATE SET {updates}" if names else "DO NOTHING"
        return cls(
            create=f"CREATE TABLE IF NOT EXISTS {t} "
            f"({', '.join([f'{key} TEXT PRIMARY KEY', *definitions])})",
            upsert=f"INSERT INTO {t} ({', '.join([key, *names])}) VALUES ({placeholders}) "
            f"ON CONFLICT ({key}) {on_conflict}",
            delete=f"DELETE FROM {t} WHERE {key} = ?",
        )


class SqliteSink:
    """Upserts and deletes records by key in one SQLite table, one transaction per batch.

    Duplicate keys in a batch collapse to their last record (last op wins). A constraint or
    binding error rolls the whole batch back and is raised unchanged (the runtime bisects);
    a locked or unreachable database raises ``RetryableError`` / ``ConnectionFailed``.
    """

    config_model: ClassVar[type[SqliteSinkConfig]] = SqliteSinkConfig

    def __init__(self, config: SqliteSinkConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, SqliteSinkConfig):
            config = SqliteSinkConfig.model_validate(config)
        self.name = name
        self.config = config
        columns = (
            DEFAULT_LAYOUT
            if config.columns is None
            else tuple(Column(name, source) for name, source in config.columns.items())
        )
        self._statements = SinkStatements.build(config.table, config.key_column, columns)
        self._getters = [getter_for(column.source) for column in columns]
        self._label = f"sqlite sink {str(config.path)!r} table {config.table!r}"
        self._client = SqliteClient(config.path, label=self._label)

    async def open(self) -> None:
        """Open the file, create the table if configured, and check the statements compile.

        Raises ``ConnectionFailed`` when the file cannot be opened and ``ConfigError`` when the
        table or a column is missing, or the key column is not unique.
        """
        await self._client.open(self._setup)

    def _setup(self, conn: sqlite3.Connection) -> None:
        if self.config.create_table:
            conn.execute(self._statements.create)
        upsert_params = [None] * (len(self._getters) + 1)
        try:
            # EXPLAIN compiles without running: catches a missing table or column and a key
            # column without a UNIQUE constraint (ON CONFLICT needs one) before the first batch.
            conn.execute(f"EXPLAIN {self._statements.upsert}", upsert_params).fetchall()
            conn.execute(f"EXPLAIN {self._statements.delete}", [None]).fetchall()
        except sqlite3.OperationalError as exc:
            raise ConfigError(f"{self._label}: {exc}") from exc

    async def write(self, records: Sequence[Record]) -> WriteResult:
        """Write ``records`` in one transaction, durably (WAL) before returning."""
        return await self._client.run(lambda conn: self._write_batch(conn, records))

    async def close(self) -> None:
        await self._client.close()

    def _write_batch(self, conn: sqlite3.Connection, records: Sequence[Record]) -> WriteResult:
        synced_at = datetime.now(UTC).isoformat()
        last_index = {record.key: index for index, record in enumerate(records)}
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[str]] = []
        failed: dict[int, BaseException] = {}
        # The record index of each upsert and delete, to name the ones the table refuses.
        changes: list[tuple[str, tuple[Any, ...], int]] = []
        for key, index in last_index.items():
            record = records[index]
            if record.op == "delete":
                deletes.append((key,))
                changes.append((self._statements.delete, (key,), index))
                continue
            try:
                upserts.append((key, *[get(record, synced_at) for get in self._getters]))
                changes.append((self._statements.upsert, upserts[-1], index))
            except jsonvalue.JSONValueError as exc:
                failed[index] = _not_serializable(self._label, record, exc)
        try:
            with transaction(conn):
                if upserts:
                    conn.executemany(self._statements.upsert, upserts)
                if deletes:
                    conn.executemany(self._statements.delete, deletes)
        except sqlite3.Error as exc:
            if dependency_error(exc, self._label) is not None:
                raise
            self._write_one_by_one(conn, records, changes, failed)
        return WriteResult(failed=failed)

    def _write_one_by_one(
        self,
        conn: sqlite3.Connection,
        records: Sequence[Record],
        changes: list[tuple[str, tuple[Any, ...], int]],
        failed: dict[int, BaseException],
    ) -> None:
        """The batch failed on its data: write it again in one transaction, each change in
        its own savepoint, and name the records the table refuses (``failed``). In-process
        SQLite makes a savepoint cost microseconds, cheaper than bisecting from outside."""
        with transaction(conn):
            for statement, params, index in changes:
                conn.execute("SAVEPOINT syncworker_row")
                try:
                    conn.execute(statement, params)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO syncworker_row")
                    if dependency_error(exc, self._label) is not None:
                        raise
                    error = PermanentError(
                        f"{self._label}: record {records[index].key!r} refused: {exc}"
                    )
                    error.__cause__ = exc
                    failed[index] = error
                conn.execute("RELEASE syncworker_row")


def getter_for(source: str) -> Getter:
    """How one column's value is read from a record (``source`` as in ``columns``)."""
    special: dict[str, Getter] = {
        "$key": lambda record, _: record.key,
        "$stream": lambda record, _: record.stream,
        "$op": lambda record, _: record.op,
        "$synced_at": lambda _, synced_at: synced_at,
        "$data": lambda record, _: jsonvalue.dumps_text(record.data),
    }
    if source in special:
        return special[source]
    parts = source.split(".")
    if len(parts) == 1:
        return lambda record, _: to_sql_value(record.data.get(source))
    return lambda record, _: to_sql_value(_dig(record.data, parts))


def _dig(data: dict[str, Any], parts: list[str]) -> Any:
    value: Any = data
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def to_sql_value(value: Any) -> Any:
    """A value SQLite can store: objects and lists as exact JSON text, dates as ISO-8601,
    booleans as 0/1, decimals as their digits. Anything else is bound as it is; an integer
    beyond 64 bits refuses the record (``JSONValueError``): REAL would round it."""
    if type(value) is int and not -(2**63) <= value < 2**63:
        raise jsonvalue.JSONValueError(f"integer {value} does not fit SQLite's 64-bit INTEGER")
    if value is None or type(value) in (str, int, float, bytes):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list | tuple):
        return jsonvalue.dumps_text(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    return value


def _not_serializable(label: str, record: Record, exc: Exception) -> PermanentError:
    error = PermanentError(f"{label}: record {record.key!r} is not JSON-serializable: {exc}")
    error.__cause__ = exc
    return error
