"""SMS through a provider's HTTP API, behind ``SmsProvider`` so another provider is one
small class. The one built: Vonage's SMS API (``POST {base_url}/sms/json``, form fields
api_key, api_secret, from, to, text; one status per message part, "0" is accepted).

Vonage statuses (developer.vonage.com/api-errors/sms): 1 throttled, 5 internal error and
10 too many binds pass (``RetryableError``); 4 invalid credentials, 8 account barred and
9 out of credit are the account's (``ConnectionFailed``: retried, the reason says what to
fix); every other non-zero status (2 missing, 3 invalid parameters, 6 unroutable, 7 number
barred, 15 invalid sender...) is the message's (``PermanentError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from syncworker.core import jsonvalue
from syncworker.errors import ConnectionFailed, PermanentError, RetryableError
from syncworker.jobs.kits.notifications.config import SmsSettings
from syncworker.jobs.kits.notifications.push import retry_after_s

_NUMBER = re.compile(r"^\+?[1-9]\d{6,14}$")
_RETRY_STATUSES = {"1", "5", "10"}
_ACCOUNT_STATUSES = {"4", "8", "9"}


@dataclass(slots=True, frozen=True)
class SmsReceipt:
    message_ids: list[str]
    parts: int


class SmsProvider(Protocol):
    async def send(self, to: str, text: str) -> SmsReceipt:
        """Sends ``text`` to ``to`` (digits, E.164 without '+'). Raises ``RetryableError``
        for what may pass, ``ConnectionFailed`` for the account's failures and
        ``PermanentError`` for the message's; the caller records the attempt and re-raises."""
        ...


def normalize_number(value: str | None) -> str:
    """``+44 7700-900000`` -> ``447700900000``; ``PermanentError`` when it is not a number."""
    digits = re.sub(r"[\s().-]", "", value or "")
    if not _NUMBER.fullmatch(digits):
        raise PermanentError(f"sms: {value!r} is not a phone number (E.164, e.g. +447700900000)")
    return digits.removeprefix("+")


class VonageSms:
    def __init__(
        self, settings: SmsSettings, client: httpx.AsyncClient, *, max_retry_after_s: float
    ) -> None:
        self.settings = settings
        self.client = client
        self.url = f"{settings.base_url}/sms/json"
        self.max_retry_after_s = max_retry_after_s

    async def send(self, to: str, text: str) -> SmsReceipt:
        settings = self.settings
        form = {
            "api_key": settings.api_key,
            "api_secret": settings.api_secret.get_secret_value(),
            "from": settings.from_number,
            "to": to,
            "text": text,
        }
        if not text.isascii():
            form["type"] = "unicode"
        where = f"sms: vonage {settings.base_url}"
        try:
            response = await self.client.post(self.url, data=form, timeout=settings.timeout)
        except httpx.TimeoutException:
            raise RetryableError(f"{where}: timed out") from None
        except httpx.HTTPError as exc:
            raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            delay = retry_after_s(response.headers.get("retry-after"), self.max_retry_after_s)
            raise RetryableError(f"{where}: HTTP {response.status_code}", delay_s=delay)
        if response.status_code in (401, 403):
            raise ConnectionFailed(f"{where}: HTTP {response.status_code}: credentials refused")
        if response.status_code != 200:
            raise PermanentError(f"{where}: HTTP {response.status_code}")
        return self._receipt(where, _messages(response))

    def _receipt(self, where: str, messages: list[dict[str, Any]]) -> SmsReceipt:
        if not messages:
            raise RetryableError(f"{where}: answer without messages")
        for message in messages:
            status = str(message.get("status", ""))
            if status == "0":
                continue
            reason = f"{where}: status {status}: {str(message.get('error-text', ''))[:200]}"
            if status in _RETRY_STATUSES:
                raise RetryableError(reason)
            if status in _ACCOUNT_STATUSES:
                raise ConnectionFailed(reason)
            raise PermanentError(reason)
        ids = [str(m["message-id"]) for m in messages if m.get("message-id")]
        return SmsReceipt(message_ids=ids, parts=len(messages))


def _messages(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = jsonvalue.loads(response.content)
    except ValueError:
        return []
    found = body.get("messages") if isinstance(body, dict) else None
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def build_provider(
    settings: SmsSettings, client: httpx.AsyncClient, *, max_retry_after_s: float
) -> SmsProvider:
    # One provider today; a second adds a Literal value in SmsSettings.provider and a branch.
    return VonageSms(settings, client, max_retry_after_s=max_retry_after_s)
