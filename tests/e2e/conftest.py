"""A real engine with its control API on a free loopback port, for API and browser tests."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from syncworker.api.server import ApiServer
from syncworker.config import parse_config
from syncworker.connectors.sqlite.queue import SqliteQueue
from syncworker.core.engine import Engine
from syncworker.state import state_store_from_url
from tests.waiting import eventually

TOKEN = "t0ken-for-tests"
CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id, poll_interval: 50ms}}
    sinks:
      - {{type: jsonl, path: "{root}/out"}}
      - {{type: sqlite, path: "{root}/sink.db", table: messages, columns: {{text: text}}}}
    batch: {{size: 100, max_wait: 20ms}}
    retry: {{attempts: 2, delay: 10ms}}
  idle:
    source: {{type: sqlite_queue, path: "{root}/idle.db"}}
    sinks: [{{type: jsonl, path: "{root}/idle-out"}}]
    schedule: {{manual: true}}
"""


@dataclass
class RunningApi:
    engine: Engine
    server: ApiServer
    client: httpx.AsyncClient
    root: Path

    def enqueue(self, *messages: str | dict[str, object], stream: str = "in") -> None:
        with SqliteQueue(self.root / "queue.db") as queue:
            queue.enqueue(list(messages), stream=stream)

    def sink_rows(self) -> int:
        with sqlite3.connect(self.root / "sink.db") as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])


async def start_api(
    root: Path, token: str | None = TOKEN, host: str = "127.0.0.1"
) -> tuple[Engine, ApiServer]:
    with sqlite3.connect(root / "sink.db") as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS messages (key TEXT PRIMARY KEY, "
            "text TEXT CHECK (length(text) <= 20))"
        )
    config = parse_config(CONFIG.format(root=root))
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state, shutdown_timeout_s=5)
    server = ApiServer(engine, host=host, port=0, token=token)
    engine.services.append(server)
    await engine.start()
    # start() returns once the API listens; the pipelines open in the background, and /ready
    # says 503 "starting" until they run. Tests begin from a ready engine, as a probe would.
    try:
        await eventually(lambda: _ready(server.url), "the engine to answer /ready with 200")
    except BaseException:
        await engine.stop()
        raise
    return engine, server


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(base_url=url) as anonymous:
        return (await anonymous.get("/ready")).status_code == 200


# uvicorn closes a keep-alive connection idle for 5 s (timeout_keep_alive): a client keeping
# one idle as long may send on it just as it closes ("Server disconnected without sending a
# response", seen in CI after a test spent 5 s in the browser). Dropped sooner here.
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2.0)


def api_client(url: str) -> httpx.AsyncClient:
    """A client of the control API at ``url`` with the test token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=CLIENT_LIMITS)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    engine, server = await start_api(tmp_path)
    async with api_client(server.url) as client:
        yield RunningApi(engine, server, client, tmp_path)
    await engine.stop()
