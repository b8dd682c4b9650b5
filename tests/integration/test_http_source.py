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
from syncworker.errors import ConfigRefused, PermanentError
from syncworker.state.base import StateStore
from syncworker.testing import MemorySink
from tests.fakes.local_server import LocalServer
from tests.integration.zoho_support import settings

pytestmark = pytest.mark.integration

TOKEN = "rest-bearer-token-5e6f7a"
ITEMS = [{"id": f"i-{n}", "n": n, "big": 2**70 + n, "ratio": "0.1"} for n in range(23)]


class RestServer(LocalServer):
    """Four listings of ITEMS, one per pagination style; Bearer TOKEN required."""

    label = "fake REST"

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

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
