"""The webhook sink against a real local HTTP server (tests/fakes/webhook_server.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncworker.config import parse_config
from syncworker.connectors.http.sink_webhook import WebhookSink, WebhookSinkConfig
from syncworker.connectors.retry_after import retry_after_s
from syncworker.coord import FENCING_TOKEN
from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy, registry
from syncworker.core.policies import BreakerPolicy
from syncworker.errors import (
    ConfigError,
    ConfigRefused,
    ConnectionFailed,
    PermanentError,
    RetryableError,
    is_transient,
    stops_pipeline,
)
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySource
from tests.fakes.webhook_server import WebhookServer

SinkFactory = Callable[..., Awaitable[WebhookSink]]
TOKEN = "s3cr3t-bearer-token"


@pytest.fixture
async def server() -> AsyncIterator[WebhookServer]:
    async with WebhookServer() as running:
        yield running


@pytest.fixture
async def make_sink(server: WebhookServer) -> AsyncIterator[SinkFactory]:
    """Opened sinks pointed at ``server``; all closed after the test."""
    opened: list[WebhookSink] = []

    async def make(**config: Any) -> WebhookSink:
        sink = WebhookSink({"type": "webhook", "url": server.url, **config}, name="webhook")
        await sink.open()
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        await sink.close()


def rec(key: str, stream: str = "in", op: str = "upsert", **data: Any) -> Record:
    return Record(key=key, data={"id": key, **data}, stream=stream, op=op)  # type: ignore[arg-type]


# -- bodies -------------------------------------------------------------------------------


async def test_seed_body_is_one_post_per_stream(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    sink = await make_sink()
    records = [
        rec("1", "in", text="hi"),
        rec("2", "out", text="yo"),
        rec("3", "in", text="bye"),
        rec("4", "out", op="delete"),
    ]
    result = await sink.write(records)
    assert result.failed == {}
    assert [r.method for r in server.requests] == ["POST", "POST"]
    assert {r.path for r in server.requests} == {"/hook"}
    first, second = (r.json for r in server.requests)
    assert set(first) == {"messages", "queueType", "timestamp", "count"}
    assert first["queueType"] == "in" and first["count"] == 2
    assert first["messages"] == [{"id": "1", "text": "hi"}, {"id": "3", "text": "bye"}]
    assert second["queueType"] == "out" and second["count"] == 2
    assert second["messages"] == [{"id": "2", "text": "yo"}, {"key": "4", "deleted": True}]
    # JavaScript's toISOString, as the seed sent it
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["timestamp"])
    sent_at = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert sent_at.tzinfo == UTC
    assert server.requests[0].headers["content-type"] == "application/json"


async def test_records_body_is_one_post_with_key_op_stream_data(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    sink = await make_sink(body="records")
    await sink.write([rec("1", "in", n=1), rec("2", "out", op="delete")])
    assert len(server.requests) == 1
    assert server.requests[0].json == {
        "records": [
            {"key": "1", "op": "upsert", "stream": "in", "data": {"id": "1", "n": 1}},
            {"key": "2", "op": "delete", "stream": "out", "data": {"id": "2"}},
        ],
        "count": 2,
    }


async def test_template_body_fills_placeholders_structurally(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    template = {
        "event": "sync",
        "payload": {"items": "$messages", "queue": "$stream", "tags": ["$count", "x"]},
        "at": "$timestamp",
        "price": "$5",
        "text": "not $stream inside",
    }
    sink = await make_sink(body="template", template=template)
    await sink.write([rec("1", "in"), rec("2", "in", op="delete")])
    body = server.requests[0].json
    assert body["payload"] == {
        "items": [{"id": "1"}, {"key": "2", "deleted": True}],
        "queue": "in",
        "tags": [2, "x"],
    }
    assert body["event"] == "sync" and body["price"] == "$5"
    assert body["text"] == "not $stream inside"
    assert body["at"].endswith("Z")


# -- headers ------------------------------------------------------------------------------


async def test_idempotency_key_is_stable_for_same_content_only(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    sink = await make_sink()
    batch = [rec("1", n=1), rec("2", n=2)]
    await sink.write(batch)
    await sink.write([rec("1", n=1), rec("2", n=2)])
    await sink.write([rec("1", n=1), rec("2", n=3)])
    await sink.write([rec("1", n=1), rec("2", n=2, op="delete")])
    await sink.write([rec("1", "other", n=1), rec("2", "other", n=2)])
    keys = [r.idempotency_key for r in server.requests]
    assert all(k is not None and re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
    assert keys[0] == keys[1]
    assert len(set(keys[1:])) == 4
    assert len(server.deliveries) == 4 and server.requests[1].duplicate


async def test_signature_verifies_with_the_secret(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    sink = await make_sink(signing_secret="whsec_test")
    await sink.write([rec("1", text="héllo")])
    request = server.requests[0]
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", request.headers["x-syncworker-signature"])
    assert match is not None
    timestamp, signature = match.groups()

    def sign(secret: bytes) -> str:
        return hmac.new(secret, f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()

    assert hmac.compare_digest(signature, sign(b"whsec_test"))
    assert not hmac.compare_digest(signature, sign(b"another"))


async def test_fencing_token_header_while_a_lock_is_held(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    sink = await make_sink()
    await sink.write([rec("1")])
    held = FENCING_TOKEN.set(42)
    try:
        await sink.write([rec("2")])
    finally:
        FENCING_TOKEN.reset(held)
    assert "x-fencing-token" not in server.requests[0].headers
    assert server.requests[1].headers["x-fencing-token"] == "42"


async def test_configured_headers_are_sent(server: WebhookServer, make_sink: SinkFactory) -> None:
    sink = await make_sink(headers={"Authorization": f"Bearer {TOKEN}", "X-Tenant": "acme"})
    await sink.write([rec("1")])
    headers = server.requests[0].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-tenant"] == "acme"
    assert headers["user-agent"].startswith("syncworker/")
    assert TOKEN not in repr(sink.config)


async def test_connections_are_kept_alive(server: WebhookServer, make_sink: SinkFactory) -> None:
    sink = await make_sink()
    await sink.write([rec("1", "in"), rec("2", "out")])
    await sink.write([rec("3", "in")])
    ports = {r.client_port for r in server.requests}
    assert len(server.requests) == 3 and len(ports) == 1 and None not in ports


async def test_signing_secret_is_not_in_the_config_repr(make_sink: SinkFactory) -> None:
    sink = await make_sink(signing_secret="whsec_hidden")
    assert "whsec_hidden" not in repr(sink.config) and "whsec_hidden" not in str(sink.config)


# -- failures -----------------------------------------------------------------------------


async def test_5xx_is_retryable(server: WebhookServer, make_sink: SinkFactory) -> None:
    server.respond_next(500)
    sink = await make_sink()
    with pytest.raises(RetryableError) as caught:
        await sink.write([rec("1")])
    assert is_transient(caught.value)
    assert "HTTP 500" in str(caught.value) and caught.value.delay_s is None
    # the runtime's retry goes through
    assert (await sink.write([rec("1")])).failed == {}
    assert [r.status for r in server.requests] == [500, 200]


async def test_hang_past_the_timeout_is_retryable(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    server.respond_next("hang")
    sink = await make_sink(timeout="200ms")
    with pytest.raises(RetryableError, match=r"no answer within 0\.2s"):
        await sink.write([rec("1")])
    assert len(server.requests) == 1 and server.requests[0].status is None


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = WebhookSink({"type": "webhook", "url": f"http://127.0.0.1:{port}/"}, name="webhook")
    await sink.open()
    try:
        with pytest.raises(RetryableError, match="ConnectError"):
            await sink.write([rec("1")])
    finally:
        await sink.close()


async def test_429_is_retryable_after_retry_after(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    server.retry_after = "2"
    server.respond_next("429")
    sink = await make_sink()
    with pytest.raises(RetryableError) as caught:
        await sink.write([rec("1")])
    assert caught.value.delay_s == 2
    assert "HTTP 429" in str(caught.value)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now_s = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert retry_after_s("2") == 2.0
    assert retry_after_s(" 0 ") == 0.0
    assert retry_after_s(later, now_s=now_s) == 30.0
    assert retry_after_s(earlier, now_s=now_s) == 0.0
    assert retry_after_s("soon") is None
    assert retry_after_s("-5") is None
    assert retry_after_s(None) is None


async def test_400_of_one_record_fails_that_record(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    server.reject_marker = "POISON"
    sink = await make_sink()
    records = [rec("1", "in"), rec("3", "in"), rec("2", "out", text="POISON")]
    result = await sink.write(records)
    assert sorted(result.failed) == [2]
    error = result.failed[2]
    assert isinstance(error, PermanentError) and not is_transient(error)
    assert "HTTP 400" in str(error) and server.reject_body in str(error)
    assert [r.status for r in server.requests] == [200, 400]
    assert server.accepted[0].json["messages"] == [{"id": "1"}, {"id": "3"}]


async def test_400_of_several_records_raises_so_the_runtime_bisects(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    server.reject_marker = "POISON"
    sink = await make_sink()
    records = [rec("1", "in"), rec("2", "out", text="POISON"), rec("4", "out")]
    with pytest.raises(PermanentError, match="HTTP 400") as caught:
        await sink.write(records)
    assert server.reject_body in str(caught.value) and not is_transient(caught.value)


async def test_wrong_address_pauses_instead_of_dead_lettering(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    server.respond_next(404)
    sink = await make_sink()
    with pytest.raises(ConnectionFailed, match="HTTP 404"):
        await sink.write([rec("1", "in")])


async def test_long_error_bodies_are_truncated(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    server.reject_marker = "POISON"
    server.reject_body = "x" * 10_000
    sink = await make_sink()
    result = await sink.write([rec("1", text="POISON")])
    message = str(result.failed[0])
    assert message.endswith("[truncated]")
    assert 2048 <= message.count("x") < 2100


async def test_errors_never_quote_secrets(server: WebhookServer, make_sink: SinkFactory) -> None:
    server.reject_marker = "POISON"
    server.echo_headers = True
    sink = await make_sink(
        headers={"Authorization": f"Bearer {TOKEN}", "X-Api-Key": "key-0123456789"},
        signing_secret="whsec_never_shown",
    )
    result = await sink.write([rec("1", text="POISON")])
    message = str(result.failed[0])
    assert "application/json" in message  # the receiver did echo the request's headers
    assert TOKEN not in message and "key-0123456789" not in message
    assert "whsec_never_shown" not in message


@pytest.mark.parametrize("status", [401, 403, 407])
async def test_a_refused_credential_is_a_refused_configuration(
    server: WebhookServer, make_sink: SinkFactory, status: int
) -> None:
    server.auth_status = status
    sink = await make_sink(headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(ConfigRefused, match=f"HTTP {status}") as caught:
        await sink.write([rec("1")])
    assert not is_transient(caught.value) and stops_pipeline(caught.value)
    assert "invalid credentials" in str(caught.value)  # the receiver's reason, quoted
    assert TOKEN not in str(caught.value)


async def test_max_batch_bytes_splits_a_stream_over_several_posts(
    server: WebhookServer, make_sink: SinkFactory
) -> None:
    sink = await make_sink(max_batch_bytes=1024)
    records = [rec(str(i), text="a" * 80) for i in range(30)]
    records.append(rec("huge", text="b" * 2000))
    result = await sink.write(records)
    assert list(result.failed) == [30] and "max_batch_bytes" in str(result.failed[30])
    assert len(server.requests) > 3
    assert all(len(r.body) <= 1024 for r in server.requests)
    bodies = [r.json for r in server.requests]
    assert all(b["count"] == len(b["messages"]) and b["queueType"] == "in" for b in bodies)
    sent = [m["id"] for b in bodies for m in b["messages"]]
    assert sent == [str(i) for i in range(30)]
    assert len({r.idempotency_key for r in server.requests}) == len(server.requests)


def test_config_is_validated() -> None:
    base = {"type": "webhook", "url": "https://example.com/hook"}
    config = WebhookSinkConfig.model_validate({**base, "timeout": "1500ms"})
    assert config.timeout == 1.5 and config.body == "seed"
    assert WebhookSinkConfig.model_validate(base).timeout == 10.0
    bad: list[dict[str, Any]] = [
        {**base, "url": "ftp://example.com/"},
        {**base, "url": "example.com/hook"},
        {**base, "headers": {"Idempotency-Key": "x"}},
        {**base, "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {**base, "body": "template"},
        {**base, "template": {"a": "$messages"}},
        {**base, "body": "template", "template": {"a": "$mesages"}},
        {**base, "bath_size": 10},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            WebhookSinkConfig.model_validate(data)


def test_registered_as_webhook() -> None:
    assert registry.lookup("sink", "webhook") is WebhookSink


SEED_YAML = """\
pipelines:
  whatsapp:
    source: {{type: sqlite_queue, path: "{tmp}/queue.db"}}
    sinks:
      - type: webhook
        url: "${{SYNC_WEBHOOK_URL}}"
        timeout: 10s
        headers: {{Authorization: "Bearer ${{WEBHOOK_TOKEN}}"}}
