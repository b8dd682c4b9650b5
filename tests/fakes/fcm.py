"""A local FCM for tests: Google's OAuth 2.0 token endpoint for service accounts and the FCM
HTTP v1 ``messages:send`` endpoint, served by Starlette + uvicorn on 127.0.0.1.

- ``POST /token``: form ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and
  ``assertion`` (a JWT). The JWT's RS256 signature is checked with the public half of the
  test key the server made (``private_key_pem`` is what the kit is configured with), and its
  ``iss`` (the client e-mail), ``aud`` (this endpoint's URL), ``scope`` (firebase.messaging)
  and ``exp``. Answers ``{access_token, expires_in, token_type}`` or 400 ``invalid_grant``.
- ``POST /v1/projects/{project}/messages:send``: ``Authorization: Bearer`` must be a token
  this server issued and did not expire (401 UNAUTHENTICATED otherwise), the project must be
  the server's (403 PERMISSION_DENIED), ``message.token`` present and ``data`` values
  strings (400 INVALID_ARGUMENT). A token in ``unregistered`` gets 404 with the FcmError
  ``UNREGISTERED``; one in ``malformed`` 400 ``INVALID_ARGUMENT``. Accepted messages are
  recorded in ``messages`` and answered ``{"name": "projects/p/messages/N"}``.

Failures to inject: ``fail_next(*statuses)`` (the next sends, whatever their token, get 503
UNAVAILABLE / 429 QUOTA_EXCEEDED / 500 INTERNAL, with ``Retry-After: retry_after`` on 429 and
503), ``flaky[token] = [503, 429]`` (that token's next sends get these statuses, in order),
``expire_tokens()`` (every issued access token stops working: the next send gets a 401),
``delay_s`` (every send answers that late: a client timeout).
Every send is in ``attempts`` (token, status).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from syncworker.core import jsonvalue
from tests.fakes.local_server import LocalServer

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_ERROR_CODES = {404: "UNREGISTERED", 400: "INVALID_ARGUMENT", 429: "QUOTA_EXCEEDED",
                500: "INTERNAL", 503: "UNAVAILABLE", 401: "THIRD_PARTY_AUTH_ERROR"}  # fmt: skip


@functools.cache
def service_account_key() -> tuple[str, Any]:
    """(PKCS#8 PEM private key, public key): one 2048-bit RSA key per test process."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


@dataclass(slots=True, frozen=True)
class Attempt:
    token: str
    status: int


class FcmServer(LocalServer):
    label = "fake FCM"

    def __init__(
        self,
        *,
        project_id: str = "test-project",
        client_email: str = "push@test-project.iam.gserviceaccount.com",
    ) -> None:
        super().__init__()
        self.project_id = project_id
        self.client_email = client_email
        self.private_key_pem, self.public_key = service_account_key()
        self.expires_in = 3600
        self.delay_s = 0.0  # every send waits this long before answering (slow FCM)
        self.retry_after: str | None = "0"
        self.unregistered: set[str] = set()
        self.malformed: set[str] = set()
        self.flaky: dict[str, list[int]] = {}
        self.messages: list[dict[str, Any]] = []
        self.attempts: list[Attempt] = []
        self.token_requests = 0
        self.refused_assertions: list[str] = []  # why each refused JWT was refused
        self._issued: dict[str, float] = {}
        self._script: deque[int] = deque()
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def push_settings(self, **extra: Any) -> dict[str, Any]:
        """``jobs.kits.notifications.push`` for this server, the key with literal \\n as in
        a .env file."""
        return {
            "project_id": self.project_id,
            "client_email": self.client_email,
            "private_key": self.private_key_pem.replace("\n", "\\n"),
            "token_uri": self.token_uri,
            "base_url": self.url,
            **extra,
        }

    def fail_next(self, *statuses: int) -> None:
        self._script.extend(statuses)

    def expire_tokens(self) -> None:
        self._issued.clear()

    def delivered_to(self) -> list[str]:
        return [m["token"] for m in self.messages]

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
            ]
        )

    async def _token(self, request: Request) -> JSONResponse:
        self.token_requests += 1
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if form.get("grant_type") != GRANT_TYPE:
            return self._refuse("unsupported_grant_type", "Invalid grant_type")
        assertion = str(form.get("assertion", ""))
        try:
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "exp", "iat", "scope"]},
            )
        except jwt.PyJWTError as exc:
            return self._refuse("invalid_grant", f"Invalid JWT: {type(exc).__name__}")
        if claims["scope"] != SCOPE:
            return self._refuse("invalid_scope", f"Invalid OAuth scope {claims['scope']!r}")
        if claims["exp"] - claims["iat"] > 3600:
            return self._refuse("invalid_grant", "JWT lifetime over one hour")
        token = f"ya29.test-{next(self._ids)}"
        self._issued[token] = time.monotonic() + self.expires_in
        body = {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        return JSONResponse(body)

    def _refuse(self, error: str, description: str) -> JSONResponse:
        self.refused_assertions.append(f"{error}: {description}")
        return JSONResponse({"error": error, "error_description": description}, status_code=400)

    async def _send(self, request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        bearer = auth.removeprefix("Bearer ")
        try:
            message = jsonvalue.loads(await request.body())["message"]
            token = message["token"]
        except (ValueError, KeyError, TypeError):
            return self._error("", 400, "Invalid JSON payload received.")
        expiry = self._issued.get(bearer)
        if not auth.startswith("Bearer ") or expiry is None or expiry < time.monotonic():
            return self._error(token, 401, "Request had invalid authentication credentials.")
        if request.path_params["project"] != self.project_id:
            return self._error(token, 403, "Permission denied on the project.")
        data = message.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return self._error(token, 400, "Invalid value at 'message.data': not a string")
        if self.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay_s)
        if self._script:
            return self._error(token, self._script.popleft(), "Injected failure.")
        if self.flaky.get(token):
            return self._error(token, self.flaky[token].pop(0), "Injected failure.")
        if token in self.unregistered:
            return self._error(token, 404, "Requested entity was not found.")
        if token in self.malformed:
            return self._error(token, 400, "The registration token is not a valid FCM token")
        self.attempts.append(Attempt(token, 200))
        self.messages.append(message)
        name = f"projects/{self.project_id}/messages/{next(self._ids)}"
        return JSONResponse({"name": name})

    def _error(self, token: str, status: int, text: str) -> JSONResponse:
        self.attempts.append(Attempt(token, status))
        error: dict[str, Any] = {"code": status, "message": text,
                                 "status": _STATUS_NAMES.get(status, "UNKNOWN")}  # fmt: skip
        if status in _ERROR_CODES:
            error["details"] = [{"@type": _FCM_ERROR, "errorCode": _ERROR_CODES[status]}]
        headers = {}
        if status in (429, 503) and self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return JSONResponse({"error": error}, status_code=status, headers=headers)
