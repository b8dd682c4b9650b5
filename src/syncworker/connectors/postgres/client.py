"""Shared PostgreSQL plumbing for the postgres connectors: URLs, identifiers, connections, the
pool, and which errors mean "the database is unavailable" rather than "this data is bad".

Connections are in autocommit mode: every unit of work opens its own explicit transaction
(``conn.transaction()``), so nothing is left open between batches, and the pool's health check
(``check_connection``) is one empty query. The statement timeout is set at connect time through
the ``options`` startup parameter, which costs no round trip.

Messages never quote the URL's password: everything that may echo a DSN goes through
``redact_url``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout
from pydantic import Field, field_validator, model_validator

from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig
from syncworker.errors import (
    ConfigError,
    ConnectionClosed,
    ConnectionFailed,
    ConnectorError,
    RetryableError,
    SyncWorkerError,
)
from syncworker.observe.logging import redact_url

Connection = psycopg.AsyncConnection[TupleRow]
Pool = AsyncConnectionPool[Connection]

URL_SCHEMES = frozenset({"postgresql", "postgres"})
MAX_IDENTIFIER_BYTES = 63
"""Longer names are silently truncated by PostgreSQL (NAMEDATALEN - 1): rejected instead."""

_RETRYABLE = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
)
_SESSION_ENDED = {"57P01", "57P02"}  # admin_shutdown (pg_terminate_backend), crash_shutdown
_UNUSABLE = {
    # The schema or the grants changed under a running sink: no record can be written, so the
    # batch is rolled back and the pipeline pauses instead of bisecting to dead-letter it all.
    "42P01",  # undefined_table
    "42703",  # undefined_column
    "3F000",  # invalid_schema_name
    "42501",  # insufficient_privilege
    "25006",  # read_only_sql_transaction (a failover left us on a standby)
}


def check_url(value: str) -> str:
    """``value`` unchanged if it is a postgresql:// URL; ``ValueError`` (password masked) if not."""
    parts = urlsplit(value)
    if "://" not in value or parts.scheme.lower() not in URL_SCHEMES:
        raise ValueError(f"expected a postgresql:// URL, got {redact_url(value)!r}")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError(f"invalid port in {redact_url(value)!r}") from None
    return value


def check_identifier(name: str) -> str:
    """``name`` unchanged if PostgreSQL can hold it as one identifier; ``ValueError`` otherwise.

    Any character is fine (``sql.Identifier`` quotes it) except NUL; empty names and names
    PostgreSQL would truncate are rejected.
    """
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}: must be non-empty, without NUL")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"invalid SQL identifier {name!r}: longer than {MAX_IDENTIFIER_BYTES} bytes"
        )
    return name


def split_table(table: str) -> tuple[str, ...]:
    """``"table"`` or ``"schema.table"`` as its parts, each checked by ``check_identifier``."""
    parts = tuple(table.split("."))
    if len(parts) > 2:
        raise ValueError(f"invalid table {table!r}: expected 'table' or 'schema.table'")
    for part in parts:
        check_identifier(part)
    return parts


def table_identifier(table: str) -> sql.Identifier:
    """The (schema-qualified) table as a quoted identifier."""
    return sql.Identifier(*split_table(table))


