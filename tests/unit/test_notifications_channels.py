"""The channels' pieces without services: the FCM access token (minted from a signed JWT,
cached, renewed near expiry, invalidated on 401) against the fake FCM, Retry-After, the
e-mail templates (autoescape, a templates directory that shadows the default, the text
part) and the addresses and numbers refused before anything is sent."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import jwt
import pytest
from tests.fakes.fcm import SCOPE, FcmServer

from syncworker.errors import ConnectionFailed, PermanentError
from syncworker.jobs.kits.notifications.config import EmailSettings, PushSettings
from syncworker.jobs.kits.notifications.email import EmailSender, check_address
from syncworker.jobs.kits.notifications.push import AccessTokens, retry_after_s
from syncworker.jobs.kits.notifications.sms import normalize_number


async def test_the_access_token_is_minted_once_cached_and_renewed_near_expiry() -> None:
    async with FcmServer() as fcm, httpx.AsyncClient() as client:
        tokens = AccessTokens(PushSettings.model_validate(fcm.push_settings()), client)
        first = await asyncio.gather(*(tokens.get() for _ in range(20)))
        assert len(set(first)) == 1 and fcm.token_requests == 1  # one mint for all
        assert await tokens.get() == first[0] and fcm.token_requests == 1
        tokens.invalidate("some-older-token")  # not the current one: kept
        assert await tokens.get() == first[0]
        tokens.invalidate(first[0])
        second = await tokens.get()
        assert second != first[0] and fcm.token_requests == 2
        # A token whose lifetime is within the refresh margin is renewed on the next use.
        fcm.expires_in = 200  # margin is 300 s: usable for min(100, 60) s only
        tokens.invalidate(second)
        await tokens.get()
        assert tokens._expires_at - time.monotonic() < 61
    assert tokens.minted == 3


async def test_the_assertion_is_a_service_account_jwt() -> None:
    fcm = FcmServer()
    settings = PushSettings.model_validate(fcm.push_settings())
    async with httpx.AsyncClient() as client:
        assertion = AccessTokens(settings, client).signed_assertion(now=1_700_000_000)
    claims = jwt.decode(
        assertion,
        fcm.public_key,
        algorithms=["RS256"],
        audience=fcm.token_uri,
        options={"verify_exp": False},
    )
    assert claims == {"iss": fcm.client_email, "scope": SCOPE, "aud": fcm.token_uri,
                      "iat": 1_700_000_000, "exp": 1_700_003_600}  # fmt: skip
    assert jwt.get_unverified_header(assertion)["alg"] == "RS256"


async def test_an_unreachable_token_endpoint_is_a_connection_failure_without_the_key() -> None:
    fcm = FcmServer()
    settings = PushSettings.model_validate(
        fcm.push_settings(token_uri="http://127.0.0.1:9/token", timeout="2s")
    )
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConnectionFailed, match="unreachable") as caught:
            await AccessTokens(settings, client).get()
    assert fcm.private_key_pem.splitlines()[1] not in str(caught.value)


def test_retry_after_reads_seconds_and_dates_and_is_capped() -> None:
    assert retry_after_s("3", 60) == 3.0
    assert retry_after_s("600", 60) == 60.0
    assert retry_after_s(None, 60) is None
    assert retry_after_s("soon", 60) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    delay = retry_after_s(later, 60)
    assert delay is not None and 20 < delay <= 30


def email(tmp_path: Path | None = None) -> EmailSender:
    settings = {"host": "h", "from_address": "no-reply@sup.example", "from_name": "SUP"}
    if tmp_path is not None:
        settings["templates_dir"] = str(tmp_path)
    return EmailSender(EmailSettings.model_validate(settings))


def test_the_default_template_escapes_and_the_text_part_does_not() -> None:
    variables = {"title": "<script>x</script>", "body": "a & b", "data": {}, "user_id": "u"}
    html, text = email().render(variables)
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html
    assert "a &amp; b" in html and "href" not in html
    assert text.startswith("<script>x</script>\n\na & b")
    message = email().compose("ann@sup.example", "Hi\r\nBcc: evil@x.example", html, text)
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "Hi  Bcc: evil@x.example"  # no header injection
    assert message["From"] == "SUP <no-reply@sup.example>"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_a_templates_directory_shadows_the_default(tmp_path: Path) -> None:
    (tmp_path / "notification.html").write_text("<p>{{ title }} for {{ user_id }}</p>")
    html, text = email(tmp_path).render({"title": "T&C", "body": "b", "data": {}, "user_id": "u1"})
    assert html == "<p>T&amp;C for u1</p>"
    assert text.startswith("T&C\n\nb")  # the default text template still applies


BAD_ADDRESSES = ["", "ann", "ann@", "ann@sup", "a b@sup.example", "<ann@sup.example>",
                 "ann@sup.example\n", "ann@sup.example\r\nBcc: x@y.z"]  # fmt: skip


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_malformed_addresses_are_permanent(address: str) -> None:
    with pytest.raises(PermanentError, match="not an e-mail address"):
        check_address(address)


def test_phone_numbers_are_normalized_or_refused() -> None:
    assert normalize_number("+44 7700-900000") == "447700900000"
    assert normalize_number("(415) 555 0100 99") == "415555010099"
    for bad in (None, "", "12", "+0123456789", "call me"):
        with pytest.raises(PermanentError, match="not a phone number"):
            normalize_number(bad)
