"""Holding a pipeline's lock: acquire, renew at a third of the TTL, notice the loss, release.

While the lock is held the fencing token is set for the pipeline's task (and so for every
batch task it starts), where sinks read it with ``coord.current_fencing_token()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from syncworker.coord import FENCING_TOKEN
from syncworker.coord.base import Lock

log = structlog.get_logger(__name__)


class LockKeeper:
    """One pipeline's hold on its lock. ``on_lost`` runs when a renewal fails: the pipeline
    then returns its in-flight batches before anything more is written."""

    def __init__(self, lock: Lock, pipeline: str, on_lost: Callable[[], Awaitable[None]]) -> None:
        self.lock = lock
        self.pipeline = pipeline
        self.lost = asyncio.Event()
        self._on_lost = on_lost
        self._renewer: asyncio.Task[None] | None = None
        self._context_token: contextvars.Token[int | None] | None = None

    @property
    def held(self) -> bool:
        return self._renewer is not None

    async def acquire(self) -> bool:
        """True when this pipeline now holds the lock; False when another holder has it."""
        token = await self.lock.acquire()
        if token is None:
            holder = await _quietly(self.lock.holder())
            log.info("lock_busy", pipeline=self.pipeline, lock_key=self.lock.key, holder=holder)
            return False
        self.lost.clear()
        self._context_token = FENCING_TOKEN.set(token)
        self._renewer = asyncio.create_task(self._renew_forever(), name=f"lock:{self.pipeline}")
        # "fencing", not "fencing_token": log redaction masks names that contain "token".
        log.info("lock_acquired", pipeline=self.pipeline, lock_key=self.lock.key, fencing=token)
        return True

    async def release(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not asyncio.current_task():
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        if self._context_token is not None:
            # Released from another task (stop()): that context is not ours, nothing to reset.
            with contextlib.suppress(ValueError):
                FENCING_TOKEN.reset(self._context_token)
            self._context_token = None
        await _quietly(self.lock.release())

    async def _renew_forever(self) -> None:
        interval_s = max(self.lock.ttl_s / 3, 0.01)
        while True:
            await asyncio.sleep(interval_s)
            try:
                still_held = await self.lock.renew()
            except Exception as exc:
                # Unsure is lost: another worker may hold it once our TTL runs out.
                log.warning(
                    "lock_renew_failed",
                    pipeline=self.pipeline,
                    lock_key=self.lock.key,
                    error=str(exc),
                )
                still_held = False
            if not still_held:
                log.warning("lock_lost", pipeline=self.pipeline, lock_key=self.lock.key)
                self.lost.set()
                self._renewer = None
                await self._on_lost()
                return

    def describe(self) -> dict[str, Any]:
        return self.lock.describe()


async def _quietly(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except Exception as exc:
        log.warning("lock_call_failed", error=str(exc))
        return None
