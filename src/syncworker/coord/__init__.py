"""Locks and leases (Redis, PostgreSQL advisory) and the fencing token they hand to sinks.

While a pipeline holds its lock, ``current_fencing_token()`` returns the token of that
holding (a number that only grows from one holder to the next). Sinks that can, write it
with each change and refuse a change older than what is stored, so a worker that lost its
lock without knowing cannot overwrite a newer holder's writes.
"""

from __future__ import annotations

from contextvars import ContextVar

FENCING_TOKEN: ContextVar[int | None] = ContextVar("syncworker_fencing_token", default=None)


def current_fencing_token() -> int | None:
    """The fencing token of the lock the current pipeline run holds, or None (no lock)."""
    return FENCING_TOKEN.get()
