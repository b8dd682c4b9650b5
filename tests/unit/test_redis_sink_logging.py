"""REDIS_LOG_LEVEL: the Redis connectors' loggers take a level of their own
(``configure_logging(levels=...)``, ``env_levels``), the others keep LOG_LEVEL's."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from syncworker.observe.logging import (
    REDIS_LOGGERS,
    configure_logging,
    env_levels,
    reset_logging,
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def events(stream: io.StringIO) -> list[tuple[str, str]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [(line["level"], line["event"]) for line in lines]


def emit_all() -> None:
    for name in (
        "syncworker.connectors.redis.sink",
        "syncworker.connectors.redis",
        "syncworker.connectors.redisx",
        "syncworker.core.pipeline",
        None,
    ):
        log: Any = structlog.get_logger(name) if name else structlog.get_logger()
        tag = name or "root"
        log.debug(f"{tag}:debug")
        log.info(f"{tag}:info")
        log.warning(f"{tag}:warning")


def test_redis_loggers_log_at_their_own_level() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream, levels={REDIS_LOGGERS: "WARN"})
    emit_all()
    shown = [event for _, event in events(stream)]
    assert shown == [
        "syncworker.connectors.redis.sink:warning",
        "syncworker.connectors.redis:warning",
        "syncworker.connectors.redisx:info",  # not a Redis connector: a name, not a prefix
        "syncworker.connectors.redisx:warning",
        "syncworker.core.pipeline:info",
        "syncworker.core.pipeline:warning",
        "root:info",
        "root:warning",
    ]


def test_a_lower_own_level_shows_more_of_those_loggers_only() -> None:
    stream = io.StringIO()
    configure_logging(
        "json",
        "warning",
        stream,
        levels={REDIS_LOGGERS: "debug", "syncworker.connectors.redis.sink": "info"},
    )
    emit_all()
    shown = [event for _, event in events(stream)]
    assert shown == [
        "syncworker.connectors.redis.sink:info",  # the longest prefix wins
        "syncworker.connectors.redis.sink:warning",
        "syncworker.connectors.redis:debug",
        "syncworker.connectors.redis:info",
        "syncworker.connectors.redis:warning",
        "syncworker.connectors.redisx:warning",
        "syncworker.core.pipeline:warning",
        "root:warning",
    ]


def test_exceptions_are_errors_for_the_filter() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream, levels={REDIS_LOGGERS: "error"})
    log = structlog.get_logger("syncworker.connectors.redis.sink")
    log.warning("dropped")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("kept")
    assert events(stream) == [("error", "kept")]


def test_env_levels_reads_redis_log_level() -> None:
    assert env_levels({"REDIS_LOG_LEVEL": "WARN"}) == {REDIS_LOGGERS: "WARN"}
    assert env_levels({"REDIS_LOG_LEVEL": " "}) == {}
    assert env_levels({"LOG_LEVEL": "debug"}) == {}
    with pytest.raises(ValueError, match="invalid log level"):
        configure_logging(
            "json", "info", io.StringIO(), levels=env_levels({"REDIS_LOG_LEVEL": "loud"})
        )
