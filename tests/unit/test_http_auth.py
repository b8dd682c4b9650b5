"""OAuth refresh-token grant and static auth of the REST source, against an in-process
token endpoint (httpx.MockTransport): caching, expiry, one renewal per 401, no secret in errors."""

from __future__ import annotations

import asyncio
import traceback

import httpx
import pytest

from syncworker.connectors.http.auth import OAuthRefresh, StaticAuth
from syncworker.connectors.http.zoho import zoho_verdict
from syncworker.errors import ConfigRefused, RetryableError

SECRET = "client-secret-9f8e7d"
REFRESH = "1000.refresh-token-6c5b4a"


class TokenServer:
    def __init__(self) -> None:
        self.issued = 0
        self.answer: tuple[int, dict[str, object]] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        assert form["grant_type"] == "refresh_token"
        if self.answer is not None:
            return httpx.Response(self.answer[0], json=self.answer[1])
        if form["client_secret"] != SECRET or form["refresh_token"] != REFRESH:
            return httpx.Response(200, json={"error": "invalid_code"})
        self.issued += 1
        return httpx.Response(200, json={"access_token": f"tok-{self.issued}", "expires_in": 3600})


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def oauth(server: TokenServer, clock: Clock, refresh: str = REFRESH) -> OAuthRefresh:
    client = httpx.AsyncClient(transport=httpx.MockTransport(server))
    return OAuthRefresh(
        client,
        token_url="https://accounts.test/oauth/v2/token",
        client_id="id",
        client_secret=SECRET,
        refresh_token=refresh,
        scheme="Zoho-oauthtoken",
        clock=clock,
    )


async def test_the_token_is_cached_until_it_expires() -> None:
    server, clock = TokenServer(), Clock()
    auth = oauth(server, clock)
    assert await auth.headers() == {"Authorization": "Zoho-oauthtoken tok-1"}
    clock.now = 3000
    assert (await auth.headers())["Authorization"].endswith("tok-1")
    clock.now = 3600  # within the margin before expiry: renewed first
    assert (await auth.headers())["Authorization"].endswith("tok-2")
    assert server.issued == 2


async def test_a_401_renews_once_even_for_concurrent_requests() -> None:
    server, clock = TokenServer(), Clock()
    auth = oauth(server, clock)
    sent = await auth.headers()
    results = await asyncio.gather(*(auth.refused(sent) for _ in range(5)))
    assert results == [True] * 5
    assert server.issued == 2  # one renewal for the five refused requests
    assert (await auth.headers())["Authorization"].endswith("tok-2")


async def test_a_refused_refresh_token_is_config_refused_without_secrets() -> None:
    server, clock = TokenServer(), Clock()
    auth = oauth(server, clock, refresh="1000.revoked-token-0000")
    with pytest.raises(ConfigRefused) as refused:
        await auth.headers()
    text = "".join(traceback.format_exception(refused.value))
    assert "invalid_code" in text
    assert "1000.revoked-token-0000" not in text and SECRET not in text
    assert set(auth.secrets()) >= {SECRET, "1000.revoked-token-0000"}


async def test_a_token_endpoint_outage_is_retryable() -> None:
    server, clock = TokenServer(), Clock()
    server.answer = (503, {})
    with pytest.raises(RetryableError):
        await oauth(server, clock).headers()


def test_status_holds_no_secret() -> None:
    static = StaticAuth({"Authorization": "Bearer abcdef123"})
    assert "abcdef123" not in str(static.status())
    assert "abcdef123" in static.secrets()


def test_zoho_codes_mean_more_than_the_status() -> None:
    assert zoho_verdict(200, {"code": 3000, "data": []}) == "ok"
    assert zoho_verdict(400, {"code": 3100}) == "empty"
    assert zoho_verdict(401, {"code": 1030}) == "auth"
    assert zoho_verdict(429, {"code": 2945}) == "retry"
    assert zoho_verdict(500, {"code": 2899}) == "retry"
    assert zoho_verdict(404, {"code": 1000}) == "refuse"
    assert zoho_verdict(400, {"code": 3020}) == "permanent"


def test_zoho_max_records_from_an_environment_variable() -> None:
    from syncworker.connectors.http.zoho import ZohoCreatorSourceConfig

    base = {
        "type": "zoho_creator",
        "owner": "o",
        "app": "a",
        "report": "r",
        "client_id": "id",
        "client_secret": SECRET,
        "refresh_token": REFRESH,
    }
    assert ZohoCreatorSourceConfig.model_validate({**base, "max_records": "500"}).max_records == 500
    with pytest.raises(ValueError):
        ZohoCreatorSourceConfig.model_validate({**base, "max_records": "300"})
