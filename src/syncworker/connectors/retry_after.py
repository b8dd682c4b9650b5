"""``Retry-After`` for every HTTP sink: how long the receiver asked us to wait.

Kept free of any HTTP client so each sink (httpx, the Algolia client, ...) can use it.
"""

from __future__ import annotations

import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

_DELAY_SECONDS = re.compile(r"^\d+(\.\d+)?$")


def retry_after_s(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.match(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))
