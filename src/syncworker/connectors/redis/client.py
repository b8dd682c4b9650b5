"""Shared Redis plumbing for the Redis connectors: connection settings, client creation, error
classification, Lua scripts and payload decoding.

Clients never retry a command by themselves (redis-py retries ten times by default): a claim
is a Lua script that moves data, and re-sending it after a lost reply would claim a second
batch while the first one sits unseen. Reconnecting and backing off belong to the runtime,
which sees the ``ConnectionFailed``/``ConnectionClosed`` raised here.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any

import redis.asyncio as aredis
from pydantic import Field, SecretStr, field_validator, model_validator
from redis import exceptions as rexc
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig
from syncworker.errors import ConfigRefused, ConnectionClosed, ConnectionFailed, ConnectorError
from syncworker.observe.logging import redact_url

_URL_SCHEMES = ("redis://", "rediss://", "unix://")


class RedisConnectionConfig(ConnectorConfig):
    """Where the Redis server is: ``url``, or ``host``/``port``/``password``/``db``."""

    url: str | None = Field(
        None,
        description="redis://[user:password@]host:port/db, rediss://... (TLS) or "
        "unix:///path.sock; instead of host/port.",
    )
    host: str | None = Field(
        None, description="Redis host when no url is given (default 127.0.0.1)."
    )
    port: int = Field(6379, ge=1, le=65535, description="Redis port when no url is given.")
    username: str | None = Field(None, description="ACL user name (Redis 6+).")
    password: SecretStr | None = Field(
        None, description="Redis password; overrides one in the url. Empty means none."
    )
    db: int | None = Field(
        None, ge=0, description="Database number; overrides the url's (default 0)."
    )
    socket_timeout: DurationS = Field(
        10.0,
        description="How long to wait for a connection or a reply before the server counts "
        "as unreachable (e.g. 10s).",
    )

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_URL_SCHEMES):
            raise ValueError(
                f"expected a redis://, rediss:// or unix:// url, got {redact_url(value)!r}"
            )
        if value is not None:
            try:  # redis-py's own parser: what it would refuse at connect is refused here
                parse_url(value)
            except ValueError as exc:
                raise ValueError(f"invalid url: {exc}") from None
        return value

    @field_validator("password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: Any) -> Any:
        # ``password: "${REDIS_PASSWORD:-}"`` must mean "no password" when the variable is unset.
        return None if value == "" else value

    @field_validator("socket_timeout")
    @classmethod
    def _timeout_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a duration greater than 0")
        return value

    @model_validator(mode="after")
    def _url_or_host(self) -> RedisConnectionConfig:
        if self.url is not None and self.host is not None:
            raise ValueError("set either url or host/port, not both")
        return self


def describe(config: RedisConnectionConfig) -> str:
    """Where ``config`` points, without any secret: for labels, logs and errors."""
    if config.url is not None:
        return redact_url(config.url)
    return f"redis://{config.host or '127.0.0.1'}:{config.port}/{config.db or 0}"


def create_client(config: RedisConnectionConfig) -> aredis.Redis:
    """A client (with its own connection pool) for ``config``; connects lazily."""
    options: dict[str, Any] = {
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
    }
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.db is not None:
        options["db"] = config.db
    if config.url is None:
        return aredis.Redis(host=config.host or "127.0.0.1", port=config.port, **options)
    # redis-py lets the url win over keyword arguments; here the explicit settings win, so
    # ``url: redis://host`` with ``password: ${REDIS_PASSWORD}`` works whatever the url holds.
    url_options = parse_url(config.url)
    for name in ("username", "password", "db"):
        if name in options:
            url_options.pop(name, None)
    pool = aredis.ConnectionPool(**options, **url_options)
    return aredis.Redis.from_pool(pool)


def is_refusal(exc: BaseException) -> bool:
    """True when Redis refuses our settings rather than being unavailable."""
    if isinstance(exc, rexc.AuthenticationError | rexc.NoPermissionError):
        return True
    if isinstance(exc, rexc.AuthenticationWrongNumberOfArgsError):
        return True
    text = str(exc)
    return isinstance(exc, rexc.ResponseError) and (
        "DB index is out of range" in text or text.startswith(("WRONGPASS", "NOAUTH", "NOPERM"))
    )


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` may have cut a command off after the server ran it (lost reply)."""
    return isinstance(exc, rexc.ConnectionError | rexc.TimeoutError)


def translate_error(
    exc: rexc.RedisError, label: str, action: str, *, opening: bool = False
) -> ConnectorError | ConfigRefused:
    """The syncworker error for a redis-py error, naming ``label`` and ``action``.

    ``ConnectionFailed`` when the server cannot be reached (or is still loading its data),
    ``ConnectionClosed`` when a connection in use broke, ``ConfigRefused`` when the server
    refuses our settings (wrong password or user, a password missing or not expected, an ACL
    denying a command, a database number out of range: retrying cannot help, the pipeline
    stops), ``ConnectorError`` for any other Redis error (a wrong key type, a script error).
    """
    if isinstance(exc, rexc.BusyLoadingError):
        return ConnectionFailed(f"{label}: {action} failed: Redis is loading its data")
    message = _message(exc)
    if is_refusal(exc):
        return ConfigRefused(f"{label}: {action} refused by the server: {message}")
    if is_connection_error(exc):
        failed = opening or "connecting to" in message or isinstance(exc, rexc.AuthenticationError)
        error_class = ConnectionFailed if failed else ConnectionClosed
        return error_class(f"{label}: {action} failed: {message}")
    return ConnectorError(f"{label}: {action} failed: {message}")


@contextmanager
def redis_errors(label: str, action: str, *, opening: bool = False) -> Iterator[None]:
    """Raise ``translate_error`` of any redis-py error raised inside the block."""
    try:
        yield
    except rexc.RedisError as exc:
        raise translate_error(exc, label, action, opening=opening) from exc


def _message(exc: BaseException) -> str:
    return redact_url(str(exc) or type(exc).__name__)


# -- Lua scripts --------------------------------------------------------------------------


@cache
def script_text(name: str) -> str:
    """The text of ``lua/<name>.lua`` (read from the package once per process)."""
    return (files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def register_scripts(client: aredis.Redis, names: tuple[str, ...]) -> dict[str, AsyncScript]:
    """Script objects bound to ``client``: they call EVALSHA and reload after a server flush."""
    return {name: client.register_script(script_text(name)) for name in names}


async def preload_scripts(client: aredis.Redis, scripts: dict[str, AsyncScript]) -> None:
    """SCRIPT LOAD every script once at open, so a server without Lua fails at start-up."""
    async with client.pipeline(transaction=False) as pipe:
        for script in scripts.values():
            pipe.script_load(script.script)
        await pipe.execute()


# -- payloads -----------------------------------------------------------------------------


# decode_payload and record_key live in core.record, shared with every queue source.


def iso_utc(epoch_s: float | None = None) -> str:
    """An ISO 8601 UTC timestamp for ``epoch_s`` (now when omitted)."""
    when = datetime.now(UTC) if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)
    return when.isoformat()


def default_worker_id() -> str:
    """``host:pid:random``: unique per source object, readable in ``CLIENT LIST`` and keys."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
