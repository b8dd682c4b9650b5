"""The database-wide jobs: VACUUM (ANALYZE), the user_stats aggregate, the health check."""

from __future__ import annotations

import dataclasses

from syncworker.connectors.postgres.client import ConnectSettings, connect
from syncworker.jobs.kits.cleanup import queries
from syncworker.jobs.kits.cleanup.sweep import Run


async def maintenance(run: Run, settings: ConnectSettings) -> None:
    """VACUUM cannot run inside a transaction: a connection of its own, in autocommit (as
    every connection of ours is) and without the batches' statement timeout."""
    vacuumed: list[str] = []
    missing: list[str] = []
    unlimited = dataclasses.replace(settings, statement_timeout_s=0.0)
    conn = await connect(unlimited, "cleanup maintenance")
    async with conn:
        for table in run.config.maintenance_tables:
            found = await (await conn.execute(queries.TABLE_EXISTS, {"name": table})).fetchone()
            if found is None:
                missing.append(table)
                continue
            if not run.dry_run:
                await conn.execute(queries.vacuum(table))
            vacuumed.append(table)
            await run.progress()
    run.extra.update(tables_vacuumed=vacuumed, tables_missing=missing)


async def user_stats(run: Run) -> None:
    """One transaction: the counts of every user upserted, and users with nothing left to
    count set to zeros, so a reader never sees half of a run."""
    table = run.config.user_stats_table
    async with run.pool.connection() as conn, conn.transaction():
        exists = await (await conn.execute(queries.TABLE_EXISTS, {"name": table})).fetchone()
        if run.dry_run:
            users = await (await conn.execute(queries.count_users())).fetchone()
            stale = 0
            if exists is not None:
                row = await (await conn.execute(queries.count_stale_users(table))).fetchone()
                stale = row[0] if row is not None else 0
            assert users is not None
            run.counts.update(users_upserted=users[0], users_zeroed=stale)
            return
        if exists is None:
            await conn.execute(queries.create_user_stats(table))
        now = await (await conn.execute(queries.NOW)).fetchone()
        assert now is not None
        params = {"run_at": now[0]}
        upserted = await conn.execute(queries.upsert_user_stats(table), params)
        zeroed = await conn.execute(queries.zero_stale_users(table), params)
        run.counts.update(users_upserted=upserted.rowcount, users_zeroed=zeroed.rowcount)


async def health(run: Run) -> None:
    """SELECT 1 on the database and one listing call on the store; ``checked`` names both."""
    async with run.pool.connection() as conn:
        await conn.execute(queries.HEALTH)
    checked = ["database"]
    if run.storage is not None:
        async for _ in run.storage.list(run.config.orphan_prefixes[0]):
            break
        checked.append("storage")
    run.extra.update(healthy=True, checked=checked)
