"""Request authentication of the REST source: a static header, or an OAuth 2.0 access token
got with the refresh-token grant and cached until it expires.

Every secret (header values, client secret, refresh and access tokens) stays inside these
objects: ``secrets()`` lists them so the client can mask any answer that quotes one, and no
error raised here carries one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import structlog

from syncworker.core import jsonvalue
from syncworker.errors import ConfigRefused, ConnectionFailed, RetryableError

log = structlog.get_logger(__name__)

# An access token is renewed this long before the server says it expires, so a request
# never leaves with a token that dies on the way.
EXPIRY_MARGIN_S = 30.0


class Auth(Protocol):
    """Headers for a request, and what to do when the server refused them (a 401)."""

    async def headers(self) -> dict[str, str]:
        """The authentication headers for the next request. Raises ``ConfigRefused`` when
        the credentials are refused, ``ConnectorError`` when the token server is down."""
        ...

    async def refused(self, sent: dict[str, str]) -> bool:
        """The server answered 401 to a request sent with ``sent``: renew what can be
        renewed. True when a retry may succeed (a new token), False when nothing changed."""
        ...

    def secrets(self) -> list[str]:
        """Every secret value, to mask in anything quoted from an answer."""
        ...

    def status(self) -> dict[str, object]:
        """A JSON-ready picture without any secret."""
        ...


class StaticAuth:
    """Fixed headers (``Authorization: Bearer ...``, an API key header): a 401 is final."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = dict(headers)

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def refused(self, sent: dict[str, str]) -> bool:
        return False

    def secrets(self) -> list[str]:
        values: list[str] = []
        for value in self._headers.values():
            values.append(value)
            _, _, credentials = value.partition(" ")
            if credentials.strip():
                values.append(credentials.strip())
        return values

    def status(self) -> dict[str, object]:
        return {"kind": "static", "headers": sorted(self._headers)}


class OAuthRefresh:
    """OAuth 2.0 refresh-token grant (RFC 6749 section 6): POST ``token_url`` with
    ``grant_type=refresh_token``, ``client_id``, ``client_secret`` and ``refresh_token``; the
    answer's ``access_token`` is sent as ``Authorization: <scheme> <token>`` until
    ``expires_in`` seconds have passed (less a margin), or the API answers 401 with it: then
    it is renewed once (concurrent requests share one renewal) and the request retried."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        scheme: str = "Bearer",
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._token_url = token_url
        self._form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        }
        if scope:
            self._form["scope"] = scope
        self._scheme = scheme
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._old_tokens: list[str] = []
        self.refreshes = 0
        self.last_refresh_at: float | None = None

    async def headers(self) -> dict[str, str]:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                await self._refresh()
            assert self._token is not None
            return {"Authorization": f"{self._scheme} {self._token}"}

    async def refused(self, sent: dict[str, str]) -> bool:
        async with self._lock:
            current = f"{self._scheme} {self._token}" if self._token else None
            if current is not None and sent.get("Authorization") != current:
                return True  # another request renewed it meanwhile: retry with the new one
            await self._refresh()
            return True

    def secrets(self) -> list[str]:
        values = [self._form["client_secret"], self._form["refresh_token"], *self._old_tokens]
        if self._token:
            values.append(self._token)
        return values

    def status(self) -> dict[str, object]:
        left = None if self._token is None else round(max(0.0, self._expires_at - self._clock()))
        return {
            "kind": "oauth_refresh",
            "refreshes": self.refreshes,
            "last_refresh_at": self.last_refresh_at,
            "token_expires_in_s": left,
        }

    async def _refresh(self) -> None:
        where = f"oauth token endpoint {httpx.URL(self._token_url).copy_with(query=None)}"
        try:
            response = await self._client.post(self._token_url, data=self._form)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{where}: no answer ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{where}: {type(exc).__name__}") from None
        parsed = _json(response.content)
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        error = body.get("error")
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableError(f"{where}: HTTP {response.status_code}")
        token = body.get("access_token")
        if response.status_code >= 400 or error or not isinstance(token, str) or not token:
            # invalid_client, invalid_grant (a revoked refresh token): only a person fixes it.
            reason = error if isinstance(error, str) and error.isidentifier() else "no token"
            raise ConfigRefused(
                f"{where}: HTTP {response.status_code}, {reason}: the refresh token or client "
                "credentials were refused; check client_id, client_secret and refresh_token"
            )
        expires_in = body.get("expires_in", body.get("expires_in_sec", 3600))
        try:
            lifetime_s = float(expires_in)
        except (TypeError, ValueError):
            lifetime_s = 3600.0
        if self._token:
            self._old_tokens = [*self._old_tokens[-4:], self._token]
        self._token = token
        self._expires_at = self._clock() + max(1.0, lifetime_s - EXPIRY_MARGIN_S)
        if lifetime_s <= EXPIRY_MARGIN_S * 2:
            self._expires_at = self._clock() + max(0.5, lifetime_s / 2)
        self.refreshes += 1
        self.last_refresh_at = time.time()
        log.info("http_token_refreshed", refreshes=self.refreshes, expires_in_s=lifetime_s)


def _json(raw: bytes) -> object:
    try:
        return jsonvalue.loads(raw) if raw else None
    except ValueError:
        return None
