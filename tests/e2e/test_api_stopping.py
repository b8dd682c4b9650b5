"""A sync or start asked of an engine that is stopping answers 503 "the engine is stopping"
(a mode the source cannot do stays 501 while the engine runs: test_api.py).

A real engine is taken through its own stop(): it closes its pipelines for new runs, then
stops its services one by one, the API last. A service registered after the API holds that
sequence (its stop waits on an event), so the API is still serving while the engine stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from syncworker.api.server import ApiServer
from syncworker.core.engine import Engine
from tests.e2e.conftest import TOKEN, start_api
from tests.waiting import eventually


class HeldService:
    """A service whose stop() waits until released: the engine stays in its stopping phase."""

    name = "held"

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopping.set()
        await self.release.wait()


@dataclass
class StoppingEngine:
    engine: Engine
    server: ApiServer
    client: httpx.AsyncClient


@pytest.fixture
async def stopping(tmp_path: Path) -> AsyncIterator[StoppingEngine]:
    engine, server = await start_api(tmp_path)
    held = HeldService()
    engine.services.append(held)  # stopped before the API: the API answers meanwhile
    stop = asyncio.create_task(engine.stop(), name="test:engine-stop")
    try:
        await eventually(held.stopping.is_set, "the engine to reach its services' stop")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            yield StoppingEngine(engine, server, client)
    finally:
        held.release.set()
        await stop


@pytest.mark.parametrize(
    "path",
    [
        "/pipelines/chat/sync",
        "/pipelines/idle/sync",
        "/pipelines/chat/start",
        "/api/sync-worker/incremental-sync",
        "/api/sync-worker/start",
    ],
)
async def test_a_sync_or_start_while_stopping_is_503(stopping: StoppingEngine, path: str) -> None:
    assert stopping.engine.stopping
    answer = await stopping.client.post(path)
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "the engine is stopping"
    assert body["detail"]["pipeline"] in ("chat", "idle")
    assert "retry-after" not in answer.headers


async def test_an_asynchronous_sync_while_stopping_is_503(stopping: StoppingEngine) -> None:
    answer = await stopping.client.post("/pipelines/chat/sync", json={"wait": False})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "the engine is stopping"
