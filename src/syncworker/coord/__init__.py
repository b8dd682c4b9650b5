"""Locks and leases (Redis, PostgreSQL advisory) and the fencing token they hand to sinks.

While a pipeline holds its lock, ``current_fencing_token()`` returns the token of that
holding (a number that only grows from one holder to the next). Sinks that can, write it
with each change and refuse a change older than what is stored, so a worker that lost its
lock without knowing cannot overwrite a newer holder's writes.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncworker.coord.base import Lock

FENCING_TOKEN: ContextVar[int | None] = ContextVar("syncworker_fencing_token", default=None)


def current_fencing_token() -> int | None:
    """The fencing token of the lock the current pipeline run holds, or None (no lock)."""
    return FENCING_TOKEN.get()


def make_lock(url: str, key: str, ttl_s: float) -> Lock:
    """The lock a ``lock: {url, key, ttl}`` section names: Redis (``redis://``, ``rediss://``)
    or a PostgreSQL advisory lock (``postgresql://``). Backends import lazily (extras)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        from syncworker.coord.redis_lock import RedisLock

        return RedisLock(url, key, ttl_s)
    if scheme in ("postgresql", "postgres"):
        from syncworker.coord.pg_lock import PostgresAdvisoryLock

        return PostgresAdvisoryLock(url, key, ttl_s)
    raise ValueError(f"expected a redis:// or postgresql:// lock URL, got scheme {scheme!r}")
