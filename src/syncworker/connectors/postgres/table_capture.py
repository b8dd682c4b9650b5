"""The change capture behind the ``pg_table`` source: install, uninstall, status and resync
requests, as a Python API (``syncworker pg`` builds on it).

The install (``sql/table_capture_install.sql``) puts into the source database, next to the
table:

- a change log ``<change_table> (id bigserial, key text, op "char", changed_at)``, default
  ``syncworker_<table>_changes`` in the table's schema;
- a trigger function (default ``notify_<table>_changes``) that, for every row inserted,
  updated or deleted, writes ``(key, op)`` to the log (an UPDATE changing the key writes a
  ``D`` for the old key too) and NOTIFYs ``op:key`` on the channel (default: the change log's
  name; the key is left out past 7,900 bytes, the NOTIFY payload limit being 8,000);
- the row trigger (default ``<table>_changes_trigger``) and a TRUNCATE statement trigger
  (``<trigger>_truncate``) that logs one ``T`` row.

The log is the truth and the NOTIFY only a wake-up: a log row commits with the change, so a
listener that was down, or a transaction that committed long after its ``updated_at``, loses
nothing. The source deletes log rows once their batch is acked.

The statements the source runs on the log are module constants here too, so every SQL text
of the capture lives in this module or in ``sql/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from syncworker.connectors.postgres.client import (
    Connection,
    admin_connection,
    check_identifier,
    split_table,
)
from syncworker.connectors.postgres.outbox import sql_file
from syncworker.errors import ConfigError

_INSTALL_LOCK = "syncworker_table_capture_install"
NOTIFY_KEY_LIMIT_BYTES = 7_900
"""Past this the NOTIFY payload carries the operation only (PostgreSQL's limit is 8,000)."""


def _derived(name: str, what: str, setting: str) -> str:
    """``name`` if it fits in an identifier; a ``ValueError`` naming the setting if not."""
    try:
        return check_identifier(name)
    except ValueError:
        raise ValueError(
            f"the default {what} name {name!r} is longer than 63 bytes: set `{setting}`"
        ) from None


@dataclass(frozen=True, slots=True)
class CaptureNames:
    """Names of what the install creates for one table (schema-qualified where it applies)."""

    table: str
    """The table as configured ('table' or 'schema.table')."""
    schema: str | None
    change_table: str
    """The change log's own name, without the schema."""
    change_schema: str | None
    trigger: str
    truncate_trigger: str
    function: str
    channel: str

    @classmethod
    def for_table(
        cls,
        table: str,
        *,
        change_table: str | None = None,
        trigger: str | None = None,
        function: str | None = None,
        channel: str | None = None,
    ) -> CaptureNames:
        """The names for ``table``, each default derived from the table's name. Raises
        ``ValueError`` on a name PostgreSQL cannot hold as given."""
        parts = split_table(table)
        schema, base = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        log_parts = split_table(
            change_table or _derived(f"syncworker_{base}_changes", "change table", "change_table")
        )
        change_schema, log_name = (
            (log_parts[0], log_parts[1]) if len(log_parts) == 2 else (schema, log_parts[0])
        )
        trigger = check_identifier(
            trigger or _derived(f"{base}_changes_trigger", "trigger", "trigger")
        )
        return cls(
            table=table,
            schema=schema,
            change_table=log_name,
            change_schema=change_schema,
            trigger=trigger,
            truncate_trigger=_derived(f"{trigger}_truncate", "truncate trigger", "trigger"),
            function=check_identifier(
                function or _derived(f"notify_{base}_changes", "function", "function")
            ),
            channel=check_identifier(channel or log_name),
        )

    @property
    def table_id(self) -> sql.Identifier:
        return sql.Identifier(*split_table(self.table))

    @property
    def change_table_id(self) -> sql.Identifier:
        if self.change_schema is None:
            return sql.Identifier(self.change_table)
        return sql.Identifier(self.change_schema, self.change_table)

    @property
    def change_table_qualified(self) -> str:
        """The change log as ``schema.name`` (or ``name``), for messages and ``to_regclass``."""
        if self.change_schema is None:
            return self.change_table
        return f"{self.change_schema}.{self.change_table}"

    @property
    def function_id(self) -> sql.Identifier:
        if self.schema is None:
            return sql.Identifier(self.function)
        return sql.Identifier(self.schema, self.function)

    def identifiers(self, key: str) -> dict[str, sql.Composable]:
        """The placeholders of ``sql/table_capture_*.sql``."""
        return {
            "table": self.table_id,
            "change_table": self.change_table_id,
            "function": self.function_id,
            "trigger": sql.Identifier(self.trigger),
            "truncate_trigger": sql.Identifier(self.truncate_trigger),
            "key": sql.Identifier(check_identifier(key)),
            "channel": sql.Literal(self.channel),
        }


def install_statements(names: CaptureNames, key: str) -> list[sql.Composed]:
    """The install as statements (one script: log table, function, triggers)."""
    return [sql.SQL(sql_file("table_capture_install")).format(**names.identifiers(key))]


def install_script(names: CaptureNames, key: str) -> str:
    """The install as one plain SQL script a DBA can read and apply (``psql -f``)."""
    return "\n".join(part.as_string(None) for part in install_statements(names, key))


_COLUMN_EXISTS = (
    "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s"
    " AND attnum > 0 AND NOT attisdropped"
)


async def install(
    target: str | Connection,
    table: str,
    key: str = "id",
    *,
    change_table: str | None = None,
    trigger: str | None = None,
    function: str | None = None,
    channel: str | None = None,
) -> CaptureNames:
    """Create (or update) the change log, function and triggers for ``table`` in one
    transaction; harmless to re-run. Returns the names used.

    ``target`` is a postgresql:// URL or an open connection. Concurrent installs are
    serialized by an advisory lock. Raises ``ConfigError`` when the table or its key column
    does not exist, ``ValueError`` on a bad name, ``ConnectionFailed`` when the server is
    unreachable.
    """
    names = CaptureNames.for_table(
        table, change_table=change_table, trigger=trigger, function=function, channel=channel
    )
    statements = install_statements(names, key)
    async with admin_connection(target, "pg_table") as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_INSTALL_LOCK,))
        regclass = names.table_id.as_string(conn)
        if not await _exists(conn, "SELECT to_regclass(%s)", (regclass,)):
            raise ConfigError(f"pg_table: table {table!r} does not exist")
        if not await _exists(conn, _COLUMN_EXISTS, (regclass, key)):
            raise ConfigError(f"pg_table: table {table!r} has no column {key!r} (the key)")
        for statement in statements:
            await conn.execute(statement)
    return names


