"""Building the ``algoliasearch`` client so that the runtime, not the client, owns retries.

The official client retries on its own: it waits and repeats a request answered 429 (three
times by default), marks a host that answered 5xx or timed out as down for five minutes and
moves to the next one, and raises a bare "unreachable hosts" error when none is left. Under
syncworker that would hide the status, stall a batch for seconds, and keep refusing a
recovered host long after it came back. So the client is configured to:

- never retry a 429 itself (``max_rate_limit_retries = 0``): the sink raises
  ``RetryableError`` with the ``Retry-After`` delay and the runtime backs off;
- try each configured host once per call (host failover stays, which is what the hosts
  list is for) and forget past failures at the next call (``_FreshHosts``);
- use short timeouts (``connect_timeout_s``, ``timeout_s``);
- remember the last answer of the call (``last_response``), so the sink can tell a 5xx
  from a timeout and read ``Retry-After``, which the client's exceptions drop.
"""

from __future__ import annotations

import contextvars
from typing import Any
from urllib.parse import urlsplit

from algoliasearch.http.api_response import ApiResponse
from algoliasearch.http.hosts import CallType, Host, HostsCollection
from algoliasearch.http.retry import RetryStrategy
from algoliasearch.http.transporter import Transporter
from algoliasearch.search.client import SearchClient
from algoliasearch.search.config import SearchConfig

# Set by the transporter in the task that made the request; read by the same task after the
# client raised. A ContextVar keeps concurrent writers of one sink apart.
_LAST_RESPONSE: contextvars.ContextVar[ApiResponse[Any] | None] = contextvars.ContextVar(
    "algolia_last_response", default=None
)


def last_response() -> ApiResponse[Any] | None:
    """The last answer (or timeout) the client got in the current task, if any."""
    return _LAST_RESPONSE.get()


def reset_last_response() -> None:
    """Forget the last answer before a new call."""
    _LAST_RESPONSE.set(None)


class _FreshHosts(RetryStrategy):
    """The client's strategy without memory between calls: every host is tried again at the
    next call (the runtime's backoff decides when that is), and each answer is remembered."""

    def valid_hosts(self, hosts: list[Host]) -> list[Host]:
        for host in hosts:
            if not host.up or host.retry_count:
                host.reset()
        return list(hosts)

    def decide(self, host: Host, response: ApiResponse[Any]) -> str:
        _LAST_RESPONSE.set(response)
        return super().decide(host, response)


def parse_host(url: str) -> Host:
    """``https://host[:port]`` as a client ``Host`` that takes reads and writes."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
    return Host(
        url=parts.hostname,
        scheme=parts.scheme,
        port=parts.port,
        accept=CallType.READ | CallType.WRITE,
    )


def build_client(
    app_id: str,
    api_key: str,
    *,
    hosts: list[str] | None = None,
    connect_timeout_s: float = 2.0,
    timeout_s: float = 10.0,
) -> SearchClient:
    """A ``SearchClient`` for ``app_id`` with runtime-owned retries (see the module docstring).

    ``hosts`` replaces Algolia's default hosts (tests, proxies, self-hosted gateways); empty
    or ``None`` keeps the defaults (``<app>.algolia.net`` and three fallbacks).
    """
    config = SearchConfig(app_id, api_key)
    config.connect_timeout = int(connect_timeout_s * 1000)
    config.read_timeout = int(timeout_s * 1000)
    config.write_timeout = int(timeout_s * 1000)
    config.max_rate_limit_retries = 0
    if hosts:
        config.hosts = HostsCollection([parse_host(url) for url in hosts])
    # Without hosts, the client sets Algolia's defaults itself.
    transporter = Transporter(config)
    transporter._retry_strategy = _FreshHosts()
    return SearchClient.create_with_config(config=config, transporter=transporter)
