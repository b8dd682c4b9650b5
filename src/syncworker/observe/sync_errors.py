"""``sync_errors``: a pipeline's error log, also kept in a table of the target database.

    pipelines:
      users:
        sync_errors: {url: "${TARGET_DATABASE_URL}", table: sync_errors, create: true}

``SyncErrorsStore`` wraps the state store a pipeline is given: every method goes to the state
store, and every ``record_error`` (dead letters, failed records, batches and runs, what the
source reports through its ``SourceContext``) and ``resolve_errors`` is also written to the
table by ``SyncErrorsTable``, in the background. The state store stays the record: the table
is a copy to query where the data is (seed 004's monitoring queries), so a table that cannot
be written never blocks or fails the pipeline. Each failed write is logged with its reason
(``sync_errors_write_failed``) and retried with backoff; errors waiting are kept in memory up
to ``max_pending`` (the oldest then give way, counted in ``sync_errors_dropped``: they are in
the state store still).

The table's DDL is ``sql/sync_errors.sql`` (``create: true`` runs it; the seed example's
migration is the same text with the names filled in). psycopg is imported only when a table
is written, so the section costs nothing to a config without it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.fields import refuse_bool_for_number
from syncworker.observe.logging import redact_url
from syncworker.state.base import (
    DeadLetter,
    DeadLetterStatus,
    ErrorRecord,
    RunRecord,
    StateStore,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

log = structlog.get_logger(__name__)

INSERT_ROWS_MAX = 500  # errors written per statement
RETRY_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 30.0


def ddl_template() -> str:
    """The table's DDL with ``{table}`` and index-name placeholders (psycopg ``sql.SQL``
    format: ``{{}}`` is a literal ``{}``)."""
    return (files("syncworker.observe") / "sql" / "sync_errors.sql").read_text(encoding="utf-8")


def index_names(table_name: str) -> dict[str, str]:
    """The indexes' names for a table called ``table_name`` (unqualified: an index lives in
    its table's schema). PostgreSQL keeps 63 bytes of a name, so a long table name is cut."""
    base = table_name.encode()[:40].decode(errors="ignore")
    return {
        "created_at_index": f"{base}_created_at_idx",
        "unresolved_index": f"{base}_unresolved_idx",
        "error_type_index": f"{base}_error_type_idx",
    }


class SyncErrorsConfig(BaseModel):
    """The pipeline's ``sync_errors`` section: where its errors are also written."""

    model_config = {"extra": "forbid", "frozen": True}

    url: str = Field(
        description="postgresql:// URL of the database holding the table (the target's, so "
        "errors are queried where the data is)"
    )
    table: str = Field("sync_errors", description="table written to, optionally schema-qualified")
    create: bool = Field(
        True,
        description="create the table and its indexes if missing (the same DDL as "
        "examples/user_sync/migrations/001_create_sync_errors_table.sql)",
    )
    connect_timeout: DurationS = Field(
        5.0, gt=0, description="longest wait to connect before a write counts as failed"
    )
    max_pending: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="errors kept in memory while the table cannot be written; past it the "
        "oldest give way (they stay in the state store)",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_number(cls, value, info)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return str(_postgres_client().check_url(value))

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        _postgres_client().split_table(value)
        return value


def _postgres_client() -> Any:
    try:
        from syncworker.connectors.postgres import client
    except ImportError as exc:
        raise ValueError(
            f"sync_errors needs the postgres extra ({exc.name} is not installed): "
            "pip install -e '.[postgres]' in the checkout"
        ) from None
    return client


@dataclass(slots=True)
class _Insert:
    row: dict[str, Any]


@dataclass(slots=True)
class _Resolve:
    ids: list[int]


_Op = _Insert | _Resolve


@dataclass(slots=True)
class _Statements:
    create: sql.Composed
    insert: sql.Composed
    resolve: sql.Composed

    @classmethod
    def build(cls, table: str) -> _Statements:
        from psycopg import sql

        client = _postgres_client()
        parts = client.split_table(table)
        target = sql.Identifier(*parts)
        names = {k: sql.Identifier(v) for k, v in index_names(parts[-1]).items()}
        columns = [
            "event_id",
            "pipeline",
            "state_error_id",
            "error_type",
            "record_key",
            "error_message",
            "stack_trace",
            "metadata",
            "created_at",
            "resolved",
        ]
        return cls(
            create=sql.SQL(ddl_template()).format(table=target, **names),
            insert=sql.SQL(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (event_id) DO NOTHING"
            ).format(
                target,
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(map(sql.Placeholder, columns)),
            ),
            resolve=sql.SQL(
                "UPDATE {} SET resolved = true, resolved_at = now() WHERE pipeline = "
                "%(pipeline)s AND state_error_id = ANY(%(ids)s) AND NOT resolved"
            ).format(target),
        )