def describe_url(url: str) -> str:
    """``host:port/dbname`` of ``url`` for labels: no user, password or parameters."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path}"


def describe(exc: BaseException) -> str:
    """``exc`` as one line, with any password masked.

    A server error is its primary message only: the statement excerpt and hint that follow it
    span lines and say nothing about the cause.
    """
    primary = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
    text = " ".join(line.strip() for line in (primary or str(exc)).splitlines() if line.strip())
    return redact_url(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class PostgresConnectionConfig(ConnectorConfig):
    """The connection settings every PostgreSQL connector shares."""

    url: str = Field(description="postgresql://user:password@host:5432/dbname")
    pool_min: int = Field(1, ge=0, description="Connections kept open.")
    pool_max: int = Field(4, ge=1, description="Most connections open at once.")
    connect_timeout: DurationS = Field(
        10.0,
        gt=0,
        description="Longest wait to connect, or for a free pooled connection, before the "
        "call fails as 'database unavailable'.",
    )
    statement_timeout: DurationS = Field(
        60.0, ge=0, description="Longest a statement may run (0 = no limit); then retried."
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return check_url(value)

    @model_validator(mode="after")
    def _pool_sizes(self) -> PostgresConnectionConfig:
        if self.pool_max < self.pool_min:
            raise ValueError(f"pool_max ({self.pool_max}) is below pool_min ({self.pool_min})")
        return self


@dataclass(frozen=True, slots=True)
class ConnectSettings:
    """How to connect: the URL plus what syncworker adds to every session."""

    url: str
    connect_timeout_s: float
    statement_timeout_s: float
    application_name: str = "syncworker"

    def kwargs(self) -> dict[str, Any]:
        """Connection parameters merged over the URL's own (its ``options`` are kept).

        Raises ``ConfigError`` when the URL cannot be parsed.
        """
        try:
            params = conninfo_to_dict(self.url)
        except psycopg.Error as exc:
            raise ConfigError(f"invalid PostgreSQL URL: {describe(exc)}") from None
        timeout_ms = math.ceil(self.statement_timeout_s * 1000)
        options = f"-c statement_timeout={timeout_ms}"
        if params.get("options"):
            options = f"{params['options']} {options}"
        kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq takes whole seconds (and treats 1 as 2).
            "connect_timeout": max(1, math.ceil(self.connect_timeout_s)),
            "options": options,
        }
        if not params.get("application_name"):
            kwargs["application_name"] = self.application_name[:MAX_IDENTIFIER_BYTES]
        return kwargs


async def connect(settings: ConnectSettings, label: str) -> Connection:
    """One connection outside any pool (setup work). Raises ``ConnectionFailed`` with the
    server's reason when it cannot be reached, ``ConfigError`` when the URL is invalid."""
    kwargs = settings.kwargs()
    try:
        return await psycopg.AsyncConnection.connect(settings.url, **kwargs)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(f"{label}: cannot connect: {describe(exc)}") from None
    except psycopg.Error as exc:
        raise ConfigError(f"{label}: invalid connection settings: {describe(exc)}") from None


def create_pool(settings: ConnectSettings, *, min_size: int, max_size: int, name: str) -> Pool:
    """A closed pool (open it with ``open_pool``) whose connections are checked before each use,
    so a connection the server dropped is replaced instead of failing a batch."""
    return AsyncConnectionPool(
        settings.url,
        kwargs=settings.kwargs(),
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        name=name,
        timeout=settings.connect_timeout_s,
    )


async def open_pool(pool: Pool, timeout_s: float, label: str) -> None:
    """Open ``pool`` and wait for its first connections; ``ConnectionFailed`` (and the pool
    closed again) when they cannot be made within ``timeout_s``."""
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except BaseException as exc:
        await pool.close()
        if isinstance(exc, psycopg.Error):
            raise ConnectionFailed(f"{label}: cannot connect: {describe(exc)}") from None
        raise


def dependency_error(exc: psycopg.Error, context: str) -> SyncWorkerError | None:
    """The syncworker error for ``exc`` when the database itself failed (unreachable,
    connection lost, lock conflict, timeout, schema gone), or ``None`` when the data is at
    fault (a constraint, a value the column rejects), which the caller re-raises unchanged so
    the runtime bisects to the bad record."""
    reason = describe(exc)
    if isinstance(exc, PoolClosed):
        return ConnectionClosed(f"{context}: not open")
    if isinstance(exc, PoolTimeout):
        return ConnectionFailed(f"{context}: no connection available: {reason}")
    if isinstance(exc, _RETRYABLE):
        return RetryableError(f"{context}: {reason}")
    if isinstance(exc, pg_errors.QueryCanceled):
        return RetryableError(f"{context}: statement timed out or was cancelled: {reason}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        state = exc.sqlstate
        if state is None or state.startswith("08") or state in _SESSION_ENDED:
            return ConnectionClosed(f"{context}: connection lost: {reason}")
        return ConnectionFailed(f"{context}: database unavailable: {reason}")
    if exc.sqlstate in _UNUSABLE:
        return ConnectorError(f"{context}: {reason}")
    return None
