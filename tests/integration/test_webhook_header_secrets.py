"""Every configured webhook header value is a secret (issue 9 H): when a receiver's error body
echoes the request's headers, none of their values reaches the log, `dlq show` or the state
database, whatever the header is called; only headers marked public are quoted."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncworker.connectors.http.sink_webhook import WebhookSinkConfig
from syncworker.connectors.sqlite.queue import SqliteQueue
from tests.fakes.webhook_server import WebhookServer

# Names outside the secret-word list: none says token, key, secret or password.
SECRETS = {
    "X-Auth": "xauth-5f1c9e77d2",
    "X-Signature": "sig-a81be0c4f9",
    "Api-Auth": "apiauth-3c7d20e5b1",
}
PUBLIC = {"X-Tenant": "tenant-acme-42"}
MARKER = "refuse-me-please"

CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  hook:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id}}
    sinks:
      - type: webhook
        url: "{url}"
        timeout: 5s
        headers:
{headers}
        public_headers: [X-Tenant]
    retry: {{attempts: 1, delay: 10ms}}
    dead_letter: {{store: state}}
"""


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookServer]:
    async with WebhookServer() as server:
        server.reject_marker = MARKER
        server.echo_headers = True
        yield server


async def syncworker(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncworker.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


def state_bytes(root: Path) -> bytes:
    """The state database as stored: the file and its WAL."""
    return b"".join(p.read_bytes() for p in sorted(root.glob("state.db*")))


async def test_echoed_header_values_never_leave_the_sink(
    tmp_path: Path, receiver: WebhookServer
) -> None:
    headers = "\n".join(
        f'          {name}: "{value}"' for name, value in {**SECRETS, **PUBLIC}.items()
    )
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path, url=receiver.url, headers=headers))
    with SqliteQueue(tmp_path / "queue.db") as queue:
        queue.enqueue([{"id": "bad", "text": MARKER}], stream="in")

    _, run_log = await syncworker("--log-level", "debug", "run", "--once", str(config))
    [refused] = [r for r in receiver.requests if r.status == 400]
    for name, value in SECRETS.items():  # the receiver did get them, and echoed them
        assert refused.headers[name.lower()] == value
    _, shown = await syncworker("dlq", "show", "1", "--config", str(config))
    assert "rejected: field 'text' is invalid (echo:" in shown, shown

    stored = await asyncio.to_thread(state_bytes, tmp_path)
    for value in SECRETS.values():
        assert value not in run_log
        assert value not in shown
        assert value.encode() not in stored
    assert PUBLIC["X-Tenant"] in shown  # marked public: quoted as the receiver said it


def test_public_headers_must_be_configured_headers() -> None:
    with pytest.raises(ValueError, match="public_headers: 'X-Tenant' is not one of the"):
        WebhookSinkConfig.model_validate(
            {
                "url": "http://127.0.0.1:9/hook",
                "headers": {"X-Auth": "a"},
                "public_headers": ["X-Tenant"],
            }
        )
    config = WebhookSinkConfig.model_validate(
        {
            "url": "http://127.0.0.1:9/hook",
            "headers": {"x-tenant": "t"},
            "public_headers": ["X-Tenant"],
        }
    )
    assert config.public_headers == ["X-Tenant"]
