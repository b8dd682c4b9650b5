"""Logging: both formats render, and no secret survives into a log line."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
from collections import namedtuple
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from syncworker.observe.logging import (
    IDENTITY_KEY_NAMES,
    Identifiers,
    configure_logging,
    is_secret_name,
    redact_url,
    redact_value,
    reset_logging,
)

CONFIG = {
    "state": "postgresql://sync:st4te-pw@db:5432/state",
    "api": {"listen": "127.0.0.1:8080", "token": "api-tok-123"},
    "pipelines": {
        "whatsapp": {
            "source": {"type": "redis_list", "url": "redis://:r3dis-pw@cache:6379/0"},
            "sinks": [
                {"type": "postgres", "url": "postgresql://app:s3cr3t-pw@db/app", "table": "m"},
                {"type": "webhook", "url": "https://hooks.example.com/in?token=hook-tok-9"},
            ],
            "record_key": "user:42",
        }
    },
}
SECRETS = ["st4te-pw", "api-tok-123", "r3dis-pw", "s3cr3t-pw", "hook-tok-9"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()


def capture(fmt: str, level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(fmt, level, stream)  # type: ignore[arg-type]
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_no_secrets(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secrets leaked into log output: {leaked}\n{text}"


def raise_with_url() -> None:
    raise ConnectionError("cannot reach postgresql://app:s3cr3t-pw@db/app")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:pw@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("retry amqp://guest:guest@mq/vhost now", "retry amqp://guest:***@mq/vhost now"),
        ("amqp://me@example.com:pw@mq/", "amqp://me@example.com:***@mq/"),
        ("postgresql://u:p@ss@db/app", "postgresql://u:***@db/app"),
        ("https://h/x?password=pw&page=2", "https://h/x?password=***&page=2"),
        ("https://h/x?page=2&token=tok", "https://h/x?page=2&token=***"),
        ("https://h/cb?access_token=tok#frag", "https://h/cb?access_token=***#frag"),
        ("https://h/x?api_key=k&secret=s", "https://h/x?api_key=***&secret=***"),
        ("url=https://h/?token=tok&a=1", "url=https://h/?token=***&a=1"),
        ("host=db password='a b' user=x", "host=db password='***' user=x"),
        ("Authorization: Bearer eyJ.abc-def", "Authorization: Bearer ***"),
        ("sent Bearer abc123== upstream", "sent Bearer *** upstream"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        (
            '{"access_token": "tok", "expires_in": 3600}',
            '{"access_token": "***", "expires_in": 3600}',
        ),
        ("{'password': 'pw', 'user': 'u'}", "{'password': '***', 'user': 'u'}"),
        ("?record_key=user:42&lock_key=sync", "?record_key=user:42&lock_key=sync"),
    ],
)
def test_redact_url_masks_secrets_in_text(text: str, expected: str) -> None:
    assert redact_url(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://host:8080/path?page=2",
        "http://user@host/path",
        "batch_committed",
        "2024-05-01T10:00:00Z",
        "mailto:someone@example.com",
    ],
)
def test_redact_url_leaves_ordinary_text_alone(text: str) -> None:
    assert redact_url(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abc123, retrying in 5s", "token=***, retrying in 5s"),
        ("call(token=abc123) failed", "call(token=***) failed"),
        ("bad request (token=abc123): try again", "bad request (token=***): try again"),
        ("https://h/x?token=abc123]: timeout", "https://h/x?token=***]: timeout"),
        ("https://h/?access_token=abc;page=2", "https://h/?access_token=***;page=2"),
        ("https://h/?token=abc|x", "https://h/?token=***|x"),
        ("https://h/x?token=abc...[truncated]", "https://h/x?token=***...[truncated]"),
        ("it was token=abc123.", "it was token=***."),
        ("[token=abc123] {secret=s}", "[token=***] {secret=***}"),
    ],
)
def test_redacting_a_value_keeps_the_text_after_it(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_identifiers_are_not_masked_by_name() -> None:
    lock = Identifiers(
        {"backend": "redis", "key": "whatsapp:syncLock", "token": 7, "holder": "h:1:ab"}
    )
    status = {"lock": lock, "token": "api-tok-123", "url": "redis://:pw@h/0"}
    assert redact_value(status) == {
        "lock": {"backend": "redis", "key": "whatsapp:syncLock", "token": 7, "holder": "h:1:ab"},
        "token": "***",
        "url": "redis://:***@h/0",
    }
    # text inside them is still searched: a URL password there is masked all the same
    assert redact_value(Identifiers({"key": "redis://:pw@h/0"})) == {"key": "redis://:***@h/0"}


def test_redact_url_is_idempotent() -> None:
    once = redact_url("postgresql://u:pw@db/app?token=t Authorization: Bearer b")
    assert redact_url(once) == once


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "DB_PASSWORD",
        "passwd",
        "client_secret",
        "api.token",
        "refreshToken",
        "Authorization",
        "X-Api-Key",
        "apiKey",
        "private_key",
        "aws_access_key_id",
        "credentials",
        "key",
        "pwd",
        "pass",
        "signing_key",
        "encryption_key",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", [*sorted(IDENTITY_KEY_NAMES), "recordKey", "keys", "url", "user", "table"]
)
def test_identity_and_ordinary_names_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize("name", ["after_key", "last_key", "until_key"])
def test_key_range_positions_are_shown(name: str) -> None:
    # pg_table logs where its snapshot resumes (pg_table_snapshot_resumed after_key=...):
    # masked, an operator could not tell where a restarted snapshot went on from.
    assert not is_secret_name(name)


def test_redact_value_masks_nested_config_without_mutating_it() -> None:
    original = copy.deepcopy(CONFIG)
    redacted = redact_value(CONFIG)

    assert original == CONFIG
    assert_no_secrets(json.dumps(redacted))
    pipeline = redacted["pipelines"]["whatsapp"]
    assert pipeline["sinks"][0]["url"] == "postgresql://app:***@db/app"
    assert pipeline["sinks"][1]["url"] == "https://hooks.example.com/in?token=***"
    assert redacted["api"] == {"listen": "127.0.0.1:8080", "token": "***"}
    assert pipeline["record_key"] == "user:42"


def test_redact_value_keeps_container_types() -> None:
    Pair = namedtuple("Pair", "left right")
    value = {
        "t": ("redis://:pw@h", 1),
        "s": frozenset({"x"}),
        "p": Pair("a", "b"),
        "n": None,
    }
    redacted = redact_value(value)
    assert redacted == {
        "t": ("redis://:***@h", 1),
        "s": frozenset({"x"}),
        "p": Pair("a", "b"),
        "n": None,
    }
    assert type(redacted["p"]) is Pair


def test_unset_secrets_stay_visible() -> None:
    assert redact_value({"token": "", "password": None, "api_key": "k"}) == {
        "token": "",
        "password": None,
        "api_key": "***",
    }


def test_json_lines_are_valid_with_event_level_timestamp() -> None:
    stream = capture("json")
    log = structlog.get_logger()
    log.info("batch_committed", pipeline="whatsapp", records=100)
    log.warning("sink_slow", elapsed_s=1.5)

    first, second = json_lines(stream)
    assert first["event"] == "batch_committed"
    assert first["level"] == "info"
    assert first["records"] == 100
    assert second["level"] == "warning"
    stamp = dt.datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_event_is_redacted(fmt: str) -> None:
    stream = capture(fmt)
    log = structlog.get_logger()
    log.info("config_loaded", config=CONFIG)
    log.info("calling_api", url="https://api.example.com/v1?page=2&token=hook-tok-9")
    log.info("request_sent", headers={"Authorization": "Bearer api-tok-123"})
    log.info("state_opened", dsn=CONFIG["state"], password="r3dis-pw")

    output = stream.getvalue()
    assert_no_secrets(output)
    assert "postgresql://app:***@db/app" in output
    assert "user:42" in output


def test_nested_config_is_redacted_in_json_structure() -> None:
    stream = capture("json")
    structlog.get_logger().info("config_loaded", config=CONFIG)

    (line,) = json_lines(stream)
    pipeline = line["config"]["pipelines"]["whatsapp"]
    assert pipeline["sinks"][0]["url"] == "postgresql://app:***@db/app"
    assert line["config"]["api"]["token"] == "***"
    assert pipeline["record_key"] == "user:42"


def test_bound_and_context_values_are_redacted() -> None:
    stream = capture("json")
    structlog.contextvars.bind_contextvars(source="redis://:r3dis-pw@cache:6379/0")
    structlog.get_logger().bind(api_token="api-tok-123").info("claimed")

    (line,) = json_lines(stream)
    assert line["source"] == "redis://:***@cache:6379/0"
    assert line["api_token"] == "***"


def test_objects_are_rendered_as_redacted_text() -> None:
    @dataclasses.dataclass
    class Settings:
        url: str
        password: str

    stream = capture("json")
    structlog.get_logger().info(
        "started",
        settings=Settings("postgresql://app:s3cr3t-pw@db/app", "st4te-pw"),
        error=ValueError("token=hook-tok-9 rejected"),
    )

    (line,) = json_lines(stream)
    assert_no_secrets(json.dumps(line))
    assert line["error"] == "ValueError: token=*** rejected"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_exceptions_render_and_are_redacted(fmt: str) -> None:
    stream = capture(fmt)
    try:
        raise_with_url()
    except ConnectionError:
        structlog.get_logger().exception("claim_failed", pipeline="whatsapp")

    output = stream.getvalue()
    assert "claim_failed" in output
    assert "Traceback (most recent call last)" in output
    assert "ConnectionError: cannot reach postgresql://app:***@db/app" in output
    assert_no_secrets(output)


def test_json_exception_is_a_field() -> None:
    stream = capture("json")
    try:
        raise_with_url()
    except ConnectionError as exc:
        structlog.get_logger().error("claim_failed", exc_info=exc)

    (line,) = json_lines(stream)
    assert line["level"] == "error"
    assert "raise_with_url" in line["exception"]


def test_console_output_has_no_colors_when_not_a_terminal() -> None:
    stream = capture("console")
    structlog.get_logger().info("batch_committed", records=3)
    output = stream.getvalue()
    assert "\x1b[" not in output
    assert "batch_committed" in output
    assert "records=3" in output


def test_level_filters_and_reconfiguring_applies_to_existing_loggers() -> None:
    log = structlog.get_logger()
    stream = capture("json", level="WARNING")
    log.info("hidden")
    log.warning("shown")
    assert [line["event"] for line in json_lines(stream)] == ["shown"]

    again = capture("console", level="debug")
    log.debug("now_visible")
    assert "now_visible" in again.getvalue()
    assert "shown" not in again.getvalue()


@pytest.mark.parametrize("level", ["verbose", "", "inf"])
def test_invalid_level_is_a_clear_error(level: str) -> None:
    with pytest.raises(ValueError, match=r"invalid log level .*expected one of debug, info"):
        configure_logging("json", level)


def test_invalid_format_is_a_clear_error_and_keeps_previous_config() -> None:
    stream = capture("json")
    with pytest.raises(ValueError, match="invalid log format 'xml'"):
        configure_logging("xml", "info")  # type: ignore[arg-type]
    structlog.get_logger().info("still_json")
    assert json_lines(stream)[0]["event"] == "still_json"


def test_stdlib_records_go_through_redaction() -> None:
    stream = capture("json", level="info")
    logging.getLogger("a_client").info("HTTP Request: GET https://h/x?access_token=api-tok-123")
    logging.getLogger("noisy").debug("below the level")
    logging.getLogger("httpx").info("HTTP Request: GET https://h/ (chatty, kept quiet)")

    (line,) = json_lines(stream)
    assert line["logger"] == "a_client"
    assert line["event"] == "HTTP Request: GET https://h/x?access_token=***"


def test_configure_twice_installs_one_stdlib_bridge() -> None:
    capture("json")
    stream = capture("json")
    logging.getLogger("aio_pika").warning("reconnecting")
    assert len(json_lines(stream)) == 1


EMBEDDED = """
import asyncio
from syncworker.core import Pipeline, PipelineSettings
from syncworker.testing import MemoryQueue, MemorySink, MemorySource

async def main():
    queue = MemoryQueue()
    queue.put_many(3)
    pipeline = Pipeline("chat", MemorySource(queue), [MemorySink()], settings=PipelineSettings())
    print("run", (await pipeline.run_once()).status)

asyncio.run(main())
"""


@pytest.mark.parametrize(("level", "debug_shown"), [(None, False), ("debug", True)])
def test_the_python_api_logs_info_by_default(level: str | None, debug_shown: bool) -> None:
    # A program that embeds syncworker and never configures logging (a fresh interpreter).
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCWORKER_LOG_LEVEL", "LOG_LEVEL")}
    if level is not None:
        env["SYNCWORKER_LOG_LEVEL"] = level
    env["NO_COLOR"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", EMBEDDED], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "run success\n"  # log lines go to stderr, not the program's stdout
    assert "sync_finished" in result.stderr
    assert ("batch_committed" in result.stderr) is debug_shown
