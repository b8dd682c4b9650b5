"""The generic ``http`` source over a small local REST server (real httpx, real uvicorn): every
pagination style end to end, a static bearer token, and what a 4xx means."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncworker.connectors.http.source_rest import HttpSource
from syncworker.core.pipeline import Pipeline
from syncworker.errors import ConfigRefused, PermanentError, RetryableError
from syncworker.state.base import StateStore
from syncworker.testing import MemorySink
from tests.fakes.local_server import LocalServer
from tests.integration.zoho_support import settings
from tests.waiting import eventually

pytestmark = pytest.mark.integration

TOKEN = "rest-bearer-token-5e6f7a"
ITEMS = [{"id": f"i-{n}", "n": n, "big": 2**70 + n, "ratio": "0.1"} for n in range(23)]


class RestServer(LocalServer):
    """Four listings of ITEMS, one per pagination style; Bearer TOKEN required."""

    label = "fake REST"

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.pages_asked: list[int] = []
        self.fail_once: set[int] = set()  # /pages answered 503 once

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/pages", self._pages),
                Route("/offsets", self._offsets),
                Route("/cursor", self._cursor),
                Route("/linked", self._linked),
                Route("/bad", self._bad),
            ]
        )

    def _refused(self, request: Request) -> Response | None:
        self.requests += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "unauthorized"}, 401)
        return None

    async def _pages(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        size = int(request.query_params["per_page"])
        page = int(request.query_params["page"])
        self.pages_asked.append(page)
        if page in self.fail_once:
            self.fail_once.discard(page)
            return JSONResponse({"error": "busy"}, 503)
        return JSONResponse({"results": ITEMS[(page - 1) * size : page * size]})

    async def _offsets(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        limit, offset = int(request.query_params["limit"]), int(request.query_params["offset"])
        return JSONResponse({"results": ITEMS[offset : offset + limit]})

    async def _cursor(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        start = int(request.query_params.get("after", "0"))
        chunk = ITEMS[start : start + 5]
        following = str(start + 5) if start + 5 < len(ITEMS) else None
        return JSONResponse({"results": chunk, "meta": {"next": following}})

    async def _linked(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        start = int(request.query_params.get("from", "0"))
        headers = {}
        if start + 10 < len(ITEMS):
            headers["Link"] = f'</linked?from={start + 10}>; rel="next"'
        return JSONResponse({"results": ITEMS[start : start + 10]}, headers=headers)

    async def _bad(self, request: Request) -> Response:
        self.requests += 1
        return JSONResponse({"error": "invalid filter"}, 400)


@pytest.fixture
async def rest() -> AsyncIterator[RestServer]:
    async with RestServer() as server:
        yield server


def source(rest: RestServer, path: str, pagination: dict[str, Any], **extra: Any) -> HttpSource:
    config = {
        "type": "http",
        "base_url": rest.url,
        "path": path,
        "bearer_token": TOKEN,
        "records_path": "results",
        "page_size": 10,
        "pagination": pagination,
        "backoff": "10ms",
        **extra,
    }
    return HttpSource(config, name="rest")


STYLES = {
    "page": ("/pages", {"kind": "page", "size_param": "per_page"}),
    "offset": ("/offsets", {"kind": "offset", "size_param": "limit"}),
    "body_cursor": (
        "/cursor",
        {"kind": "body_cursor", "cursor_path": "meta.next", "cursor_param": "after"},
    ),
    "link": ("/linked", {"kind": "link"}),
}


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_every_pagination_style_reads_everything_exactly(
    rest: RestServer, state: StateStore, style: str
) -> None:
    path, pagination = STYLES[style]
    sink = MemorySink()
    run = Pipeline("rest", source(rest, path, pagination), [sink], settings=settings(), state=state)
    try:
        result = await run.run_once("full")
    finally:
        await run.close()
    assert result.status == "success", result.error
    assert sink.rows == {item["id"]: item for item in ITEMS}  # 2**70 + n exact
    assert [key for write in sink.writes for key in write] == [item["id"] for item in ITEMS]


async def test_a_wrong_bearer_token_is_refused_without_quoting_it(rest: RestServer) -> None:
    wrong = "rest-bearer-token-WRONG-0000"
    src = source(rest, "/pages", STYLES["page"][1], bearer_token=wrong)
    await src.open()
    try:
        with pytest.raises(ConfigRefused) as refused:
            await src.claim(10)
    finally:
        await src.close()
    text = "".join(traceback.format_exception(refused.value)) + str(src.status())
    assert "HTTP 401" in text
    assert wrong not in text


async def test_another_4xx_is_a_permanent_error(rest: RestServer) -> None:
    src = source(rest, "/bad", {"kind": "none"})
    await src.open()
    try:
        with pytest.raises(PermanentError, match="HTTP 400"):
            await src.claim(10)
    finally:
        await src.close()
    assert rest.requests == 1  # refused at once, not retried


async def test_the_next_page_is_asked_for_while_the_last_one_is_written(rest: RestServer) -> None:
    src = source(rest, "/pages", STYLES["page"][1])
    await src.open()
    try:
        first = await src.claim(10)
        assert first is not None
        assert [r.key for r in first.records] == [item["id"] for item in ITEMS[:10]]
        # no other claim yet, nothing acked: page 2 is asked for all the same
        await eventually(lambda: rest.pages_asked == [1, 2], "page 2 asked for ahead")
        second = await src.claim(10)
        assert second is not None
        assert [r.key for r in second.records] == [item["id"] for item in ITEMS[10:20]]
        assert rest.pages_asked[:2] == [1, 2]  # served from the page read ahead
    finally:
        await src.close()


async def test_a_page_read_ahead_that_fails_fails_the_claim_that_needs_it(
    rest: RestServer,
) -> None:
    rest.fail_once = {2}
    src = source(rest, "/pages", STYLES["page"][1], max_attempts=1)
    await src.open()
    try:
        first = await src.claim(10)
        assert first is not None and len(first.records) == 10
        await src.ack(first)
        with pytest.raises(RetryableError, match="503"):
            await src.claim(10)
        records = []
        while (batch := await src.claim(10)) is not None and batch.records:
            records += batch.records
            await src.ack(batch)
    finally:
        await src.close()
    # the read stayed at page 2: asked again, and nothing read twice or lost
    assert [r.key for r in records] == [item["id"] for item in ITEMS[10:]]
    assert rest.pages_asked[:3] == [1, 2, 2]
