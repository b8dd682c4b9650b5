"""The PostgreSQL outbox behind the ``pg_outbox`` source: install, uninstall, stats, retry of
failed rows and clean-up, as a Python API (the CLI builds on it).

An outbox is a queue table filled by triggers on the source tables (``sql/outbox_*.sql``).
Every other object is named after the queue table: with ``algolia_sync_queue`` (seed 001) they
are ``algolia_sync_log``, ``algolia_sync_stats`` and ``algolia_sync_cleanup(days)``, plus the
seed's own ``cleanup_old_sync_records(days)``; with any other name ``<queue>_log``,
``<queue>_stats`` and ``<queue>_cleanup(days)``.

The statements the source runs on the hot path are module constants here too, so every SQL
text of the outbox lives in this module or in ``sql/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from psycopg import sql

from syncworker.connectors.postgres.client import (
    Connection,
    admin_connection,
    check_identifier,
    split_table,
    table_identifier,
)

DEFAULT_QUEUE_TABLE = "syncworker_outbox"
SEED_QUEUE_TABLE = "algolia_sync_queue"
"""With this queue name the install also creates the seed's ``cleanup_old_sync_records``."""
MAX_QUEUE_NAME_BYTES = 40
"""Leaves room for the longest derived name (``<queue>_processed_idx``) within 63 bytes."""
_INSTALL_LOCK = "syncworker_outbox_install"


def check_queue_table(name: str) -> str:
    """``name`` unchanged if it can name a queue table and its derived objects."""
    check_identifier(name)
    if len(name.encode()) > MAX_QUEUE_NAME_BYTES:
        raise ValueError(
            f"queue table name {name!r} is longer than {MAX_QUEUE_NAME_BYTES} bytes "
            "(the log, stats and index names derived from it must fit in 63)"
        )
    return name


@dataclass(frozen=True, slots=True)
class OutboxNames:
    """Names of the objects an install creates for one queue table."""

    queue: str
    log: str
    stats: str
    cleanup_function: str
    enqueue_function: str
    trigger: str
    claim_index: str
    processed_index: str
    record_index: str
    log_index: str

    @classmethod
    def for_queue(cls, queue: str) -> OutboxNames:
        check_queue_table(queue)
        base = queue.removesuffix("_queue") or queue
        return cls(
            queue=queue,
            log=f"{base}_log",
            stats=f"{base}_stats",
            cleanup_function=f"{base}_cleanup",
            enqueue_function=f"{queue}_enqueue",
            trigger=f"{queue}_trigger",
            claim_index=f"{queue}_claim_idx",
            processed_index=f"{queue}_processed_idx",
            record_index=f"{queue}_record_idx",
            log_index=f"{base}_log_synced_idx",
        )

    def identifiers(self, channel: str) -> dict[str, sql.Composable]:
        """The placeholders of ``sql/outbox_*.sql``."""
        return {
            "queue": sql.Identifier(self.queue),
            "log": sql.Identifier(self.log),
            "stats": sql.Identifier(self.stats),
            "cleanup_function": sql.Identifier(self.cleanup_function),
            "enqueue_function": sql.Identifier(self.enqueue_function),
            "claim_index": sql.Identifier(self.claim_index),
            "processed_index": sql.Identifier(self.processed_index),
            "record_index": sql.Identifier(self.record_index),
            "log_index": sql.Identifier(self.log_index),
            "channel": sql.Literal(channel),
            "queue_name": sql.Literal(self.queue),
        }


@cache
def sql_file(name: str) -> str:
    """The text of ``sql/<name>.sql`` (read from the package once per process)."""
    return (files(__package__) / "sql" / f"{name}.sql").read_text(encoding="utf-8")


