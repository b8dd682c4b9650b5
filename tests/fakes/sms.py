"""A local Vonage (Nexmo) SMS API for tests: ``POST /sms/json`` with the documented form
fields (api_key, api_secret, from, to, text, optional type), answered the documented way:
HTTP 200 with ``{"message-count": "1", "messages": [{"status": "0", "message-id", "to",
...}]}``; a non-zero status carries ``error-text``.

Checks: the five fields present (status 2), the credentials the server's (status 4).
Injected: ``statuses_next(*codes)`` (the next requests get these statuses: "1" throttled,
"5" internal error, "3" invalid parameters...), ``number_next[to] = ["1"]`` (the next
requests to that number get these statuses, in order), ``number_status[to] = code`` (a
number always gets it), ``http_next(*statuses)`` (the next requests get a bare HTTP error, e.g.
500). Accepted messages are in ``messages``; every request's form in ``requests``.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.local_server import LocalServer

ERROR_TEXT = {
    "1": "Throughput Rate Exceeded - please wait [ 0 ] and retry",
    "2": "Missing Parameters",
    "3": "Invalid Parameters",
    "4": "Bad Credentials",
    "5": "Internal Error",
    "6": "Invalid Message",
    "7": "Number Barred",
    "9": "Partner Quota Exceeded",
}
_REQUIRED = ("api_key", "api_secret", "from", "to", "text")


class VonageServer(LocalServer):
    label = "fake Vonage SMS"

    def __init__(self, *, api_key: str = "test-key", api_secret: str = "test-secret-9f8e") -> None:
        super().__init__()
        self.api_key = api_key
        self.api_secret = api_secret
        self.messages: list[dict[str, str]] = []
        self.requests: list[dict[str, str]] = []
        self.number_status: dict[str, str] = {}
        self.number_next: dict[str, list[str]] = {}
        self._statuses: deque[str] = deque()
        self._http: deque[int] = deque()
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sms_settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "from_number": "SupMsg",
            "base_url": self.url,
            **extra,
        }

    def statuses_next(self, *codes: str) -> None:
        self._statuses.extend(codes)

    def http_next(self, *statuses: int) -> None:
        self._http.extend(statuses)

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/sms/json", self._send, methods=["POST"])])

    async def _send(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append(form)
        if self._http:
            return PlainTextResponse("upstream error", status_code=self._http.popleft())
        to = form.get("to", "")
        if any(not form.get(name) for name in _REQUIRED):
            return self._answer(to, "2")
        if form["api_key"] != self.api_key or form["api_secret"] != self.api_secret:
            return self._answer(to, "4")
        if self._statuses:
            return self._answer(to, self._statuses.popleft())
        if self.number_next.get(to):
            return self._answer(to, self.number_next[to].pop(0))
        if to in self.number_status:
            return self._answer(to, self.number_status[to])
        self.messages.append(form)
        return self._answer(to, "0")

    def _answer(self, to: str, status: str) -> JSONResponse:
        message: dict[str, str] = {"to": to, "status": status}
        if status == "0":
            message |= {"message-id": f"0C0000002{next(self._ids):07d}",
                        "remaining-balance": "15.53590000", "message-price": "0.03330000",
                        "network": "23410"}  # fmt: skip
        else:
            message["error-text"] = ERROR_TEXT.get(status, "Error")
        return JSONResponse({"message-count": "1", "messages": [message]})
