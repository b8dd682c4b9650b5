"""The PostgreSQL connection pools (``connectors/postgres/client.create_pool``): a connection
used a moment ago is handed out without a check (one round trip less per checkout), one idle
longer is checked first, so a connection the server dropped meanwhile is replaced, not used."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from syncworker.connectors.postgres import client
from syncworker.connectors.postgres.client import ConnectSettings, create_pool, open_pool

pytestmark = pytest.mark.integration


def settings(url: str) -> ConnectSettings:
    return ConnectSettings(url=url, connect_timeout_s=5.0, statement_timeout_s=30.0)


async def backend_pid(pool: Any) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pool's connection checks."""
    done: list[int] = []
    real = AsyncConnectionPool.check_connection

    async def counted(conn: Any) -> None:
        done.append(1)
        await real(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))
    return done


async def test_a_connection_used_a_moment_ago_is_handed_out_unchecked(
    pg_url: str, checks: list[int]
) -> None:
    pool = create_pool(settings(pg_url), min_size=1, max_size=1, name="test-fresh")
    await open_pool(pool, 5.0, "test")
    try:
        first = await backend_pid(pool)
        checked = len(checks)
        for _ in range(5):
            assert await backend_pid(pool) == first
    finally:
        await pool.close()
    assert len(checks) == checked  # five checkouts within the window: no check


async def test_a_connection_idle_past_the_window_is_checked_and_a_dropped_one_replaced(
    pg_url: str, checks: list[int]
) -> None:
    pool = create_pool(settings(pg_url), min_size=1, max_size=1, name="test-idle")
    await open_pool(pool, 5.0, "test")
    try:
        first = await backend_pid(pool)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # As if it had been idle past the window (no sleep: its last checkout is moved back).
        for conn in list(client._handed_out_at):
            client._handed_out_at[conn] = time.monotonic() - client.CHECK_BYPASS_S - 1.0
        checked = len(checks)
        second = await backend_pid(pool)  # no error: the check found it dead
    finally:
        await pool.close()
    assert second != first
    assert len(checks) > checked