def install_statements(
    queue: str,
    tables: Sequence[str],
    *,
    key_columns: dict[str, str] | None = None,
    channel: str | None = None,
) -> list[sql.Composed]:
    """The install as statements: queue, log, view, functions, then one trigger per table.

    ``key_columns`` maps a table to its key column (default ``id``); ``channel`` is the
    NOTIFY channel (default: the queue table name). Raises ``ValueError`` on a bad name.
    """
    names = OutboxNames.for_queue(queue)
    ids = names.identifiers(channel or queue)
    statements = [sql.SQL(sql_file("outbox_install")).format(**ids)]
    if queue == SEED_QUEUE_TABLE:
        statements.append(sql.SQL(sql_file("outbox_seed_cleanup")).format(**ids))
    keys = key_columns or {}
    for table in tables:
        split_table(table)
        statements.append(
            sql.SQL(sql_file("outbox_trigger")).format(
                trigger=sql.Identifier(names.trigger),
                table=table_identifier(table),
                enqueue_function=ids["enqueue_function"],
                key_column=sql.Literal(check_identifier(keys.get(table, "id"))),
                table_name=sql.Literal(table),
            )
        )
    return statements


def install_script(
    queue: str,
    tables: Sequence[str],
    *,
    key_columns: dict[str, str] | None = None,
    channel: str | None = None,
) -> str:
    """The install as one plain SQL script a DBA can read and apply (``psql -f``)."""
    parts = install_statements(queue, tables, key_columns=key_columns, channel=channel)
    return "\n".join(part.as_string(None) for part in parts)


async def install(
    target: str | Connection,
    queue: str = DEFAULT_QUEUE_TABLE,
    tables: Sequence[str] = (),
    *,
    key_columns: dict[str, str] | None = None,
    channel: str | None = None,
) -> None:
    """Create (or update) the outbox and its triggers in one transaction; harmless to re-run.

    ``target`` is a postgresql:// URL or an open connection. Concurrent installs are
    serialized by an advisory lock. Raises ``psycopg.Error`` when a table or key column is
    missing, ``ConnectionFailed`` when the server is unreachable.
    """
    statements = install_statements(queue, tables, key_columns=key_columns, channel=channel)
    async with admin_connection(target, "pg_outbox") as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_INSTALL_LOCK,))
        for statement in statements:
            await conn.execute(statement)


async def uninstall(
    target: str | Connection,
    queue: str = DEFAULT_QUEUE_TABLE,
    tables: Sequence[str] = (),
    *,
    drop_tables: bool = False,
) -> None:
    """Drop the triggers on ``tables``, the functions and the view; the queue and log tables
    too when ``drop_tables``. Harmless when already uninstalled."""
    names = OutboxNames.for_queue(queue)
    ids = names.identifiers(queue)
    async with admin_connection(target, "pg_outbox") as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_INSTALL_LOCK,))
        for table in tables:
            await conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(names.trigger), table_identifier(table)
                )
            )
        if queue == SEED_QUEUE_TABLE:
            await conn.execute("DROP FUNCTION IF EXISTS cleanup_old_sync_records(integer)")
        await conn.execute(sql.SQL(sql_file("outbox_uninstall")).format(**ids))
        if drop_tables:
            await conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}, {}").format(ids["queue"], ids["log"])
            )


async def stats(target: str | Connection, queue: str = DEFAULT_QUEUE_TABLE) -> dict[str, Any]:
    """One row of the stats view: ``pending``, ``processing``, ``completed``, ``failed``,
    ``expired_leases``, ``oldest_pending_age_s`` (float or None), ``completed_last_hour``."""
    names = OutboxNames.for_queue(queue)
    async with admin_connection(target, "pg_outbox") as conn:
        cursor = await conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(names.stats)))
        row = await cursor.fetchone()
        columns = [column.name for column in cursor.description or ()]
    values: dict[str, Any] = dict(zip(columns, row or (), strict=False))
    age = values.get("oldest_pending_age_s")
    values["oldest_pending_age_s"] = None if age is None else float(age)
    return values


RETRY_FAILED = sql.SQL(
    "UPDATE {queue} SET status = 'pending', attempts = 0, next_attempt_at = now(),"
    " locked_by = NULL, locked_until = NULL"
    " WHERE status = 'failed' AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))"
    " AND (%(table)s::text IS NULL OR table_name = %(table)s::text)"
)


