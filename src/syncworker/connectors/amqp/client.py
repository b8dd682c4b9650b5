"""Shared AMQP (RabbitMQ) plumbing: connection settings, connecting, error classification.

The connection is a plain ``aio_pika.connect`` (not ``connect_robust``): the source notices a
lost connection through its close callback and connects again on the next claim, so the
runtime's circuit breaker is the one backoff, every attempt is logged with its reason, and a
delivery tag of the dead channel can never be acknowledged on the new one (see
``source.py``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractConnection
from pydantic import Field, field_validator
from yarl import URL

from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig
from syncworker.errors import (
    ConfigRefused,
    ConnectionClosed,
    ConnectionFailed,
    ConnectorError,
    SyncWorkerError,
)
from syncworker.observe.logging import redact_url

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
"""RabbitMQ's own default account on this host, when neither ``url`` nor RABBITMQ_URL is set."""


def _url_from_environment() -> str:
    return os.environ.get("RABBITMQ_URL") or DEFAULT_URL


class AmqpConnectionConfig(ConnectorConfig):
    """Where the broker is and how long to wait for it."""

    url: str = Field(
        default_factory=_url_from_environment,
        description="amqp://user:password@host:port/vhost or amqps://... (default: the "
        f"RABBITMQ_URL environment variable, else {redact_url(DEFAULT_URL)}).",
    )
    connect_timeout: DurationS = Field(
        10.0, description="How long one connection attempt may take (e.g. 10s)."
    )
    heartbeat: DurationS = Field(
        10.0,
        description="AMQP heartbeat interval: a silent broker (a network split) counts as "
        "lost after about twice this (e.g. 10s; whole seconds). A url's own ?heartbeat= wins.",
    )

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError(f"expected an amqp:// or amqps:// url, got {redact_url(value)!r}")
        try:
            URL(value)
        except ValueError as exc:
            raise ValueError(f"invalid url: {redact_url(str(exc))}") from None
        return value

    @field_validator("connect_timeout", "heartbeat")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.001:
            raise ValueError("must be a duration of at least 1ms")
        return value


def describe(config: AmqpConnectionConfig) -> str:
    """The broker's address for logs and errors: host, port and vhost, never the password."""
    url = URL(config.url)
    vhost = url.path[1:] if len(url.path) > 1 else "/"
    return f"{url.host or '127.0.0.1'}:{url.port or 5672} vhost {vhost!r}"


def connection_url(config: AmqpConnectionConfig) -> URL:
    """``config.url`` with the heartbeat setting, unless the url sets one itself."""
    url = URL(config.url)
    if "heartbeat" in url.query:
        return url
    return url.update_query(heartbeat=max(1, round(config.heartbeat)))


async def connect(config: AmqpConnectionConfig, label: str, name: str) -> AbstractConnection:
    """One connection attempt. Raises ``ConfigRefused`` when the broker refuses the account
    or vhost, ``ConnectionFailed`` when it is unreachable (both redacted)."""
    properties: dict[str, Any] = {"connection_name": f"syncworker {name} {socket.gethostname()}"}
    try:
        return await aio_pika.connect(
            connection_url(config),
            timeout=config.connect_timeout,
            client_properties=properties,
        )
    except Exception as exc:
        raise translate_error(exc, label, "connect", opening=True) from None


_REFUSED = (
    amqp_errors.AuthenticationError,
    amqp_errors.ProbableAuthenticationError,
    amqp_errors.ConnectionNotAllowed,
    amqp_errors.ChannelAccessRefused,
    amqp_errors.ChannelPreconditionFailed,
    amqp_errors.ChannelNotFoundEntity,
)
"""What retrying cannot fix: a wrong password, an unknown vhost, no permission, a queue that
exists with other arguments, a passive declare of something missing."""


def reason_of(exc: BaseException | None) -> str:
    """One redacted line saying why, for logs and errors."""
    if exc is None:
        return "closed"
    text = str(exc) or repr(exc)
    return redact_url(f"{type(exc).__name__}: {text}")


def translate_error(
    exc: BaseException, label: str, what: str, *, opening: bool = False
) -> SyncWorkerError:
    """A library or network error as the runtime's class, its message redacted.

    The original is not chained by callers (``from None``): aiormq's messages and reprs can
    carry the connection URL with its password.
    """
    if isinstance(exc, SyncWorkerError):
        return exc
    reason = reason_of(exc)
    if isinstance(exc, _REFUSED):
        hint = ""
        if isinstance(exc, amqp_errors.ChannelPreconditionFailed):
            hint = " (a queue or exchange exists with other settings: delete it or match them)"
        return ConfigRefused(f"{label}: {what} refused: {reason}{hint}")
    if opening:
        return ConnectionFailed(f"{label}: {what} failed: {reason}")
    if isinstance(exc, amqp_errors.ChannelInvalidStateError | amqp_errors.AMQPConnectionError):
        return ConnectionClosed(f"{label}: {what} failed, connection lost: {reason}")
    return ConnectorError(f"{label}: {what} failed: {reason}")
