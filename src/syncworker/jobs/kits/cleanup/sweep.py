"""The batch loop every row clean-up shares: claim a batch in id order, act on it, commit.

Each batch is its own short transaction: its rows are locked (``FOR UPDATE SKIP LOCKED``)
only while their objects or files are removed and the rows deleted, so no lock outlives one
batch and a cancelled job (a timeout) rolls back at most the batch in hand. A dry run reads
the same batches without locking them and acts on nothing, so it counts exactly what the
real run would do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.rows import TupleRow

from syncworker.connectors.postgres.client import Connection, Pool
from syncworker.jobs.context import JobContext
from syncworker.jobs.kits.cleanup import queries
from syncworker.jobs.kits.cleanup.config import CleanupKitConfig
from syncworker.jobs.kits.storage.base import Storage

Rows = Sequence[TupleRow]
Act = Callable[[Connection, Rows], Awaitable[None]]


@dataclass(slots=True)
class Run:
    """One clean-up job in progress: what it may use and what it has counted."""

    type: str
    config: CleanupKitConfig
    pool: Pool
    storage: Storage | None
    dry_run: bool
    ctx: JobContext | None = None
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def result(self) -> dict[str, Any]:
        return {"type": self.type, "dry_run": self.dry_run, **self.counts, **self.extra}

    async def progress(self) -> None:
        if self.ctx is not None and self.ctx.backend is not None:
            await self.ctx.progress(self.result())

    async def cutoff(self, age_s: float) -> dt.datetime:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(queries.CUTOFF, {"age_s": age_s})).fetchone()
        assert row is not None
        cutoff: dt.datetime = row[0]
        return cutoff


async def sweep(
    run: Run,
    table: str,
    columns: sql.Composable,
    condition: sql.Composable,
    params: dict[str, Any],
    act: Act,
) -> None:
    """Every row of ``table`` matching ``condition``, ``batch_size`` at a time, each batch
    handed to ``act`` inside its transaction (``act`` checks ``run.dry_run`` itself). The
    keyset (``id > last``) moves past rows ``act`` leaves in place, so the loop ends."""
    lock = not run.dry_run
    first = queries.batch_select(table, columns, condition, after=False, lock=lock)
    following = queries.batch_select(table, columns, condition, after=True, lock=lock)
    after: Any = None
    run.counts.setdefault("batches", 0)
    while True:
        query = first if after is None else following
        async with run.pool.connection() as conn, conn.transaction():
            values = {**params, "limit": run.config.batch_size, "after": after}
            rows = await (await conn.execute(query, values)).fetchall()
            if rows:
                await act(conn, rows)
        if not rows:
            return
        after = rows[-1][0]
        run.add("batches")
        await run.progress()
