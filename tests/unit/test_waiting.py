"""The suite's wait helpers: they return what held, fail with what was awaited and the last
value, count only the named exceptions as "not yet", and never swallow the others."""

from __future__ import annotations

import pytest
from tests.waiting import NotYet, eventually, wait_for


async def test_eventually_returns_the_first_truthy_value_of_a_sync_or_async_check() -> None:
    calls: list[int] = []

    def sync_check() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    async def async_check() -> str:
        return "done"

    assert await eventually(sync_check, interval_s=0) == 3
    assert await eventually(async_check) == "done"


async def test_eventually_fails_with_what_it_awaited_and_the_last_value() -> None:
    with pytest.raises(
        NotYet, match=r"after 0.05 s waiting for the queue to drain; last value: \[\]"
    ):
        await eventually(lambda: [], "the queue to drain", timeout_s=0.05)


def test_wait_for_ignores_only_the_named_exceptions() -> None:
    attempts: list[int] = []

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionRefusedError("not listening yet")
        return True

    assert wait_for(flaky, ignore=(ConnectionRefusedError,), interval_s=0) is True
    with pytest.raises(NotYet, match="last error: ConnectionRefusedError: nope"):
        wait_for(_refuse, "the port", timeout_s=0.05, ignore=(ConnectionRefusedError,))
    with pytest.raises(ZeroDivisionError):
        wait_for(lambda: 1 / 0, ignore=(ConnectionRefusedError,))


def _refuse() -> bool:
    raise ConnectionRefusedError("nope")
