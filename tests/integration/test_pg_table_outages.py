"""``pg_table`` through the failures the seed fears: a worker killed (kill -9) in the middle
of its snapshot, the listening connection terminated while a long transaction commits, and
the source server restarting during a stream of updates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncworker.state import SqliteStateStore
from syncworker.state.base import StateStore
from tests.conformance.conftest import Logs, logs
from tests.conformance.harness import PYTHON, REPO, child_env
from tests.conformance.services import PrivatePostgres, free_port
from tests.integration.conftest import PG_ADMIN_URL
from tests.integration.pg_table_support import (
    USER_COLUMNS,
    differences,
    fast_settings,
    setup_users,
    sql,
    target_url,
    user_rows,
    users_pipeline,
)
from tests.waiting import eventually

__all__ = ["logs", "target_url"]

pytestmark = pytest.mark.integration

PRIVATE_PORTS = range(17200, 17300)  # this suite's own range (tests/conformance uses 175xx)


def sync_config(path: Path, source_url: str, target: str, *, slow: bool) -> Path:
    processors = '[{type: python, function: "tests.conformance.child:slow"}]' if slow else "[]"
    path.write_text(
        textwrap.dedent(
            f"""\
            state: sqlite:///{path.parent}/state.db
            pipelines:
              users:
                source: {{type: pg_table, url: "{source_url}", table: users,
                          snapshot_page_rows: 50, poll_interval: 50ms}}
                processors: {processors}
                sinks:
                  - type: postgres
                    url: "{target}"
                    table: users
                    key_column: id
                    columns: {{name: name, status: status, score: score,
                               deleted_at: deleted_at, updated_at: updated_at}}
                batch: {{size: 50, max_wait: 10ms}}
            """
        )
    )
    return path


async def snapshot_checkpoint(state_path: Path) -> dict[str, Any] | None:
    store = SqliteStateStore(state_path)
    await store.open()
    try:
        text = await store.get_checkpoint("users", "snapshot")
    finally:
        await store.close()
    return json.loads(text) if text else None


async def test_kill_9_during_the_snapshot_resumes_after_the_acked_key(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    total = 2_000
    await setup_users(pg_url, target_url, rows=total)
    slow = sync_config(tmp_path / "slow.yaml", pg_url, target_url, slow=True)
    log_file = (tmp_path / "run.log").open("wb")
    command = [PYTHON, "-m", "syncworker.cli", "--log-format", "json", "run", str(slow)]
    child = await asyncio.create_subprocess_exec(
        *command, cwd=REPO, env=child_env(), stdout=log_file, stderr=subprocess.STDOUT
    )
    try:

        async def some_pages_acked() -> dict[str, Any] | None:
            assert child.returncode is None, (tmp_path / "run.log").read_text()[-3000:]
            saved = await snapshot_checkpoint(tmp_path / "state.db")
            return saved if saved and saved["rows"] >= 200 else None

        await eventually(some_pages_acked, "a few snapshot pages acked", timeout_s=60)
    finally:
        child.send_signal(signal.SIGKILL)  # no ack, no close, no shutdown
        await child.wait()
        log_file.close()
    saved = await snapshot_checkpoint(tmp_path / "state.db")
    assert saved is not None and not saved["done"] and 0 < saved["rows"] < total
    assert saved["last_key"] == str(saved["rows"])  # the contiguous acked prefix, by key

    fast = sync_config(tmp_path / "fast.yaml", pg_url, target_url, slow=False)
    again = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "syncworker.cli", "run", "--once", str(fast)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    try:
        (resumed,) = await store.runs("users", limit=1)
    finally:
        await store.close()
    assert resumed.processed == total - saved["rows"] < total  # fewer re-read than total
    assert "pg_table_snapshot_resumed" in again.stderr + again.stdout
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == []


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield conn


async def test_a_long_transaction_committed_while_the_listener_is_down_arrives(
    pg_url: str, target_url: str, state: StateStore, logs: Logs
) -> None:
    await setup_users(pg_url, target_url, rows=5)
    database = pg_url.rsplit("/", 1)[1]
    sync = users_pipeline(
        pg_url,
        target_url,
        state,
        settings=fast_settings(idle_wait_s=0.2),
        lookback={"interval": "1s", "window_multiplier": 1},
        reconnect={"max_attempts": 3, "initial_delay": "50ms", "max_delay": "200ms"},
    )
    await sync.start()
    async with connection(PG_ADMIN_URL) as admin, connection(pg_url) as long_tx:
        try:
            await eventually(lambda: _rows(target_url, 5), "the snapshot in the target")
            # A transaction opened now, whose row says it changed an hour ago: older than
            # any lookback window, the gap of updated_at tools.
            await long_tx.execute("BEGIN")
            await long_tx.execute(
                "UPDATE users SET name = 'long', updated_at = now() - interval '1 hour'"
                " WHERE id = 2"
            )
            # The listener goes and cannot come back (the database refuses connections).
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            pid = await sync.source.listener_pid()  # type: ignore[attr-defined]
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await eventually(lambda: _listener(sync)["gave_up"], "the listener giving up")
            assert not _listener(sync)["connected"]
            await long_tx.execute("COMMIT")
            await eventually(lambda: _name(target_url, 2, "long"), "the long transaction's row")
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await eventually(lambda: _listener(sync)["connected"], "the listener back")
            assert _listener(sync)["reconnects"] == 1 and not _listener(sync)["gave_up"]
            await eventually(lambda: _lookback_reason(logs) == "reconnect", "a lookback")
        finally:
            with contextlib.suppress(psycopg.Error):
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await sync.stop()
    events = [e["event"] for e in logs.events()]
    for name in ("pg_table_listen_lost", "pg_table_reconnect_failed", "pg_table_reconnected"):
        assert name in events, name
    assert events.count("pg_table_listener_gave_up") == 1
    errors = [e for e in await state.errors("users") if e.type == "REALTIME_SYNC_CONNECTION_ERROR"]
    assert len(errors) >= 4  # the loss, then each failed attempt
    assert any(e.message.startswith("listening connection lost: ") for e in errors)
    assert any(e.message.startswith("reconnect attempt 3 failed: ") for e in errors)
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == []


async def test_the_source_server_restarting_during_updates_loses_nothing(
    target_url: str, state: StateStore, logs: Logs
) -> None:
    server = PrivatePostgres()
    server.port = free_port(PRIVATE_PORTS)
    await asyncio.to_thread(server.init)
    await asyncio.to_thread(server.start)
    try:
        source_url = await asyncio.to_thread(server.create_database, "h2_restart")
        await setup_users(source_url, target_url, rows=20)
        sync = users_pipeline(
            source_url,
            target_url,
            state,
            connect_timeout="2s",
            reconnect={"initial_delay": "50ms", "max_delay": "300ms"},
        )
        await sync.start()
        try:
            await eventually(lambda: _rows(target_url, 20), "the snapshot in the target")
            for n in range(1, 21):
                await sql(source_url, "UPDATE users SET score = %s WHERE id = %s", (n, n))
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            for n in range(1, 21):
                await sql(source_url, "UPDATE users SET name = %s WHERE id = %s", (f"v{n}", n))
            await sql(source_url, "DELETE FROM users WHERE id = 20")

            async def equal() -> bool:
                found = await differences(source_url, target_url, "users", "id", USER_COLUMNS)
                return not found

            await eventually(equal, "the target equal to the source", timeout_s=60)
            await eventually(lambda: _listener(sync)["reconnects"] >= 1, "the reconnect")
        finally:
            await sync.stop()
    finally:
        await asyncio.to_thread(server.destroy)
    rows = await user_rows(target_url)
    assert len(rows) == 19 and rows[5] == ("v5", "active", 5)
    assert "pg_table_reconnected" in [e["event"] for e in logs.events()]


def _listener(sync: Any) -> dict[str, Any]:
    status: dict[str, Any] = sync.status()["source_status"]["listener"]
    return status


async def _rows(url: str, expected: int) -> bool:
    return len(await user_rows(url)) == expected


async def _name(url: str, key: int, name: str) -> bool:
    rows = await user_rows(url)
    return key in rows and rows[key][0] == name


def _lookback_reason(logs: Logs) -> str | None:
    found = [e.get("reason") for e in logs.events() if e["event"] == "pg_table_lookback"]
    return found[-1] if found else None