async def uninstall(
    target: str | Connection,
    table: str,
    *,
    change_table: str | None = None,
    trigger: str | None = None,
    function: str | None = None,
    drop_log: bool = False,
) -> CaptureNames:
    """Drop the triggers and the function; the change log too when ``drop_log`` (changes
    not synced yet are lost with it). Harmless when already uninstalled or the table is
    gone."""
    names = CaptureNames.for_table(
        table, change_table=change_table, trigger=trigger, function=function
    )
    ids = names.identifiers("id")  # the key is not part of the uninstall
    async with admin_connection(target, "pg_table") as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_INSTALL_LOCK,))
        regclass = names.table_id.as_string(conn)
        if await _exists(conn, "SELECT to_regclass(%s)", (regclass,)):
            await conn.execute(sql.SQL(sql_file("table_capture_uninstall")).format(**ids))
        else:
            await conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(ids["function"]))
        if drop_log:
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ids["change_table"]))
    return names


_TRIGGER_PRESENT = (
    "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
    " AND tgname = ANY(%s) AND NOT tgisinternal"
)
_FUNCTION_PRESENT = "SELECT to_regprocedure(%s) IS NOT NULL"
CHANGE_STATS = sql.SQL(
    "SELECT count(*), extract(epoch FROM clock_timestamp() - min(changed_at))::float8,"
    " count(*) FILTER (WHERE op = 'T') FROM {change_table}"
)


