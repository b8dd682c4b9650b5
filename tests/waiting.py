"""Waiting for a condition with a deadline: the suite's one way to wait for something.

A test that starts something (a server, an engine, a pipeline, a subprocess) and then reads
its state races it: on a loaded machine the state is not there yet. A fixed sleep only moves
the race. These helpers poll the condition until it holds or the deadline passes, and then
fail with what was awaited and the last value seen, so a timeout reads like an assertion.

Hand-written rather than tenacity or polling2 (neither is a dependency): the suite needs the
same call for sync and async checks, the last observed value in the failure, and nothing
else; that is the twenty lines below.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import httpx

T = TypeVar("T")

# Generous: a deadline only costs time when something is wrong, and the machine running the
# suite may be busy with other work.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_INTERVAL_S = 0.02


class NotYet(AssertionError):
    """The condition did not hold before the deadline."""


def _failure(what: str, timeout_s: float, last: object, error: BaseException | None) -> NotYet:
    seen = f"last error: {type(error).__name__}: {error}" if error else f"last value: {last!r}"
    return NotYet(f"timed out after {timeout_s} s waiting for {what}; {seen}"[:2000])


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    what: str = ...,
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    what: str = ...,
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    what: str = "the condition",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = DEFAULT_INTERVAL_S,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call ``check`` (sync or async) until it returns a truthy value, and return that value.

    Exceptions of the types in ``ignore`` count as "not yet" (a server still binding its port
    refuses connections); any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            last, error = value, None
            if value:
                return value
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise _failure(what, timeout_s, last, error)
        await asyncio.sleep(interval_s)


def wait_for(
    check: Callable[[], T],
    what: str = "the condition",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = DEFAULT_INTERVAL_S,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """``eventually`` for tests without an event loop (subprocesses, sync clients)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            last, error = check(), None
            if last:
                return last
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise _failure(what, timeout_s, last, error)
        time.sleep(interval_s)


def wait_until_serving(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    path: str = "/ready",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Wait until the worker ``process`` serves ``url + path`` with 200 (``/ready``: every
    pipeline running), failing at once, with its output, if the process exits first."""

    def serving() -> bool:
        if process.poll() is not None:
            _, errors = process.communicate()
            tail = (errors or b"").decode(errors="replace")[-2000:]
            raise AssertionError(f"the worker exited with {process.returncode}: {tail}")
        return httpx.get(url + path, timeout=5).status_code == 200

    wait_for(serving, f"{url}{path} to answer 200", timeout_s=timeout_s, ignore=(httpx.HTTPError,))
