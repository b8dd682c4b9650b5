"""A webhook receiver that refuses our credentials, through the real `syncworker run`.

401, 403 and 407 mean the receiver refuses the configured headers: retrying cannot fix that,
so the pipeline stops with the reason (naming pipeline, connector and the receiver's answer)
within 5 s, `run` exits non-zero, and the secret header value is printed nowhere.

The receiver is the local fake (tests/fakes/webhook_server.py) on a free port, served by this
test's event loop while the worker's output is read in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncworker.connectors.sqlite.queue import SqliteQueue
from tests.e2e.test_loud_failures import REPORT_S, Worker
from tests.fakes.webhook_server import WebhookServer

pytestmark = pytest.mark.integration

SECRET = "wh-s3cret-header-never-shown"
CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id, poll_interval: 50ms}}
    sinks:
      - {{type: webhook, url: "{url}", headers: {{Authorization: "Bearer {secret}"}}}}
    retry: {{attempts: 3, delay: 200ms, max_delay: 200ms}}
    batch: {{size: 10, max_wait: 20ms}}
"""


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.mark.parametrize("status", [401, 403, 407])
@pytest.mark.timeout(60)
async def test_a_refused_credential_stops_the_pipeline_and_run_exits(
    tmp_path: Path, workers: list[Worker], status: int
) -> None:
    async with WebhookServer() as server:
        server.auth_status = status
        with SqliteQueue(tmp_path / "queue.db") as queue:
            queue.enqueue([{"id": "1", "text": "hello"}], stream="in")
        path = tmp_path / "syncworker.yaml"
        path.write_text(CONFIG.format(root=tmp_path, url=server.url, secret=SECRET))
        worker = Worker(path, str(path))
        workers.append(worker)

        failed = await asyncio.to_thread(worker.wait_for, "pipeline_failed", REPORT_S)
        assert failed["pipeline"] == "chat"
        error = str(failed["error"])
        # The sink is named in the reason (its type, name and redacted address).
        assert f"webhook 'webhook' ({server.url})" in error, error
        assert f"HTTP {status}" in error and "invalid credentials" in error, error
        assert "check headers" in error

        code = await asyncio.to_thread(worker.finish, 30)
        assert code != 0, worker.output()
        # Stopped at the first refusal: not retried (retry allows 3 attempts), not paused.
        assert not [e for e in worker.events() if e.get("event") == "batch_failed"]
        assert not [e for e in worker.events() if e.get("event") == "sink_write_failed"]
        assert len(server.requests) == 1
        assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
        assert SECRET not in worker.output()
    # The record went back to the source untouched, for a run with fixed headers.
    with SqliteQueue(tmp_path / "queue.db") as queue:
        assert queue.backlog() == 1
