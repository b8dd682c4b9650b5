"""The lock contract pipelines use, whatever holds the lock."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Protocol


def holder_id() -> str:
    """Who holds a lock: host, process and a random part (a restarted process is another
    holder, even with the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lock(Protocol):
    """A lease on one key with a fencing token.

    ``acquire`` returns the fencing token when this holder got the lock (tokens only grow
    from one holding to the next) or None when someone else holds it. ``renew`` keeps a held
    lock alive and returns False when it was lost (expired and taken, or the connection
    behind it gone): the caller must stop writing at once. ``release`` gives it back if
    still held. Raises ``ConnectionFailed`` when the lock's service is unreachable.
    """

    key: str
    ttl_s: float

    async def acquire(self) -> int | None: ...
    async def renew(self) -> bool: ...
    async def release(self) -> None: ...
    async def holder(self) -> str | None: ...
    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...
