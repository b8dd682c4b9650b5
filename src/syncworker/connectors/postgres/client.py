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

import dataclasses
import math
import re
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast
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
    ConfigRefused,
    ConnectionClosed,
    ConnectionFailed,
    ConnectorError,
    RetryableError,
    SyncWorkerError,
)
from syncworker.observe.logging import redact_url

Connection = psycopg.AsyncConnection[TupleRow]
Statement = sql.SQL | sql.Composed
"""A statement as composed (``sql.Composed``) or as rendered once (``sql.SQL``, ``rendered``)."""
Pool = AsyncConnectionPool[Connection]

URL_SCHEMES = frozenset({"postgresql", "postgres"})
MAX_IDENTIFIER_BYTES = 63
"""Longer names are silently truncated by PostgreSQL (NAMEDATALEN - 1): rejected instead."""

# What a server error is, by its SQLSTATE class (the first two characters): PostgreSQL's own
# grouping, stable across versions and languages, unlike psycopg's exception bases (which put
# ProgramLimitExceeded, a 10 kB key over the btree limit, under OperationalError).
_TRANSIENT_CLASSES = frozenset(
    {
        "08",  # connection exception
        "40",  # transaction rollback: serialization failure, deadlock
        "53",  # insufficient resources: disk full, out of memory, too many connections
        "55",  # object not in prerequisite state: lock not available, object in use
        "57",  # operator intervention: query cancelled, admin shutdown, cannot connect now
        "58",  # system error: I/O error
        "72",  # snapshot too old
        "XX",  # internal error
    }
)
_RETRY_SOON = frozenset({"40", "55", "26"})  # conflicts that clear by themselves: retry
_CONFIG_CLASSES = frozenset(
    {
        "28",  # invalid authorization specification: wrong password, unknown role
        "3D",  # invalid catalog name: the database does not exist
        "3F",  # invalid schema name
        "42",  # syntax error or access rule violation: undefined table/column, no privilege
        "0P",  # invalid role specification
    }
)
_SESSION_ENDED = {"57P01", "57P02"}  # admin_shutdown (pg_terminate_backend), crash_shutdown
_STILL_TRANSIENT = {
    "25006",  # read_only_sql_transaction: a failover left us on a standby for a while
}
# Errors met while connecting carry no SQLSTATE in psycopg (libpq only gives the text), so
# the server's refusals are told from an outage by its (English, stable) messages.
_REFUSED_AT_CONNECT = re.compile(
    r"password authentication failed|authentication failed for user|role \S+ does not exist"
    r"|database \S+ does not exist|no pg_hba\.conf entry|no password supplied"
    r"|is not permitted to log in|permission denied for database|password is required"
    r"|SSL required|does not support SSL|server requested a password",
    re.IGNORECASE,
)


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


StatementsT = TypeVar("StatementsT")


def rendered(statements: StatementsT, context: Connection | None = None) -> StatementsT:
    """``statements`` (a dataclass of statements composed once) with every ``sql.Composed``
    field rendered to its text, once. psycopg renders a ``Composed`` again on every execute,
    each identifier escaped anew through libpq: paid on every batch by the statements a stream
    runs per batch (psycopg's query conversion, mostly this, took about a fifth of the worker's
    CPU in a cProfile of ``bench/pg_table_latency.py``)."""
    texts = {
        field.name: sql.SQL(value.as_string(context))
        for field in dataclasses.fields(cast(Any, statements))
        if isinstance(value := getattr(statements, field.name), sql.Composed)
    }
    replaced: StatementsT = dataclasses.replace(cast(Any, statements), **texts)
    return replaced


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
        raise connect_error(exc, label) from None
    except psycopg.Error as exc:
        raise ConfigError(f"{label}: invalid connection settings: {describe(exc)}") from None


def connect_error(exc: psycopg.Error, label: str) -> ConnectionFailed | ConfigRefused:
    """Why connecting failed: ``ConfigRefused`` when the server answered and refused us
    (wrong password, unknown role, missing database: retrying cannot help), else
    ``ConnectionFailed`` (unreachable, starting up, too many clients: retry)."""
    reason = describe(exc)
    state = exc.sqlstate or ""
    if state[:2] in ("28", "3D", "0P") or _REFUSED_AT_CONNECT.search(str(exc)):
        return ConfigRefused(f"{label}: the server refused the connection: {reason}")
    return ConnectionFailed(f"{label}: cannot connect: {reason}")


