"""The REST source's HTTP client: one ``GET`` of a JSON page, with the limiter, the
authentication, the retries and the error classes around it.

What an answer means (``Verdict``, from the status and, for APIs that say more in the body
such as Zoho, from the body's own code):

- 2xx with a JSON body: the page (``ok``), or no records (``empty``: Zoho's 3100);
- 401 (or a body saying the token expired): the access token is renewed once and the request
  sent again; still refused: ``ConfigRefused`` (the pipeline stops and says why);
- 403: ``ConfigRefused``; 404: ``ConfigRefused`` (no such report: the address is wrong);
- 429, 5xx, a timeout, a lost connection, a body that is not JSON: sent again after a
  backoff (or the capped ``Retry-After``), up to ``max_attempts``; then ``RetryableError``
  (``ConnectionFailed`` when nothing answered), which pauses the pipeline;
- another 4xx: ``PermanentError`` quoting the status and the start of the answer.

Secrets never leave: every answer quoted in an error goes through ``scrub`` first.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog

from syncworker import __version__
from syncworker.connectors.http.auth import Auth
from syncworker.connectors.http.ratelimit import RateLimiter
from syncworker.connectors.retry_after import retry_after_s
from syncworker.core import jsonvalue
from syncworker.errors import (
    ConfigRefused,
    ConnectionClosed,
    ConnectionFailed,
    PermanentError,
    RetryableError,
)
from syncworker.observe.logging import MASK, redact_url

log = structlog.get_logger(__name__)

Verdict = Literal["ok", "empty", "auth", "retry", "refuse", "permanent"]
ERROR_BODY_CHARS = 300
_MIN_SCRUB_CHARS = 4


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Timeouts, retries and the limiter of one client."""

    timeout_s: float = 30.0
    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 60.0
    rate_limit_requests: int = 0
    rate_limit_per_s: float = 60.0
    http2: bool = False


@dataclass(slots=True)
class Page:
    """One answered page: the response, its body decoded with exact numbers (``None`` when
    it is no JSON: ``error`` says why), and the verdict (``ok`` or ``empty``)."""

    response: httpx.Response
    body: Any
    raw: bytes
    verdict: Verdict = "ok"
    error: str | None = None


def decode_page(raw: bytes) -> Any:
    """A page's body with every number exact: ``jsonvalue.loads(raw, writable=True)``, which
    keeps orjson's fast answer when every long digit run is inside a string (Zoho's ids)."""
    return jsonvalue.loads(raw, writable=True)


def default_verdict(status: int, body: Any) -> Verdict:
    """The verdict from the HTTP status alone."""
    if 200 <= status < 300:
        return "ok"
    if status == 401:
        return "auth"
    if status in (403, 404, 405, 410):
        return "refuse"
    if status in (408, 425, 429) or status >= 500:
        return "retry"
    return "permanent"


