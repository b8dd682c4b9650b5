"""The default state store: one SQLite file, shared safely by the engine and the CLI (WAL)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import orjson

from syncworker.connectors.sqlite.client import SqliteClient, transaction
from syncworker.core import jsonvalue
from syncworker.state.base import DeadLetter, DeadLetterStatus, ErrorRecord, RunRecord

T = TypeVar("T")
_SCHEMA = resources.files("syncworker.state").joinpath("schema.sql").read_text()
_DL_COLUMNS = (
    "id, pipeline, sink, stream, key, op, data, meta, error, error_type, stack, status, "
    "attempts, created_at, updated_at"
)


def _dumps(value: Any) -> str:
    try:
        return jsonvalue.dumps(value, default=str).decode()
    except (TypeError, ValueError):
        # A dead letter is kept whatever its data: a refused record (a lone surrogate, 100,000
        # levels deep) must not fail the dead-lettering, or its whole batch rolls back for ever.
        return _dumps_any(value)


def _dumps_any(value: Any) -> str:
    """JSON for any value, walked with a stack of its own (orjson stops at 254 levels and
    refuses lone surrogates; the stdlib encoder recurses): strings escaped to ASCII (a lone
    surrogate as ``\\udcff``, which Python's parser reads back), numbers exact, anything
    else as its ``str``."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            out.append(item.text)
        elif item is None or isinstance(item, bool | int | float):
            out.append(json.dumps(item))
        elif isinstance(item, Decimal) and item.is_finite():
            out.append(str(item))
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Raw("}"))
            members = list(item.items())
            for n in range(len(members) - 1, -1, -1):  # pushed last first: popped in order
                key, inner = members[n]
                stack += [inner, _Raw(json.dumps(str(key)) + ":")]
                if n:
                    stack.append(_Raw(","))
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append(_Raw("]"))
            for n in range(len(item) - 1, -1, -1):
                stack.append(item[n])
                if n:
                    stack.append(_Raw(","))
        else:
            out.append(json.dumps(item if isinstance(item, str) else str(item)))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Raw:
    text: str


def _loads(text: str) -> Any:
    try:
        return jsonvalue.loads(text)
    except ValueError:
        pass
    try:  # what _dumps_any wrote: lone surrogates, deeper than orjson reads
        return json.loads(text, parse_float=jsonvalue.exact_float)
    except (ValueError, RecursionError):
        return {"raw": text, "wrapped": True, "reason": "too_deep"}