async def retry_failed(
    target: str | Connection,
    queue: str = DEFAULT_QUEUE_TABLE,
    *,
    ids: Sequence[int] | None = None,
    table: str | None = None,
    channel: str | None = None,
) -> int:
    """Put ``failed`` rows back to ``pending`` (attempts reset; ``last_error`` kept until the
    next failure or success), all of them or only ``ids`` / one source ``table``, and NOTIFY
    ``channel`` (default: the queue name) so listening workers pick them up at once.
    Returns how many rows were put back."""
    names = OutboxNames.for_queue(queue)
    statement = RETRY_FAILED.format(queue=sql.Identifier(names.queue))
    params = {"ids": None if ids is None else list(ids), "table": table}
    async with admin_connection(target, "pg_outbox") as conn:
        cursor = await conn.execute(statement, params)
        count = cursor.rowcount
        if count:
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (check_identifier(channel or queue), queue)
            )
    return count


async def cleanup(target: str | Connection, queue: str = DEFAULT_QUEUE_TABLE, days: int = 7) -> int:
    """Delete completed queue rows processed, and log rows written, more than ``days`` days
    ago (through the installed clean-up function). Returns how many rows were deleted."""
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    names = OutboxNames.for_queue(queue)
    async with admin_connection(target, "pg_outbox") as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT {}(%s)").format(sql.Identifier(names.cleanup_function)), (days,)
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


# The source's statements. Parameters are named; {queue}/{log} are identifiers. Rows are
# picked with ``id = ANY(array)``, never ``id IN (subquery)`` or a join with ``unnest``: the
# planner turns those into a hash join over a sequential scan of the whole queue, completed
# rows included, so a claim got slower as the table grew (151 ms vs 78 ms per 5,000 rows at
# 200k rows, EXPLAIN ANALYZE).

CLAIM = sql.SQL(
    """UPDATE {queue} AS q
SET status = 'processing', locked_by = %(worker)s,
    locked_until = now() + %(lease_s)s * interval '1 second', attempts = q.attempts + 1
WHERE q.id = ANY(ARRAY(
    SELECT id FROM {queue}
    WHERE (status = 'pending' AND next_attempt_at <= now())
       OR (status = 'processing' AND locked_until < now() AND attempts < %(max_retries)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING q.id, q.table_name, q.record_id, q.operation, q.attempts,
          extract(epoch FROM q.created_at)::float8"""
)

RELEASE = sql.SQL(
    """UPDATE {queue}
SET status = 'pending', attempts = greatest(attempts - 1, 0), next_attempt_at = now(),
    locked_by = NULL, locked_until = NULL, last_error = coalesce(%(error)s, last_error)
WHERE id = ANY(%(ids)s) AND status = 'processing' AND locked_by = %(worker)s
RETURNING id"""
)
"""Hand rows back uncounted: the claim's attempt is taken back (shutdown, lost lock, or the
sink down for the whole batch, which is not the rows' fault)."""

FAIL = sql.SQL(
    """UPDATE {queue} AS q
SET status = CASE WHEN q.attempts >= %(max_retries)s THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + least(%(max_delay_s)s,
        %(delay_s)s * power(2, greatest(q.attempts - 1, 0))) * interval '1 second',
    locked_by = NULL, locked_until = NULL, last_error = f.error
FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS f(id, error)
WHERE q.id = ANY(%(ids)s::bigint[]) AND q.id = f.id
  AND q.status = 'processing' AND q.locked_by = %(worker)s
RETURNING q.id, q.status"""
)
"""A counted failed attempt per row, each with its own error: back to ``pending`` after a
backoff, or ``failed`` once ``max_retries`` attempts are used."""