class HttpClient:
    """``get`` pages through one ``httpx.AsyncClient`` (kept-alive connections, HTTP/2 when
    configured and ``h2`` is installed)."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        label: str,
        auth: Callable[[httpx.AsyncClient], Auth],
        headers: dict[str, str] | None = None,
        verdict: Callable[[int, Any], Verdict] = default_verdict,
        public_headers: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.label = label
        self._make_auth = auth
        self._headers = dict(headers or {})
        self._public = {name.lower() for name in public_headers}
        self._verdict = verdict
        self._client: httpx.AsyncClient | None = None
        self.auth: Auth | None = None
        self.limiter = RateLimiter(settings.rate_limit_requests, settings.rate_limit_per_s)
        self.requests = 0
        self.retries = 0
        self.throttled = 0
        self.last_error: str | None = None

    async def open(self) -> None:
        if self._client is not None:
            return
        if self.settings.http2 and importlib.util.find_spec("h2") is None:
            # an optional package, not in the http extra: HTTP/2 only helps over TLS with
            # many requests in flight, and this client sends one page at a time
            raise ConfigRefused(
                f"{self.label}: http2 is on but the h2 package is not installed "
                "(pip install 'httpx[http2]')"
            )
        self._client = httpx.AsyncClient(
            headers={"User-Agent": f"syncworker/{__version__}", "Accept": "application/json"},
            timeout=httpx.Timeout(self.settings.timeout_s),
            follow_redirects=False,
            http2=self.settings.http2,
        )
        self.auth = self._make_auth(self._client)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def scrub(self, text: str) -> str:
        """``text`` with every secret this client holds masked, and redacted."""
        values = [v for name, v in self._headers.items() if name.lower() not in self._public]
        if self.auth is not None:
            values += self.auth.secrets()
        for value in sorted(
            {v for v in values if len(v) >= _MIN_SCRUB_CHARS}, key=len, reverse=True
        ):
            text = text.replace(value, MASK)
        return redact_url(text)

    async def get(
        self,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        endpoint: str | None = None,
    ) -> Page:
        """``GET url`` until it answers a page (see the module docstring for the rest).

        ``endpoint`` is the limiter's key (default: the URL's path). A body that stays
        undecodable after every attempt is returned with ``error`` set, so the caller can
        dead-letter it and go on."""
        client = self._client
        if client is None or self.auth is None:
            raise ConnectionClosed(f"{self.label}: not open")
        key = endpoint or httpx.URL(url).path
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            self.throttled += 1 if await self.limiter.acquire(key) else 0
            auth = await self.auth.headers()
            sent = {**self._headers, **auth, **(headers or {})}
            try:
                self.requests += 1
                response = await client.get(url, params=params, headers=sent)
            except httpx.TransportError as exc:
                error = self._transport_error(exc)
                await self._backoff(attempt, None, error)
                continue
            page = self._page(response)
            verdict = page.verdict
            if verdict == "auth":
                if not renewed and await self.auth.refused(auth):
                    renewed = True
                    attempt -= 1  # the renewal is not a failed attempt
                    continue
                raise self._error(ConfigRefused, response, "the credentials were refused")
            if verdict == "refuse":
                raise self._error(ConfigRefused, response, "refused; check the address and grants")
            if verdict == "permanent":
                raise self._error(PermanentError, response, "the request was refused")
            if verdict == "retry":
                error = self._error(RetryableError, response, "unavailable")
                await self._backoff(attempt, response, error)
                continue
            if page.error is not None and attempt < self.settings.max_attempts:
                error = RetryableError(f"{self.label}: page is no JSON ({page.error})")
                await self._backoff(attempt, None, error)
                continue
            return page

    def _page(self, response: httpx.Response) -> Page:
        raw = response.content
        try:
            body = decode_page(raw) if raw else None
        except (ValueError, RecursionError) as exc:
            verdict = default_verdict(response.status_code, None)
            return Page(response, None, raw, verdict, f"{type(exc).__name__}: {exc}"[:200])
        return Page(response, body, raw, self._verdict(response.status_code, body))

    def _transport_error(self, exc: httpx.TransportError) -> Exception:
        if isinstance(exc, httpx.TimeoutException):
            limit = self.settings.timeout_s
            return RetryableError(
                f"{self.label}: no answer within {limit:g}s ({type(exc).__name__})"
            )
        return ConnectionFailed(f"{self.label}: {type(exc).__name__}: {self.scrub(str(exc))}")

    async def _backoff(
        self, attempt: int, response: httpx.Response | None, error: Exception
    ) -> None:
        """Sleep before the next attempt, or raise ``error`` when none is left."""
        self.last_error = str(error)
        asked = None if response is None else retry_after_s(response.headers.get("retry-after"))
        if asked is not None:
            asked = min(asked, self.settings.max_retry_after_s)
        if attempt >= self.settings.max_attempts:
            if isinstance(error, RetryableError) and asked is not None:
                error.delay_s = asked
            raise error
        if asked is None:
            base = self.settings.backoff_initial_s * 2 ** (attempt - 1)
            asked = min(self.settings.backoff_max_s, base) * random.uniform(0.8, 1.0)
        self.retries += 1
        log.warning(
            "http_request_retried",
            source=self.label,
            attempt=attempt,
            delay_s=round(asked, 3),
            error=str(error),
        )
        await asyncio.sleep(asked)

    def _error(self, cls: type[Exception], response: httpx.Response, what: str) -> Exception:
        answer = response.content[:ERROR_BODY_CHARS].decode("utf-8", "replace")
        url = response.request.url.copy_with(query=None)
        message = self.scrub(
            f"{self.label}: HTTP {response.status_code} from {url}: {what}: {answer}"
        )
        self.last_error = message
        return cls(message)