class SqliteStateStore:
    """State in a SQLite file, on the connectors' ``SqliteClient``: one thread owns the
    connection, so a multi-statement change is one hop and never interleaves with another."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._client = SqliteClient(self.path, label=f"state store {str(self.path)!r}")

    @property
    def is_open(self) -> bool:
        return self._client.is_open

    async def open(self) -> None:
        await self._client.open(_create_schema)

    async def close(self) -> None:
        await self._client.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._client.run(fn)

    @staticmethod
    def _write(conn: sqlite3.Connection, sql: str, params: Any = ()) -> sqlite3.Cursor:
        with transaction(conn):
            return conn.execute(sql, params)

    @staticmethod
    def _executemany(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
        with transaction(conn):
            return conn.executemany(sql, rows).rowcount

    # -- checkpoints -------------------------------------------------------------------

    async def get_checkpoint(self, pipeline: str, name: str) -> str | None:
        sql = "SELECT value FROM checkpoints WHERE pipeline = ? AND name = ?"
        row = await self._run(lambda conn: conn.execute(sql, (pipeline, name)).fetchone())
        return row[0] if row else None

    async def set_checkpoint(self, pipeline: str, name: str, value: str) -> None:
        sql = (
            "INSERT INTO checkpoints (pipeline, name, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at"
        )
        await self._run(lambda conn: self._write(conn, sql, (pipeline, name, value, time.time())))

    # -- runs --------------------------------------------------------------------------

    async def record_run(self, run: RunRecord) -> int:
        sql = (
            "INSERT INTO runs (pipeline, mode, started_at, finished_at, duration_ms, status, "
            "processed, written, dead_lettered, filtered, streams, error, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            run.pipeline,
            run.mode,
            run.started_at,
            run.finished_at,
            run.duration_ms,
            run.status,
            run.processed,
            run.written,
            run.dead_lettered,
            run.filtered,
            _dumps(run.streams),
            run.error,
            _run_details(run),
        )
        cursor = await self._run(lambda conn: self._write(conn, sql, params))
        return int(cursor.lastrowid or 0)

    async def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]:
        sql = (
            "SELECT id, pipeline, mode, started_at, finished_at, status, processed, written, "
            "dead_lettered, filtered, streams, error, duration_ms, details FROM runs "
            "WHERE (?1 IS NULL OR pipeline = ?1) ORDER BY id DESC LIMIT ?2"
        )
        rows = await self._run(lambda conn: conn.execute(sql, (pipeline, limit)).fetchall())
        return [
            RunRecord(
                id=r[0],
                pipeline=r[1],
                mode=r[2],
                started_at=r[3],
                finished_at=r[4],
                status=r[5],
                processed=r[6],
                written=r[7],
                dead_lettered=r[8],
                filtered=r[9],
                streams=orjson.loads(r[10]),
                error=r[11],
                # duration_ms is stored without the breaker's pauses: the rest of the wall
                # time is the pause.
                paused_ms=max(0.0, (r[4] - r[3]) * 1000.0 - r[12]),
                **_details(r[13]),
            )
            for r in rows
        ]

    # -- errors ------------------------------------------------------------------------

    async def record_error(self, error: ErrorRecord) -> int:
        sql = (
            "INSERT INTO errors (type, pipeline, record_key, message, stack, metadata, "
            "created_at, resolved) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            error.type,
            error.pipeline,
            error.record_key,
            error.message,
            error.stack,
            _dumps(error.metadata),
            error.created_at or time.time(),
            int(error.resolved),
        )
        cursor = await self._run(lambda conn: self._write(conn, sql, params))
        return int(cursor.lastrowid or 0)

    async def errors(
        self, pipeline: str | None = None, *, unresolved_only: bool = False, limit: int = 50
    ) -> list[ErrorRecord]:
        sql = (
            "SELECT id, type, pipeline, record_key, message, stack, metadata, created_at, "
            "resolved FROM errors WHERE (?1 IS NULL OR pipeline = ?1) "
            "AND (?2 = 0 OR resolved = 0) ORDER BY id DESC LIMIT ?3"
        )
        params = (pipeline, int(unresolved_only), limit)
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [
            ErrorRecord(
                id=r[0],
                type=r[1],
                pipeline=r[2],
                record_key=r[3],
                message=r[4],
                stack=r[5],
                metadata=orjson.loads(r[6]),
                created_at=r[7],
                resolved=bool(r[8]),
            )
            for r in rows
        ]

    async def resolve_errors(self, ids: list[int]) -> int:
        sql = "UPDATE errors SET resolved = 1 WHERE id = ?"
        return await self._run(lambda conn: self._executemany(conn, sql, [(i,) for i in ids]))

    # -- dead letters ------------------------------------------------------------------

    async def add_dead_letters(self, letters: list[DeadLetter]) -> list[int]:
        now = time.time()
        sql = (
            "INSERT INTO dead_letters (pipeline, sink, stream, key, op, data, meta, error, "
            "error_type, stack, status, attempts, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'dead', ?, ?, ?) RETURNING id"
        )
        rows = [
            (
                d.pipeline,
                d.sink,
                d.stream,
                d.key,
                d.op,
                _dumps(d.data),
                _dumps(d.meta),
                d.error,
                d.error_type,
                d.stack,
                d.attempts,
                d.created_at or now,
                now,
            )
            for d in letters
        ]

        def insert(conn: sqlite3.Connection) -> list[int]:
            with transaction(conn):
                return [conn.execute(sql, row).fetchone()[0] for row in rows]

        return await self._run(insert)

    async def dead_letters(
        self,
        pipeline: str | None = None,
        status: DeadLetterStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeadLetter]:
        sql = (
            f"SELECT {_DL_COLUMNS} FROM dead_letters WHERE (?1 IS NULL OR pipeline = ?1) "
            "AND (?2 IS NULL OR status = ?2) ORDER BY id LIMIT ?3 OFFSET ?4"
        )
        params = (pipeline, status, limit, offset)
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [_dead_letter(r) for r in rows]

    async def dead_letter(self, letter_id: int) -> DeadLetter | None:
        sql = f"SELECT {_DL_COLUMNS} FROM dead_letters WHERE id = ?"
        row = await self._run(lambda conn: conn.execute(sql, (letter_id,)).fetchone())
        return _dead_letter(row) if row else None

    async def count_dead_letters(self, pipeline: str | None = None) -> dict[str, int]:
        sql = (
            "SELECT status, count(*) FROM dead_letters WHERE (?1 IS NULL OR pipeline = ?1) "
            "GROUP BY status"
        )
        rows = await self._run(lambda conn: conn.execute(sql, (pipeline,)).fetchall())
        return {status: count for status, count in rows}

    async def requeue_dead_letters(
        self, ids: list[int] | None = None, pipeline: str | None = None
    ) -> int:
        """Mark dead letters (by id, or all of a pipeline) to be written again."""
        now = time.time()
        if ids is not None:
            sql = (
                "UPDATE dead_letters SET status = 'requeued', updated_at = ? WHERE id = ? "
                "AND status = 'dead'"
            )
            return await self._run(
                lambda conn: self._executemany(conn, sql, [(now, i) for i in ids])
            )
        sql = (
            "UPDATE dead_letters SET status = 'requeued', updated_at = ? "
            "WHERE status = 'dead' AND (?2 IS NULL OR pipeline = ?2)"
        )
        return await self._run(lambda conn: self._write(conn, sql, (now, pipeline)).rowcount)

    async def claim_requeued(self, pipeline: str, limit: int) -> list[DeadLetter]:
        sql = (
            "UPDATE dead_letters SET status = 'replaying', updated_at = ?1 WHERE id IN ("
            "SELECT id FROM dead_letters WHERE pipeline = ?2 AND status = 'requeued' "
            f"ORDER BY id LIMIT ?3) RETURNING {_DL_COLUMNS}"
        )
        params = (time.time(), pipeline, limit)

        def claim(conn: sqlite3.Connection) -> list[Any]:
            with transaction(conn):
                return conn.execute(sql, params).fetchall()

        rows = await self._run(claim)
        return sorted((_dead_letter(r) for r in rows), key=lambda d: d.id or 0)

    async def release_requeued(self, ids: list[int]) -> None:
        sql = "UPDATE dead_letters SET status = 'requeued' WHERE id = ? AND status = 'replaying'"
        await self._run(lambda conn: self._executemany(conn, sql, [(i,) for i in ids]))

    async def recover_replaying(self, pipeline: str) -> int:
        """Requeue what a dead process was replaying (called when the pipeline starts)."""
        sql = (
            "UPDATE dead_letters SET status = 'requeued' WHERE pipeline = ? "
            "AND status = 'replaying'"
        )
        return await self._run(lambda conn: self._write(conn, sql, (pipeline,)).rowcount)

    async def delete_dead_letters(self, ids: list[int]) -> int:
        sql = "DELETE FROM dead_letters WHERE id = ?"
        return await self._run(lambda conn: self._executemany(conn, sql, [(i,) for i in ids]))

    async def purge_dead_letters(
        self, ids: list[int] | None = None, pipeline: str | None = None
    ) -> int:
        if ids is not None:
            return await self.delete_dead_letters(ids)
        sql = "DELETE FROM dead_letters WHERE (?1 IS NULL OR pipeline = ?1)"
        return await self._run(lambda conn: self._write(conn, sql, (pipeline,)).rowcount)


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    # Stores made before runs had details (issue 11's added/updated/removed, sync ids).
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if "details" not in columns:
        conn.execute("ALTER TABLE runs ADD COLUMN details TEXT")


def _details(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    values = orjson.loads(text)
    counts = {k: int(values.get(k) or 0) for k in ("added", "updated", "removed")}
    return {**counts, "key": values.get("key"), "sync_id": values.get("sync_id")}


def _run_details(run: RunRecord) -> str:
    return _dumps(
        {
            "added": run.added,
            "updated": run.updated,
            "removed": run.removed,
            "key": run.key,
            "sync_id": run.sync_id,
        }
    )


def _dead_letter(row: Any) -> DeadLetter:
    names = [f.name for f in fields(DeadLetter)]
    values = dict(zip(_DL_COLUMNS.split(", "), row, strict=True))
    values["data"] = _loads(values["data"])
    values["meta"] = _loads(values["meta"])
    return DeadLetter(**{k: values[k] for k in names if k in values})


__all__ = ["SqliteStateStore"]
