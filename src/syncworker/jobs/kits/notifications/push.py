"""Push through the FCM HTTP v1 API: a service-account JWT (RS256) exchanged for an OAuth
access token (cached until shortly before it expires), then one ``messages:send`` request
per device token over the kit's shared keep-alive HTTP client.

FCM v1 has no batch endpoint (the legacy batch send was shut down in 2024; the Admin SDKs'
``send_each_for_multicast`` is one request per token), so a multicast is N requests with
bounded concurrency, each with its own outcome: ``delivered``, ``invalid`` (the token is
unregistered or malformed: never retried), ``retry`` (429, 5xx, timeout, transport error)
or ``auth`` (credentials refused after one refresh).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import jwt

from syncworker.core import jsonvalue
from syncworker.errors import ConnectionFailed
from syncworker.jobs.kits.notifications.config import FCM_SCOPE, PushSettings

_JWT_LIFETIME_S = 3600
_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# FCM's per-token errorCodes (google.firebase.fcm.v1.FcmError): the token is at fault, not us.
_INVALID_TOKEN_CODES = {"UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH"}

Status = Literal["delivered", "invalid", "retry", "auth"]


@dataclass(slots=True, frozen=True)
class TokenOutcome:
    token: str
    status: Status
    message_id: str | None = None
    reason: str | None = None
    retry_after_s: float | None = None


class AccessTokens:
    """The OAuth access token for FCM, minted from the service account on first use and
    cached until ``token_refresh_margin`` before it expires. Concurrent callers wait for one
    mint. ``get`` raises ``ConnectionFailed`` (reason, never the key) when the token endpoint
    refuses or cannot be reached; the caller fails the attempt, which the runtime retries."""

    def __init__(self, settings: PushSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.minted = 0  # how many tokens were minted (tests, metrics)
        self._token: str | None = None
        self._expires_at = 0.0  # time.monotonic()
        self._lock = asyncio.Lock()

    def signed_assertion(self, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.settings.client_email,
            "scope": FCM_SCOPE,
            "aud": self.settings.token_uri,
            "iat": issued,
            "exp": issued + _JWT_LIFETIME_S,
        }
        try:
            return jwt.encode(
                claims, self.settings.private_key.get_secret_value(), algorithm="RS256"
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # The key's text must not reach the message: only the kind of failure does.
            raise ConnectionFailed(
                f"fcm: push.private_key cannot sign (expected a PEM RSA key): {type(exc).__name__}"
            ) from None

    async def get(self) -> str:
        token = self._token
        if token is not None and time.monotonic() < self._expires_at:
            return token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            self._token, self._expires_at = await self._mint()
            self.minted += 1
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (a 401 said it is no longer valid) unless a newer one replaced it."""
        if self._token == token:
            self._token = None
            self._expires_at = 0.0

    async def _mint(self) -> tuple[str, float]:
        form = {"grant_type": _GRANT_TYPE, "assertion": self.signed_assertion()}
        where = f"fcm: token endpoint {self.settings.token_uri}"
        try:
            response = await self.client.post(
                self.settings.token_uri, data=form, timeout=self.settings.timeout
            )
        except httpx.HTTPError as exc:
            raise ConnectionFailed(f"{where} unreachable: {type(exc).__name__}: {exc}") from None
        body = _json(response)
        if response.status_code != 200:
            error = body.get("error", "") if isinstance(body, dict) else ""
            detail = body.get("error_description", "") if isinstance(body, dict) else ""
            raise ConnectionFailed(
                f"{where} refused the service account {self.settings.client_email!r}: "
                f"HTTP {response.status_code} {error} {detail}".strip()
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ConnectionFailed(f"{where}: answer without access_token")
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        usable = max(lifetime - self.settings.token_refresh_margin, min(lifetime / 2, 60.0))
        return token, time.monotonic() + usable


class FcmSender:
    """Sends one notification to many tokens. ``send_all`` never raises for a token's
    failure: each token gets a ``TokenOutcome`` and the kit decides (see module docstring)."""

    def __init__(
        self,
        settings: PushSettings,
        client: httpx.AsyncClient,
        *,
        max_retry_after_s: float,
    ) -> None:
        self.settings = settings
        self.client = client
        self.tokens = AccessTokens(settings, client)
        self.url = f"{settings.base_url}/v1/projects/{settings.project_id}/messages:send"
        self.max_retry_after_s = max_retry_after_s
        self._slots = asyncio.Semaphore(settings.max_concurrency)

    async def send_all(
        self, tokens: list[str], title: str, body: str, data: dict[str, str]
    ) -> list[TokenOutcome]:
        access = await self.tokens.get()  # once up front: a refused account fails the attempt
        sends = [self._send_one(token, title, body, data, access) for token in tokens]
        return list(await asyncio.gather(*sends))

    async def _send_one(
        self, token: str, title: str, body: str, data: dict[str, str], access: str
    ) -> TokenOutcome:
        message: dict[str, Any] = {"token": token, "notification": {"title": title, "body": body}}
        if data:
            message["data"] = data
        async with self._slots:
            for refreshed in (False, True):
                try:
                    response = await self.client.post(
                        self.url,
                        json={"message": message},
                        headers={"Authorization": f"Bearer {access}"},
                        timeout=self.settings.timeout,
                    )
                except httpx.TimeoutException:
                    return TokenOutcome(token, "retry", reason="fcm: request timed out")
                except httpx.HTTPError as exc:
                    reason = f"fcm: {type(exc).__name__}: {exc}"
                    return TokenOutcome(token, "retry", reason=reason)
                if response.status_code == 401 and not refreshed:
                    self.tokens.invalidate(access)
                    try:
                        access = await self.tokens.get()
                    except ConnectionFailed as exc:
                        return TokenOutcome(token, "auth", reason=str(exc))
                    continue
                return self._outcome(token, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _outcome(self, token: str, response: httpx.Response) -> TokenOutcome:
        status = response.status_code
        body = _json(response)
        if status == 200:
            name = body.get("name") if isinstance(body, dict) else None
            return TokenOutcome(
                token, "delivered", message_id=name if isinstance(name, str) else None
            )
        code, text = _fcm_error(body)
        reason = f"fcm: HTTP {status} {code or ''} {text}".strip()
        if status == 429 or status >= 500:
            return TokenOutcome(token, "retry", reason=reason, retry_after_s=self._after(response))
        if status in (401, 403) and code not in _INVALID_TOKEN_CODES:
            return TokenOutcome(
                token, "auth", reason=f"{reason} (project {self.settings.project_id!r})"
            )
        # 404 UNREGISTERED, 400 INVALID_ARGUMENT, 403 SENDER_ID_MISMATCH, any other 4xx:
        # sending this message to this token again cannot succeed.
        return TokenOutcome(token, "invalid", reason=reason)

    def _after(self, response: httpx.Response) -> float | None:
        return retry_after_s(response.headers.get("retry-after"), self.max_retry_after_s)


def retry_after_s(value: str | None, cap_s: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), capped."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap_s)


def _json(response: httpx.Response) -> Any:
    try:
        return jsonvalue.loads(response.content) if response.content else {}
    except ValueError:
        return {}


def _fcm_error(body: Any) -> tuple[str | None, str]:
    """(FcmError errorCode or the status name, message) of a google.rpc error body."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, ""
    message = str(error.get("message", ""))[:200]
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and isinstance(detail.get("errorCode"), str):
            return detail["errorCode"], message
    status = error.get("status")
    return (status if isinstance(status, str) else None), message