"""


def test_seed_config_reads_the_environment(tmp_path: Path) -> None:
    environ = {"SYNC_WEBHOOK_URL": "https://hooks.example.com/messages", "WEBHOOK_TOKEN": TOKEN}
    config = parse_config(SEED_YAML.format(tmp=tmp_path), environ=environ)
    sink_config = config.pipelines["whatsapp"].sinks[0]
    assert isinstance(sink_config, WebhookSinkConfig)
    assert sink_config.url == "https://hooks.example.com/messages"
    assert sink_config.timeout == 10.0
    assert sink_config.headers == {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(ConfigError, match=r"pipelines\.whatsapp\.sinks\[0\]\.url: expected an"):
        parse_config(SEED_YAML.format(tmp=tmp_path), environ={**environ, "SYNC_WEBHOOK_URL": "x"})


# -- through the pipeline loop --------------------------------------------------------------


async def test_pipeline_delivers_everything_through_a_flaky_receiver(
    server: WebhookServer, state: SqliteStateStore
) -> None:
    server.fail_ratio = 0.3
    server.fail_outcomes = (500, "hang")
    server.respond_next(500, "hang")  # at least one of each, whatever the draw
    server.reject_marker = "POISON"
    records = [
        rec(str(i), "in" if i % 2 == 0 else "out", n=i, **({"text": "POISON"} if i == 42 else {}))
        for i in range(100)
    ]
    queue = MemoryQueue(records)
    source = MemorySource(queue)
    sink = WebhookSink({"type": "webhook", "url": server.url, "timeout": "200ms"}, name="webhook")
    settings = PipelineSettings(
        batch_size=10,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=4, delay_s=0.01, max_delay_s=0.05, jitter=0),
        breaker=BreakerPolicy(delay_s=0.01, max_delay_s=0.1),
    )
    pipeline = Pipeline("p", source, [sink], settings=settings, state=state)
    all_acked = asyncio.Event()
    pipeline.on("batch_committed", lambda _: all_acked.set() if len(source.acked) == 100 else None)
    await pipeline.start()
    try:
        await asyncio.wait_for(all_acked.wait(), timeout=60)
    finally:
        await pipeline.stop()

    assert queue.ready == 0 and queue.in_flight == 0
    statuses = {r.status for r in server.requests}
    assert {500, None, 400, 200} <= statuses
    # The receiver refuses the POST holding record 42: the runtime bisects down to it and
    # dead-letters it alone, with the receiver's answer; its neighbours are delivered.
    poisoned = {"42"}
    letters = await state.dead_letters("p")
    assert {d.key for d in letters} == poisoned and len(letters) == 1
    for letter in letters:
        assert letter.error_type == "PermanentError" and letter.sink == "sink:webhook"
        assert "HTTP 400" in letter.error and server.reject_body in letter.error
    # Everything else arrived (at least once: bisection re-sends the good half of a refused
    # POST, under a new Idempotency-Key since its content differs; receivers dedupe by id).
    accepted_ids = {m["id"] for r in server.accepted for m in r.json["messages"]}
    assert accepted_ids == {str(i) for i in range(100)} - poisoned
    unique_ids = {m["id"] for r in server.deliveries.values() for m in r.json["messages"]}
    assert unique_ids == accepted_ids
