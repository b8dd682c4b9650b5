"""The default state store: one SQLite file, shared safely by the engine and the CLI (WAL)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import orjson

from syncworker.errors import ConnectionFailed
from syncworker.state.base import DeadLetter, DeadLetterStatus, ErrorRecord, RunRecord

T = TypeVar("T")
_SCHEMA = resources.files("syncworker.state").joinpath("schema.sql").read_text()
_DL_COLUMNS = (
    "id, pipeline, sink, stream, key, op, data, meta, error, error_type, stack, status, "
    "attempts, created_at, updated_at"
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class SqliteStateStore:
    """State in a SQLite file. Calls run on one dedicated thread that owns the connection, so a
    multi-statement change is one hop off the event loop and never interleaves with another."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite")
        try:
            await self._run(self._connect)
        except sqlite3.Error as exc:
            raise ConnectionFailed(f"state store {str(self.path)!r}: cannot open: {exc}") from exc

    def _connect(self, _: None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._run(lambda _: self._conn.close() if self._conn else None)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[[Any], T]) -> T:
        if self._executor is None:
            raise ConnectionFailed(f"state store {str(self.path)!r} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, None)

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "state store used before open()"
        return self._conn

    def _write(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        conn = self._db()
        with conn:
            return conn.execute(sql, params)

    # -- checkpoints -------------------------------------------------------------------

    async def get_checkpoint(self, pipeline: str, name: str) -> str | None:
        sql = "SELECT value FROM checkpoints WHERE pipeline = ? AND name = ?"
        row = await self._run(lambda _: self._db().execute(sql, (pipeline, name)).fetchone())
        return row[0] if row else None

    async def set_checkpoint(self, pipeline: str, name: str, value: str) -> None:
        sql = (
            "INSERT INTO checkpoints (pipeline, name, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at"
        )
        await self._run(lambda _: self._write(sql, (pipeline, name, value, time.time())))

    # -- runs --------------------------------------------------------------------------

    async def record_run(self, run: RunRecord) -> int:
        sql = (
            "INSERT INTO runs (pipeline, mode, started_at, finished_at, duration_ms, status, "
            "processed, written, dead_lettered, filtered, streams, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        )
        cursor = await self._run(lambda _: self._write(sql, params))
        return int(cursor.lastrowid or 0)

    async def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]:
        sql = (
            "SELECT id, pipeline, mode, started_at, finished_at, status, processed, written, "
            "dead_lettered, filtered, streams, error FROM runs "
            "WHERE (?1 IS NULL OR pipeline = ?1) ORDER BY id DESC LIMIT ?2"
        )
        rows = await self._run(lambda _: self._db().execute(sql, (pipeline, limit)).fetchall())
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
        cursor = await self._run(lambda _: self._write(sql, params))
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
        rows = await self._run(lambda _: self._db().execute(sql, params).fetchall())
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
        return await self._run(lambda _: self._executemany(sql, [(i,) for i in ids]))

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        conn = self._db()
        with conn:
            return conn.executemany(sql, rows).rowcount

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

        def insert(_: None) -> list[int]:
            conn = self._db()
            with conn:
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
        rows = await self._run(lambda _: self._db().execute(sql, params).fetchall())
        return [_dead_letter(r) for r in rows]

    async def dead_letter(self, letter_id: int) -> DeadLetter | None:
        sql = f"SELECT {_DL_COLUMNS} FROM dead_letters WHERE id = ?"
        row = await self._run(lambda _: self._db().execute(sql, (letter_id,)).fetchone())
        return _dead_letter(row) if row else None

    async def count_dead_letters(self, pipeline: str | None = None) -> dict[str, int]:
        sql = (
            "SELECT status, count(*) FROM dead_letters WHERE (?1 IS NULL OR pipeline = ?1) "
            "GROUP BY status"
        )
        rows = await self._run(lambda _: self._db().execute(sql, (pipeline,)).fetchall())
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
            return await self._run(lambda _: self._executemany(sql, [(now, i) for i in ids]))
        sql = (
            "UPDATE dead_letters SET status = 'requeued', updated_at = ? "
            "WHERE status = 'dead' AND (?2 IS NULL OR pipeline = ?2)"
        )
        return await self._run(lambda _: self._write(sql, (now, pipeline)).rowcount)

    async def claim_requeued(self, pipeline: str, limit: int) -> list[DeadLetter]:
        sql = (
            "UPDATE dead_letters SET status = 'replaying', updated_at = ?1 WHERE id IN ("
            "SELECT id FROM dead_letters WHERE pipeline = ?2 AND status = 'requeued' "
            f"ORDER BY id LIMIT ?3) RETURNING {_DL_COLUMNS}"
        )
        params = (time.time(), pipeline, limit)

        def claim(_: None) -> list[Any]:
            conn = self._db()
            with conn:
                return conn.execute(sql, params).fetchall()

        rows = await self._run(claim)
        return sorted((_dead_letter(r) for r in rows), key=lambda d: d.id or 0)

    async def release_requeued(self, ids: list[int]) -> None:
        sql = "UPDATE dead_letters SET status = 'requeued' WHERE id = ? AND status = 'replaying'"
        await self._run(lambda _: self._executemany(sql, [(i,) for i in ids]))

    async def recover_replaying(self, pipeline: str) -> int:
        """Requeue what a dead process was replaying (called when the pipeline starts)."""
        sql = (
            "UPDATE dead_letters SET status = 'requeued' WHERE pipeline = ? "
            "AND status = 'replaying'"
        )
        return await self._run(lambda _: self._write(sql, (pipeline,)).rowcount)

    async def delete_dead_letters(self, ids: list[int]) -> int:
        sql = "DELETE FROM dead_letters WHERE id = ?"
        return await self._run(lambda _: self._executemany(sql, [(i,) for i in ids]))

    async def purge_dead_letters(
        self, ids: list[int] | None = None, pipeline: str | None = None
    ) -> int:
        if ids is not None:
            return await self.delete_dead_letters(ids)
        sql = "DELETE FROM dead_letters WHERE (?1 IS NULL OR pipeline = ?1)"
        return await self._run(lambda _: self._write(sql, (pipeline,)).rowcount)


def _dead_letter(row: Any) -> DeadLetter:
    names = [f.name for f in fields(DeadLetter)]
    values = dict(zip(_DL_COLUMNS.split(", "), row, strict=True))
    values["data"] = orjson.loads(values["data"])
    values["meta"] = orjson.loads(values["meta"])
    return DeadLetter(**{k: values[k] for k in names if k in values})


__all__ = ["SqliteStateStore"]
