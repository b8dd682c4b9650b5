"""Every error of the API has one shape, {"error", "detail"}: also unknown paths and methods."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import RunningApi


async def test_unknown_path_is_404_in_the_error_shape(api: RunningApi) -> None:
    answer = await api.client.get("/no/such/endpoint")
    assert answer.status_code == 404
    assert answer.json() == {
        "error": "no such endpoint",
        "detail": {"path": "/no/such/endpoint", "method": "GET"},
    }


async def test_wrong_method_is_405_in_the_error_shape(api: RunningApi) -> None:
    answer = await api.client.delete("/status")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert answer.json() == {
        "error": "method not allowed here; allowed: GET",
        "detail": {"path": "/status", "method": "DELETE"},
    }


async def test_unknown_path_without_the_token_is_401(api: RunningApi) -> None:
    # Nothing about which paths exist is told to a client without the token.
    async with httpx.AsyncClient(base_url=api.server.url) as anonymous:
        answer = await anonymous.get("/no/such/endpoint")
    assert answer.status_code == 401
    assert answer.json() == {"error": "missing or wrong API token", "detail": None}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