async def status(target: str | Connection, names: CaptureNames) -> dict[str, Any]:
    """What is installed for ``names.table`` and what waits in its change log:
    ``table``, ``trigger``, ``truncate_trigger``, ``function``, ``change_table`` (each True
    when present; a trigger disabled with ``ALTER TABLE ... DISABLE TRIGGER`` is reported as
    ``"disabled"``), ``backlog`` (log rows not synced yet), ``oldest_change_age_s`` and
    ``truncates`` (``T`` rows waiting), the last three None without a change log."""
    async with admin_connection(target, "pg_table") as conn:
        table_regclass = names.table_id.as_string(conn)
        log_regclass = names.change_table_id.as_string(conn)
        function = f"{names.function_id.as_string(conn)}()"
        result: dict[str, Any] = {
            "table": await _exists(conn, "SELECT to_regclass(%s)", (table_regclass,)),
            "change_table": await _exists(conn, "SELECT to_regclass(%s)", (log_regclass,)),
            "function": await _exists(conn, _FUNCTION_PRESENT, (function,)),
        }
        cursor = await conn.execute(
            _TRIGGER_PRESENT, (table_regclass, [names.trigger, names.truncate_trigger])
        )
        found = {name: enabled for name, enabled in await cursor.fetchall()}
        for field, name in (
            ("trigger", names.trigger),
            ("truncate_trigger", names.truncate_trigger),
        ):
            enabled = found.get(name)
            result[field] = False if enabled is None else (True if enabled != "D" else "disabled")
        result.update(backlog=None, oldest_change_age_s=None, truncates=None)
        if result["change_table"]:
            statement = CHANGE_STATS.format(change_table=names.change_table_id)
            row = await (await conn.execute(statement)).fetchone()
            if row is not None:
                result.update(backlog=row[0], oldest_change_age_s=row[1], truncates=row[2])
    result["names"] = {
        "table": names.table,
        "change_table": names.change_table_qualified,
        "trigger": names.trigger,
        "truncate_trigger": names.truncate_trigger,
        "function": names.function,
        "channel": names.channel,
    }
    return result


async def request_resync(
    target: str | Connection,
    change_table: str,
    keys: Sequence[str],
    *,
    channel: str | None = None,
) -> int:
    """Ask the ``pg_table`` source reading ``change_table`` to re-read ``keys`` (text, as
    the source's record keys): one ``R`` row each in the change log, and a NOTIFY on
    ``channel`` (default: the change log's own name) so a listening source reads them at
    once. A key whose row is gone, or no longer matches the source's filter, becomes a
    delete. For callers without an open source (``verify --repair``). Returns how many
    rows were queued."""
    parts = split_table(change_table)
    if not keys:
        return 0
    async with admin_connection(target, "pg_table") as conn, conn.transaction():
        cursor = await conn.execute(
            RESYNC.format(change_table=sql.Identifier(*parts)), {"keys": list(keys)}
        )
        count = cursor.rowcount
        await conn.execute(NOTIFY, (check_identifier(channel or parts[-1]), "R:"))
    return count


async def _exists(conn: Connection, query: str, params: Sequence[Any]) -> bool:
    row = await (await conn.execute(query, params)).fetchone()
    return bool(row and row[0])


# The source's statements on the change log. {change_table}, {table}, {key}, {updated_at} are
# identifiers; values are parameters.

CLAIM_CHANGES = sql.SQL(
    "SELECT id, key, op FROM {change_table} WHERE key <> ALL(%(busy)s::text[])"
    " ORDER BY id LIMIT %(limit)s"
)
"""The oldest log rows whose key is not in a batch still unsettled: a key in flight is never
claimed again before its batch is acked or nacked, so its changes reach the sinks in order
whatever ``max_in_flight``. Rows are never leased: one consumer reads a change log (a pipeline
lock keeps a second worker out)."""

DELETE_CHANGES = sql.SQL("DELETE FROM {change_table} WHERE id = ANY(%(ids)s::bigint[])")
"""The ack: the claimed rows only; a change logged after the claim stays for the next one."""

LOOKBACK = sql.SQL(
    "INSERT INTO {change_table} (key, op)"
    " SELECT t.{key}::text, 'R' FROM {table} AS t"
    " WHERE t.{updated_at} >= now() - %(window_s)s * interval '1 second'"
)
"""The lookback: every row changed within the window is queued for a re-read through the
stream path (with its per-key ordering), for what reached the table without its triggers."""

RESYNC = sql.SQL("INSERT INTO {change_table} (key, op) SELECT unnest(%(keys)s::text[]), 'R'")

NOTIFY = "SELECT pg_notify(%s, %s)"

BACKLOG = sql.SQL("SELECT count(*) FROM {change_table}")
