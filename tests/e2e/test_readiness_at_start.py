"""What the API says while the engine starts: it listens at once, and /ready tells the truth.

``Engine.start()`` starts the API once every pipeline's task is created, not once every
pipeline has opened its connections: an operator (or an orchestrator's probe) can read
/health, /status and the reason /ready is not 200 yet while a slow dependency connects. So
/ready answers 503 "pipeline 'x' is starting" until the pipeline runs, then 200. A test that
reads /ready right after start must wait for it (tests/waiting.py), as a probe does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from syncworker.api.server import ApiServer
from syncworker.core import Pipeline, PipelineSettings, Schedule
from syncworker.core.engine import Engine
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySink, MemorySource
from tests.waiting import eventually


class GatedSource(MemorySource):
    """A source whose open() waits until the test lets it: a dependency slow to connect."""

    def __init__(self, queue: MemoryQueue) -> None:
        super().__init__(queue, name="gated")
        self.gate = asyncio.Event()

    async def open(self) -> None:
        await self.gate.wait()
        await super().open()


async def test_ready_says_starting_until_the_pipeline_has_opened(tmp_path: Path) -> None:
    queue = MemoryQueue()
    queue.put_many(3)
    source, sink = GatedSource(queue), MemorySink()
    settings = PipelineSettings(batch_size=10, max_wait_s=0.01, schedule=Schedule.stream())
    state = SqliteStateStore(tmp_path / "state.db")
    engine = Engine([Pipeline("slow", source, [sink], settings=settings)], state)
    server = ApiServer(engine, host="127.0.0.1", port=0, token="t")
    engine.services.append(server)
    await engine.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/health")).status_code == 200  # alive while starting
            starting = await client.get("/ready")
            assert starting.status_code == 503
            assert starting.json() == {"ready": False, "reasons": ["pipeline 'slow' is starting"]}
            status = await client.get("/status", headers={"Authorization": "Bearer t"})
            assert status.json()["pipelines"]["slow"]["state"] == "starting"

            source.gate.set()
            await eventually(lambda: _ready(client), "/ready to answer 200")
            assert (await client.get("/ready")).json() == {"ready": True, "reasons": []}
            await eventually(lambda: len(sink.rows) == 3, "the three records to be written")
    finally:
        source.gate.set()
        await engine.stop()


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/ready")).status_code == 200
