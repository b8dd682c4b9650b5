"""Records a source keeps as failed (``dead_letter: {store: source}``, pg_outbox rows with
status 'failed') count as what they are (issue 9 point 9): in /status, health, /metrics and
/history, beside (not as) the state store's dead letters."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncworker.api.server import ApiServer
from syncworker.config import parse_config
from syncworker.connectors.postgres import outbox
from syncworker.core.engine import Engine
from syncworker.state import state_store_from_url
from tests.waiting import eventually

pytestmark = pytest.mark.integration

QUEUE = "kept_sync_queue"
CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  outbox:
    source:
      type: pg_outbox
      url: "{url}"
      queue_table: {queue}
      tables: [products]
      max_retries: 1
      poll_interval: 50ms
    sinks:
      - {{type: sqlite, path: "{root}/sink.db", table: products, columns: {{name: name}}}}
    batch: {{size: 50, max_wait: 20ms}}
    retry: {{attempts: 1, delay: 10ms}}
    dead_letter: {{store: source}}
"""


async def sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement)
        return await cursor.fetchall() if cursor.description else []


@pytest.fixture
async def api(pg_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    await sql(pg_url, "CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL)")
    await outbox.install(pg_url, QUEUE, ["products"])
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        conn.execute(
            "CREATE TABLE products (key TEXT PRIMARY KEY, name TEXT CHECK (length(name) <= 10))"
        )
    config = parse_config(CONFIG.format(root=tmp_path, url=pg_url, queue=QUEUE))
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state, shutdown_timeout_s=5)
    server = ApiServer(engine, port=0)
    engine.services.append(server)
    await engine.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        await engine.stop()


async def test_failed_outbox_rows_show_in_status_health_metrics_and_history(
    api: httpx.AsyncClient, pg_url: str
) -> None:
    await sql(
        pg_url,
        "INSERT INTO products VALUES (1, 'ok'), (2, 'much too long a name'), (3, 'fine'),"
        " (4, 'also far too long'), (5, 'good')",
    )

    async def failed_rows() -> bool:
        rows = await sql(pg_url, f"SELECT count(*) FROM {QUEUE} WHERE status = 'failed'")
        return rows[0][0] == 2

    await eventually(failed_rows, "two outbox rows failed")

    async def reported() -> dict[str, Any] | None:
        chat = (await api.get("/status")).json()["pipelines"]["outbox"]
        return chat if chat["source_failed"] == 2 and chat["totals"]["processed"] == 5 else None

    # the failed count is read at most every 5 s (BACKLOG_TTL_S), so this may take a moment
    status = await eventually(reported, "status to report the two failed rows")
    assert status["totals"]["dead_lettered"] == 0  # none went to the state store
    assert status["totals"]["kept_by_source"] == 2
    assert status["oldest_waiting_s"] is None  # nothing pending any more
    health = status["health"]
    check = next(c for c in health["checks"] if c["name"] == "source_failed")
    assert health["status"] == "DEGRADED" and check["status"] == "warn"
    assert check["detail"].startswith("2 records failed in source")
    assert any("syncworker outbox retry-failed" in r for r in health["recommendations"])
    assert status["last_error"] is not None  # the failures are in the error log

    text = (await api.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    source_failed = (("pipeline", "outbox"), ("queue", "source"), ("state", "failed"))
    assert samples[("syncworker_queue_depth", source_failed)] == 2
    dead = (("pipeline", "outbox"), ("queue", "dead_letters"), ("state", "dead"))
    assert samples[("syncworker_queue_depth", dead)] == 0
    kept = [v for (n, _), v in samples.items() if n == "syncworker_records_kept_by_source_total"]
    assert sum(kept) == 2
    dead_lettered = [
        v for (n, _), v in samples.items() if n == "syncworker_records_dead_lettered_total"
    ]
    assert sum(dead_lettered) == 0
    assert samples[("syncworker_source_oldest_waiting_seconds", (("pipeline", "outbox"),))] == 0

    history = (await api.get("/history")).json()["pipelines"]["outbox"]
    assert history["sinks"]["sqlite"] == {"written": 3, "refused": 2}
    assert sum(p["records"] for p in history["points"]) == 5

    # The CLI's engine view shows them in their own column, not as dead letters. The command
    # runs as a child process while this loop keeps serving the API it asks.
    env = {k: v for k, v in os.environ.items() if k != "SYNCWORKER_API_TOKEN"}
    env["COLUMNS"] = "250"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncworker.cli",
        "status",
        "--api",
        str(api.base_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, err.decode()
    table = out.decode()
    assert "failed in source" in table
    [row] = [line for line in table.splitlines() if line.startswith("│ outbox")]
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[5] == "0" and cells[-1] == "2", table  # dead letters 0, failed in source 2


async def test_the_oldest_waiting_row_has_an_age(api: httpx.AsyncClient, pg_url: str) -> None:
    # A change due in an hour (a retry's backoff): it waits, and its age grows.
    await sql(
        pg_url,
        f"INSERT INTO {QUEUE} (table_name, record_id, operation, next_attempt_at, created_at)"
        " VALUES ('products', '10', 'INSERT', now() + interval '1 hour',"
        " now() - interval '90 seconds')",
    )

    async def aged() -> float | None:
        age = (await api.get("/status")).json()["pipelines"]["outbox"]["oldest_waiting_s"]
        return age if age is not None and age >= 90 else None

    assert await eventually(aged, "the oldest waiting row's age") < 600
