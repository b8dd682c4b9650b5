"""What every request passes before the app reads a byte of its body.

The API's routes run after FastAPI has parsed the body, and FastAPI solves the auth
dependency only after that, so a check there comes too late: one unauthenticated 200 MB
POST would be held in memory whole. `RequestGuard` is a plain ASGI middleware in front of
the app that, from the request line and headers alone:

1. without a token (loopback only), refuses a ``Host`` that is not a loopback name or the
   configured listen host (400): a page on ``attacker.example`` that rebinds its name to
   127.0.0.1 sends its own name as ``Host``;
2. without a token, refuses an ``Origin`` other than the ``Host`` the request was sent to
   (403): a cross-site form or ``fetch`` always carries its page's origin;
3. with a token, refuses a protected path whose ``Authorization: Bearer`` is missing or
   wrong (401), before the body is read;
4. refuses a body over ``max_body_bytes`` (413): by its ``Content-Length`` before reading
   it, or, sent chunked, as soon as more than that has arrived.

Refusals follow the API's error shape ``{"error", "detail"}``. The body a refused request
still sends is received and dropped chunk by chunk by the server, never held, so the client
reads its answer instead of a reset connection; a client that sends ``Expect:
100-continue`` gets the answer without sending the body at all.

With a token, ``Host`` and ``Origin`` are not checked: the API may then listen on any
interface behind any name or proxy, a browser cannot attach the bearer token to a
cross-site request without a CORS preflight (which the API never grants), and the token
is what keeps other sites and other hosts out.

Hand-written rather than Starlette's ``TrustedHostMiddleware``: that one splits ``Host``
at the first ``:`` (so ``[::1]:8080`` never matches), answers plain text and knows
nothing of ``Origin``, tokens or body size.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The largest body the API accepts: its only bodies are small JSON objects such as
# {"mode": "full", "wait": false}; 64 KiB leaves room for far more and bounds what one
# request can make the worker hold.
MAX_BODY_BYTES = 64 * 1024

# Paths answered without a token: liveness, readiness and the dashboard's page shell,
# which holds no data (it asks for the token and then calls the protected endpoints).
PUBLIC_PATHS = frozenset({"/health", "/ready", "/"})

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

_DEFAULT_PORTS = {"http": 80, "https": 443}


class RequestGuard:
    """ASGI middleware: Host, Origin, token and body size, checked in that order."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Iterable[str] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = frozenset(
            _normal_host(h) for h in (*LOOPBACK_NAMES, *allowed_hosts) if h
        )
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body = await _read_at_most(receive, self.max_body_bytes)
        if body is None:
            await _too_large(self.max_body_bytes)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        if self.token is None:
            refused = self._foreign_host(headers) or self._foreign_origin(headers)
            if refused is not None:
                return refused
        elif scope["path"] not in PUBLIC_PATHS and not self._authorized(headers):
            return _refuse(
                401, "missing or wrong API token", extra_headers={"WWW-Authenticate": "Bearer"}
            )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return _too_large(self.max_body_bytes)
        return None

    def _foreign_host(self, headers: Headers) -> JSONResponse | None:
        host = headers.get("host")
        # A browser always sends Host, so a request without one cannot be a rebinding page.
        if host is None or _host_of(host) in self.allowed_hosts:
            return None
        return _refuse(
            400,
            f"refused Host header {host!r}: without an API token only loopback names are served",
            {"allowed_hosts": sorted(self.allowed_hosts)},
        )

    def _foreign_origin(self, headers: Headers) -> JSONResponse | None:
        origin = headers.get("origin")
        if origin is None:
            return None
        host = headers.get("host", "")
        if _origin_address(origin) == _address(host, _scheme_of(origin)):
            return None
        return _refuse(
            403,
            f"refused Origin {origin!r}: without an API token only pages served by this "
            "API may call it",
            {"host": host},
        )

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self.token is None:
            return False
        # compare_digest: the time taken does not tell how much of the token was right.
        return hmac.compare_digest(given.strip().encode(), self.token.encode())


def _refuse(
    status: int, error: str, detail: Any = None, extra_headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail}, status_code=status, headers=extra_headers
    )


def _too_large(limit: int) -> JSONResponse:
    return _refuse(413, f"request body too large: at most {limit} bytes", {"max_body_bytes": limit})


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as more than ``limit`` bytes have arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # The client went away: let the app see the disconnect as it would have.
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _normal_host(name: str) -> str:
    name = name.strip().lower().rstrip(".").strip("[]")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _host_of(host_header: str) -> str:
    """The name in a Host header: ``[::1]:8080`` -> ``::1``, ``Localhost.:80`` -> ``localhost``."""
    return _address(host_header, "http")[0]


def _address(host_header: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{host_header.strip()}")
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return ("", None)
    return _normal_host(parts.hostname or ""), port


def _scheme_of(origin: str) -> str:
    return origin.partition("://")[0].lower()


def _origin_address(origin: str) -> tuple[str, int | None] | None:
    """``http://127.0.0.1:8080`` -> (``127.0.0.1``, 8080); None for ``null`` and the like."""
    scheme, sep, rest = origin.strip().partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS or not rest or "/" in rest:
        return None
    return _address(rest, scheme.lower())
