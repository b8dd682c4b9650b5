"""A real local webhook receiver for tests: Starlette served by uvicorn on 127.0.0.1.

It records every request (headers, body, what it answered), answers 2xx by default, counts a
delivery once per ``Idempotency-Key`` (as a receiver honouring the header would), and injects
failures:

- ``respond_next(*outcomes)``: the next requests get these outcomes, in order;
- ``auth_status``: every request is answered with it (401/403: bad credentials);
- ``reject_marker``: a body containing it is answered ``reject_status`` (400) with
  ``reject_body`` (plus the request's headers when ``echo_headers``);
- ``fail_ratio`` / ``fail_outcomes``: that share of the other requests fails, drawing one of the
  outcomes (seeded, so a run is reproducible).

Outcomes: an int status (``500``, ``503``, ``200``...), ``"429"`` (with ``Retry-After:
retry_after``) or ``"hang"`` (no answer for ``hang_s``, or until the server stops).

Runs as a task in the test's own event loop: ``async with WebhookServer() as server: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.local_server import LocalServer

Outcome = int | Literal["429", "hang"]


@dataclass(slots=True)
class Received:
    """One request as the server saw it, and what it answered (``None``: it hung)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int | None = None
    status: int | None = None
    duplicate: bool = False

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookServer(LocalServer):
    """See the module docstring."""

    label = "fake webhook"

    def __init__(self, *, seed: int = 0, path: str = "/hook") -> None:
        super().__init__()
        self.path = path
        self.requests: list[Received] = []
        self.deliveries: dict[str, Received] = {}
        self.fail_ratio = 0.0
        self.fail_outcomes: tuple[Outcome, ...] = (500,)
        self.auth_status: int | None = None
        self.reject_marker: str | None = None
        self.reject_status = 400
        self.reject_body = "rejected: field 'text' is invalid"
        self.echo_headers = False
        self.retry_after = "1"
        self.hang_s = 30.0
        self._script: deque[Outcome] = deque()
        self._random = random.Random(seed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def respond_next(self, *outcomes: Outcome) -> None:
        self._script.extend(outcomes)

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.accepted]

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/{rest:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        port = request.client.port if request.client else None
        received = Received(
            request.method, request.url.path, dict(request.headers.items()), body, port
        )
        self.requests.append(received)
        response = await self._answer(received)
        received.status = None if response is None else response.status_code
        if response is None:
            return PlainTextResponse("gave up", status_code=503)
        if received.accepted and received.idempotency_key is not None:
            received.duplicate = received.idempotency_key in self.deliveries
            self.deliveries.setdefault(received.idempotency_key, received)
        return response

    async def _answer(self, received: Received) -> Response | None:
        """The response to send, or ``None`` after hanging."""
        if self._script:
            return await self._outcome(self._script.popleft())
        if self.auth_status is not None:
            return PlainTextResponse("invalid credentials", status_code=self.auth_status)
        if self.reject_marker is not None and self.reject_marker.encode() in received.body:
            text = self.reject_body
            if self.echo_headers:
                # Bare values, as a careless receiver might log them back.
                text += " (echo: " + " ".join(received.headers.values()) + ")"
            return PlainTextResponse(text, status_code=self.reject_status)
        if self.fail_ratio and self._random.random() < self.fail_ratio:
            return await self._outcome(self._random.choice(self.fail_outcomes))
        return await self._outcome(200)

    async def _outcome(self, outcome: Outcome) -> Response | None:
        if outcome == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hang_s)
            return None
        if outcome == "429":
            return PlainTextResponse(
                "slow down", status_code=429, headers={"Retry-After": self.retry_after}
            )
        if 200 <= outcome < 300:
            return JSONResponse({"ok": True}, status_code=outcome)
        return PlainTextResponse(f"injected failure {outcome}", status_code=outcome)
