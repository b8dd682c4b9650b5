"""Errors classified by what they are (issue 9 point A): Redis refusals are the
configuration's (the pipeline stops), outages are transient (retried)."""

from __future__ import annotations

import pytest
from redis import exceptions as rexc

from syncworker.connectors.redis.client import translate_error
from syncworker.errors import ConfigRefused, ConnectionFailed, is_transient, stops_pipeline


@pytest.mark.parametrize(
    "error",
    [
        rexc.AuthenticationError("invalid username-password pair or user is disabled."),
        rexc.AuthenticationError("Authentication required."),
        rexc.NoPermissionError("this user has no permissions to run the 'evalsha' command"),
        rexc.ResponseError("DB index is out of range"),
    ],
    ids=["wrongpass", "noauth", "noperm", "db-out-of-range"],
)
def test_redis_refusals_stop_the_pipeline(error: rexc.RedisError) -> None:
    translated = translate_error(error, "redis_list redis://:***@h:6379/0", "open", opening=True)
    assert isinstance(translated, ConfigRefused)
    assert stops_pipeline(translated) and not is_transient(translated)


@pytest.mark.parametrize(
    "error",
    [
        rexc.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        rexc.TimeoutError("Timeout reading from socket"),
        rexc.BusyLoadingError("Redis is loading the dataset in memory"),
    ],
    ids=["refused", "timeout", "loading"],
)
def test_redis_outages_are_transient(error: rexc.RedisError) -> None:
    translated = translate_error(error, "redis_list", "claim")
    assert is_transient(translated) and not stops_pipeline(translated)
    if isinstance(error, rexc.BusyLoadingError):
        assert isinstance(translated, ConnectionFailed)