@asynccontextmanager
async def admin_connection(target: str | Connection, kind: str) -> AsyncIterator[Connection]:
    """``target`` itself when it is an open connection (the caller's transaction), else a
    connection to that URL for one administrative call (install, stats), closed after it;
    ``kind`` names the connector in errors (``pg_outbox``, ``pg_table``)."""
    if not isinstance(target, str):
        yield target
        return
    settings = ConnectSettings(url=target, connect_timeout_s=10.0, statement_timeout_s=0.0)
    conn = await connect(settings, f"{kind} {describe_url(target)!r}")
    async with conn:
        yield conn


def create_pool(settings: ConnectSettings, *, min_size: int, max_size: int, name: str) -> Pool:
    """A closed pool (open it with ``open_pool``) whose connections are checked before use
    unless used a moment ago (``CHECK_BYPASS_S``), so a connection the server dropped while
    idle is replaced instead of failing a batch."""
    return AsyncConnectionPool(
        settings.url,
        kwargs=settings.kwargs(),
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=_check_unless_fresh,
        name=name,
        timeout=settings.connect_timeout_s,
    )


CHECK_BYPASS_S = 0.5
"""A connection handed out less than this long ago is handed out again unchecked: it
answered a moment ago, and a check is one more round trip on every checkout of a busy
pipeline (HikariCP's aliveBypassWindowMs: 500 ms). One the server dropped in between fails
its statement, which the runtime retries on another connection (the pool drops it)."""
_handed_out_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


async def _check_unless_fresh(conn: Any) -> None:
    # Stamped at checkout, not at return: psycopg_pool runs a reset callback (the other
    # place to stamp) in a worker task, which delays every return.
    now = time.monotonic()
    last = _handed_out_at.get(conn)
    _handed_out_at[conn] = now
    if last is not None and now - last < CHECK_BYPASS_S:
        return
    await AsyncConnectionPool.check_connection(conn)


async def open_pool(pool: Pool, timeout_s: float, label: str) -> None:
    """Open ``pool`` and wait for its first connections; ``ConnectionFailed`` (and the pool
    closed again) when they cannot be made within ``timeout_s``."""
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except BaseException as exc:
        await pool.close()
        if isinstance(exc, psycopg.Error):
            raise connect_error(exc, label) from None
        raise


def dependency_error(exc: psycopg.Error, context: str) -> SyncWorkerError | None:
    """The syncworker error for ``exc`` when the database or the configuration is at fault, or
    ``None`` when the data is (SQLSTATE classes 22 data, 23 integrity, 54 program limit, a
    trigger's exception...), which the caller handles per record or re-raises unchanged so
    the runtime isolates the bad record.

    By SQLSTATE class: connection, resources, operator intervention, serialization and lock
    conflicts are transient (``ConnectionClosed``/``ConnectionFailed``/``RetryableError``);
    authorization, a missing database, schema, table, column or privilege are the
    configuration's (``ConfigRefused``: the pipeline stops). A client-side error without a
    SQLSTATE (the connection broke) is transient.
    """
    reason = describe(exc)
    if isinstance(exc, PoolClosed):
        return ConnectionClosed(f"{context}: not open")
    if isinstance(exc, PoolTimeout):
        return ConnectionFailed(f"{context}: no connection available: {reason}")
    state = exc.sqlstate
    if state is None:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return ConnectionClosed(f"{context}: connection lost: {reason}")
        return None
    category = state[:2]
    if isinstance(exc, pg_errors.QueryCanceled):
        return RetryableError(f"{context}: statement timed out or was cancelled: {reason}")
    if category in _RETRY_SOON:
        return RetryableError(f"{context}: {reason}")
    if category == "08" or state in _SESSION_ENDED:
        return ConnectionClosed(f"{context}: connection lost: {reason}")
    if category in _TRANSIENT_CLASSES:
        return ConnectionFailed(f"{context}: database unavailable: {reason}")
    if state in _STILL_TRANSIENT:
        return ConnectorError(f"{context}: {reason}")
    if category in _CONFIG_CLASSES:
        return ConfigRefused(f"{context}: {reason}")
    return None


def is_data_error(exc: BaseException) -> bool:
    """True when a server error is the data's fault (see ``dependency_error``)."""
    return isinstance(exc, psycopg.Error) and dependency_error(exc, "") is None
