"""The API shows a pipeline's lock as it is (issue 9 point 11): its key and fencing token name
things, they are not secrets, so /status does not mask them."""

from __future__ import annotations

from pathlib import Path

import httpx

from syncworker.api.server import ApiServer
from syncworker.config import parse_config
from syncworker.connectors.sqlite.queue import SqliteQueue
from syncworker.core.engine import Engine
from syncworker.state import state_store_from_url
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually

CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", poll_interval: 50ms}}
    sinks: [{{type: jsonl, path: "{root}/out"}}]
    batch: {{size: 10, max_wait: 20ms}}
    lock: {{url: "{redis}", key: "{key}", ttl: 30s}}
"""


async def test_status_shows_the_lock_key_token_and_holder(
    tmp_path: Path, redis_prefix: str
) -> None:
    key = f"{redis_prefix}whatsapp:syncLock"
    config = parse_config(CONFIG.format(root=tmp_path, redis=REDIS_URL, key=key))
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state, shutdown_timeout_s=5)
    server = ApiServer(engine, port=0)
    engine.services.append(server)
    await engine.start()
    try:
        with SqliteQueue(tmp_path / "queue.db") as queue:
            queue.enqueue([{"id": "m1"}], stream="in")
        async with httpx.AsyncClient(base_url=server.url) as client:

            async def held() -> bool:
                lock = (await client.get("/status")).json()["pipelines"]["chat"]["lock"]
                return bool(lock and lock["held"])

            await eventually(held, "the pipeline to hold its lock")
            lock = (await client.get("/status")).json()["pipelines"]["chat"]["lock"]
    finally:
        await engine.stop()
    assert lock["key"] == key and lock["backend"] == "redis"
    assert isinstance(lock["token"], int) and lock["token"] >= 1
    assert isinstance(lock["holder"], str) and lock["holder"] != "***"