ACK_BATCH = sql.SQL(
    """WITH done AS (
    UPDATE {queue} SET status = 'completed', processed_at = now(), locked_by = NULL,
        locked_until = NULL, last_error = NULL
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'processing' AND locked_by = %(worker)s
    RETURNING id, table_name, record_id, operation
), per_record AS (
    SELECT table_name, record_id, array_agg(id ORDER BY id) AS ids, max(id) AS last_id,
           (array_agg(operation ORDER BY id DESC))[1] AS operation
    FROM done GROUP BY table_name, record_id
), logged AS (
    INSERT INTO {log} (queue_ids, table_name, record_id, operation, result, worker)
    SELECT ids, table_name, record_id, operation, 'success', %(worker)s FROM per_record
), requeued AS (
    INSERT INTO {queue} (table_name, record_id, operation)
    SELECT p.table_name, p.record_id, 'UPDATE' FROM per_record AS p
    CROSS JOIN LATERAL (
        SELECT 1 FROM {queue} q
        WHERE q.table_name = p.table_name AND q.record_id = p.record_id AND q.id > p.last_id
          AND q.status IN ('processing', 'completed')
        LIMIT 1
    ) AS later
    RETURNING id
)
SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM requeued)"""
)
"""The whole ack of a batch in one statement, from the queue ids alone: the rows to
``completed``, the log rows (one per record, its queue ids and last operation, built from the
rows the UPDATE returns) and the overtaken check. One round trip and one small array
parameter instead of three statements with five text arrays, whose conversion was a third of
the worker's CPU.

The overtaken check: records of which a LATER change was already claimed or sent (by another
worker, or by this one's other batch in flight) are queued once more. Both sends raced to
the sink and the older state may have landed last; the record's current state is read and
sent again, after both. Per-record ordering without serializing the claims. It is a LATERAL
probe per record rather than ``WHERE EXISTS``: once psycopg prepared the statement,
PostgreSQL's generic plan for EXISTS over the records became a join over the whole queue
(11-16 s per ack instead of milliseconds)."""

NOTIFY = "SELECT pg_notify(%s, %s)"

FAIL_ABANDONED = sql.SQL(
    """WITH failed AS (
    UPDATE {queue}
    SET status = 'failed', locked_by = NULL, locked_until = NULL,
        last_error = format('abandoned %%s time(s): the worker holding it (last %%s) died or'
                            ' stalled past its lease', attempts, locked_by)
    WHERE status = 'processing' AND locked_until < now() AND attempts >= %(max_retries)s
    RETURNING id, table_name, record_id, operation, last_error
)
INSERT INTO {log} (queue_ids, table_name, record_id, operation, result, error, worker)
SELECT ARRAY[id], table_name, record_id, operation, 'failed', last_error, %(worker)s
FROM failed
RETURNING record_id"""
)
"""Rows whose every attempt ended with the worker gone (a record that crashes or stalls
whatever worker takes it): ``failed`` after ``max_retries`` such attempts, instead of being
claimed for ever; logged like any failure, and ``retry-failed`` brings them back."""

LOG = sql.SQL(
    "INSERT INTO {log} (queue_ids, table_name, record_id, operation, result, error, worker)"
    " SELECT string_to_array(ids, ',')::bigint[], t, r, o, res, e, %(worker)s"
    " FROM unnest(%(queue_ids)s::text[], %(tables)s::text[], %(records)s::text[],"
    " %(operations)s::text[], %(results)s::text[], %(errors)s::text[])"
    " AS u(ids, t, r, o, res, e)"
)

BACKLOG = sql.SQL(
    "SELECT count(*) FROM {queue}"
    " WHERE (status = 'pending' AND next_attempt_at <= now())"
    " OR (status = 'processing' AND locked_until < now())"
)

KEY_TYPE = (
    "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a"
    " WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped"
)

READ_ROWS = (
    "SELECT {key}::text, to_jsonb(t)::text FROM {table} AS t"
    " WHERE {key} = ANY(%s::text[]::{key_type}[])"
)
"""The row as JSON text, parsed with orjson by the source (psycopg's stdlib ``json`` loader
was 15% of the worker's CPU). ``{key_type}`` is the key column's type as the catalog names
it (``KEY_TYPE``), never user text: casting the keys to it keeps the primary key index
usable."""
