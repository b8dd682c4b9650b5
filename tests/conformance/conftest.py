"""Fixtures of the conformance suite: one harness per registered connector (``registry.py``),
on the real services of ``tests/integration/conftest.py`` or the fakes of ``tests/fakes``."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from syncworker.observe.logging import configure_logging, reset_logging
from tests.conformance.harness import Context, SinkHarness, SourceHarness
from tests.conformance.registry import SINKS, SOURCES
from tests.integration.conftest import REDIS_URL, pg_url, redis_prefix

__all__ = ["pg_url", "redis_prefix"]  # the service fixtures, shared with the integration tests

pytestmark = pytest.mark.integration


def _context(request: pytest.FixtureRequest, tmp_path: Path, needs: frozenset[str]) -> Context:
    return Context(
        tmp_path=tmp_path,
        pg_url=request.getfixturevalue("pg_url") if "pg" in needs else "",
        redis_url=REDIS_URL,
        redis_prefix=request.getfixturevalue("redis_prefix") if "redis" in needs else "",
    )


@pytest.fixture(params=SOURCES, ids=lambda harness: harness.type_name)
def source_context(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[type, Context]:
    return request.param, _context(request, tmp_path, request.param.services)


@pytest.fixture(params=SINKS, ids=lambda harness: harness.type_name)
def sink_context(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[type, Context]:
    return request.param, _context(request, tmp_path, request.param.services)


@pytest.fixture
async def source(
    source_context: tuple[type[SourceHarness], Context],
) -> AsyncIterator[SourceHarness]:
    harness_type, ctx = source_context
    harness = harness_type(ctx)
    teardown = getattr(harness, "teardown", None)  # what it made on a shared server (amqp)
    try:
        await harness.prepare()
        yield harness
    finally:
        if teardown is not None:
            await teardown()


@pytest.fixture
async def sink(sink_context: tuple[type[SinkHarness], Context]) -> AsyncIterator[SinkHarness]:
    harness_type, ctx = sink_context
    harness = harness_type(ctx)
    await harness.start()
    try:
        await harness.prepare()
        yield harness
    finally:
        await harness.stop()


class Logs:
    """Every log line of the test, rendered as JSON by the real logging chain (redaction
    included), library lines (httpx, psycopg...) too."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def logs() -> Iterator[Logs]:
    captured = Logs()
    configure_logging("json", "debug", captured.stream)
    try:
        yield captured
    finally:
        reset_logging()