@dataclass(slots=True)
class _Backoff:
    delay_s: float = RETRY_DELAY_S

    def next(self) -> float:
        delay_s = self.delay_s
        self.delay_s = min(RETRY_MAX_DELAY_S, self.delay_s * 2)
        return delay_s

    def reset(self) -> None:
        self.delay_s = RETRY_DELAY_S


@dataclass(slots=True)
class SyncErrorsTable:
    """Writes one pipeline's errors to the table from a background task, in order.

    ``add`` and ``resolve`` never wait for the database; ``flush`` waits until everything
    added is written (or the timeout passes); ``close`` flushes within its timeout, then stops.
    """

    config: SyncErrorsConfig
    pipeline: str
    _pending: deque[_Op] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _conn: psycopg.AsyncConnection[Any] | None = None
    _statements: _Statements | None = None
    _created: bool = False
    _closed: bool = False
    _backoff: _Backoff = field(default_factory=_Backoff)
    written: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def label(self) -> str:
        where = _postgres_client().describe_url(self.config.url)
        return f"sync_errors {where!r} table {self.config.table!r}"

    def start(self) -> None:
        """Start the writer (connecting, and creating the table if configured, at once)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"sync_errors:{self.pipeline}")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, error: ErrorRecord, state_error_id: int | None) -> None:
        """Queue ``error`` for the table (``state_error_id``: its id in the state store)."""
        created_at = error.created_at if error.created_at is not None else time.time()
        self._queue(
            _Insert(
                {
                    "event_id": uuid.uuid4(),
                    "pipeline": error.pipeline,
                    "state_error_id": state_error_id,
                    "error_type": error.type,
                    "record_key": error.record_key,
                    "error_message": error.message,
                    "stack_trace": error.stack,
                    "metadata": _metadata(error.metadata),
                    "created_at": datetime.fromtimestamp(created_at, tz=UTC),
                    "resolved": error.resolved,
                }
            )
        )

    def resolve(self, ids: list[int]) -> None:
        """Queue marking the errors of these state store ids resolved in the table."""
        if ids:
            self._queue(_Resolve(list(ids)))

    def _queue(self, op: _Op) -> None:
        if self._closed:
            log.warning(
                "sync_errors_write_failed",
                pipeline=self.pipeline,
                table=self.config.table,
                reason="the pipeline's sync_errors writer is closed",
                kept_in="state store",
            )
            return
        if len(self._pending) >= self.config.max_pending:
            self._pending.popleft()
            self.dropped += 1
            log.warning(
                "sync_errors_dropped",
                pipeline=self.pipeline,
                table=self.config.table,
                dropped=self.dropped,
                max_pending=self.config.max_pending,
                kept_in="state store",
            )
        self._pending.append(op)
        self._idle.clear()
        self._wake.set()
        self.start()

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued is written; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued within ``timeout_s``, then stop; what is left is logged
        (``sync_errors_not_written``: it is in the state store)."""
        if self._closed:
            return
        if self._task is not None and self._pending:
            await self.flush(timeout_s)
        self._closed = True
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pending:
            log.warning(
                "sync_errors_not_written",
                pipeline=self.pipeline,
                table=self.config.table,
                errors=len(self._pending),
                kept_in="state store",
            )
        await self._disconnect()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.config.create and not self._created:
                    await self._connect()  # the table exists before the first error
                if not self._pending:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._connect()
                await self._write_some()
                self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(exc)

    async def _failed(self, exc: Exception) -> None:
        retry_in_s = self._backoff.next()
        log.warning(
            "sync_errors_write_failed",
            pipeline=self.pipeline,
            table=self.config.table,
            where=self.label,
            action="create" if self.config.create and not self._created else "write",
            reason=_reason(exc),
            pending=len(self._pending),
            retry_in_s=retry_in_s,
            kept_in="state store",
        )
        await self._disconnect()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), retry_in_s)

    async def _connect(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        client = _postgres_client()
        if self._statements is None:
            self._statements = _Statements.build(self.config.table)
        settings = client.ConnectSettings(
            url=self.config.url,
            connect_timeout_s=self.config.connect_timeout,
            statement_timeout_s=30.0,
            application_name=f"syncworker:{self.pipeline}:sync_errors",
        )
        self._conn = await client.connect(settings, self.label)
        if self.config.create and not self._created:
            await self._create()

    async def _create(self) -> None:
        import psycopg

        assert self._conn is not None and self._statements is not None
        # UniqueViolation: another worker created it at the same moment (IF NOT EXISTS races).
        with suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            await self._conn.execute(self._statements.create)
        self._created = True
        log.info("sync_errors_ready", pipeline=self.pipeline, table=self.config.table)

    async def _write_some(self) -> None:
        """Write the oldest queued operation, or a run of inserts in one statement; they
        leave the queue only once committed."""
        assert self._conn is not None and self._statements is not None
        first = self._pending[0]
        if isinstance(first, _Resolve):
            params = {"pipeline": self.pipeline, "ids": first.ids}
            await self._conn.execute(self._statements.resolve, params)
            self._pending.popleft()
            return
        rows: list[dict[str, Any]] = []
        for op in self._pending:
            if not isinstance(op, _Insert) or len(rows) >= INSERT_ROWS_MAX:
                break
            rows.append(op.row)
        async with self._conn.transaction(), self._conn.cursor() as cursor:
            await cursor.executemany(self._statements.insert, rows)
        for _ in rows:
            self._pending.popleft()
        self.written += len(rows)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:
                log.debug("sync_errors_close_failed", pipeline=self.pipeline, error=_reason(exc))


def _metadata(metadata: dict[str, Any]) -> str:
    """The metadata as JSON text; a value without a JSON form is written as its text."""
    return jsonvalue.dumps(metadata, default=str).decode() if metadata else "{}"


def _reason(exc: BaseException) -> str:
    try:
        from syncworker.connectors.postgres.client import describe
    except ImportError:
        return redact_url(f"{type(exc).__name__}: {exc}")
    return describe(exc)


class SyncErrorsStore:
    """A pipeline's state store that also writes its errors to ``sync_errors``.

    Every ``StateStore`` method goes to ``inner`` and answers as it does; ``record_error``
    and ``resolve_errors`` also queue the same change for the table (never waiting for it).
    ``open`` opens ``inner`` only when nobody did (and ``close`` then closes it): a shared
    store is the engine's to open and close. ``close`` gives queued errors
    ``drain_timeout_s`` to be written.
    """

    def __init__(
        self,
        inner: StateStore,
        pipeline: str,
        config: SyncErrorsConfig,
        *,
        drain_timeout_s: float = 5.0,
    ) -> None:
        self.inner = inner
        self.pipeline = pipeline
        self.table = SyncErrorsTable(config, pipeline)
        self.drain_timeout_s = drain_timeout_s
        self._owns_inner = False
        self._open = False

    @property
    def is_open(self) -> bool:
        """Open when its writer runs and the inner store is open."""
        return self._open and bool(getattr(self.inner, "is_open", True))

    async def open(self) -> None:
        if not getattr(self.inner, "is_open", True):
            await self.inner.open()
            self._owns_inner = True
        self._open = True
        self.table.start()

    async def close(self) -> None:
        self._open = False
        await self.table.close(self.drain_timeout_s)
        if self._owns_inner:
            self._owns_inner = False
            await self.inner.close()

    async def record_error(self, error: ErrorRecord) -> int:
        error_id = await self.inner.record_error(error)
        self.table.add(error, error_id)
        return error_id

    async def resolve_errors(self, ids: list[int]) -> int:
        resolved = await self.inner.resolve_errors(ids)
        self.table.resolve(ids)
        return resolved

    # -- the rest goes to the inner store as it is -----------------------------------------

    async def get_checkpoint(self, pipeline: str, name: str) -> str | None:
        return await self.inner.get_checkpoint(pipeline, name)

    async def set_checkpoint(self, pipeline: str, name: str, value: str) -> None:
        await self.inner.set_checkpoint(pipeline, name, value)

    async def record_run(self, run: RunRecord) -> int:
        return await self.inner.record_run(run)

    async def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]:
        return await self.inner.runs(pipeline, limit)

    async def errors(
        self, pipeline: str | None = None, *, unresolved_only: bool = False, limit: int = 50
    ) -> list[ErrorRecord]:
        return await self.inner.errors(pipeline, unresolved_only=unresolved_only, limit=limit)

    async def add_dead_letters(self, letters: list[DeadLetter]) -> list[int]:
        return await self.inner.add_dead_letters(letters)

    async def dead_letters(
        self,
        pipeline: str | None = None,
        status: DeadLetterStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeadLetter]:
        return await self.inner.dead_letters(pipeline, status, limit, offset)

    async def dead_letter(self, letter_id: int) -> DeadLetter | None:
        return await self.inner.dead_letter(letter_id)

    async def count_dead_letters(self, pipeline: str | None = None) -> dict[str, int]:
        return await self.inner.count_dead_letters(pipeline)

    async def requeue_dead_letters(
        self, ids: list[int] | None = None, pipeline: str | None = None
    ) -> int:
        return await self.inner.requeue_dead_letters(ids, pipeline)

    async def claim_requeued(self, pipeline: str, limit: int) -> list[DeadLetter]:
        return await self.inner.claim_requeued(pipeline, limit)

    async def release_requeued(self, ids: list[int]) -> None:
        await self.inner.release_requeued(ids)

    async def delete_dead_letters(self, ids: list[int]) -> int:
        return await self.inner.delete_dead_letters(ids)

    async def purge_dead_letters(
        self, ids: list[int] | None = None, pipeline: str | None = None
    ) -> int:
        return await self.inner.purge_dead_letters(ids, pipeline)
