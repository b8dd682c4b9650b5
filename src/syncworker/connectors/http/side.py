"""``HttpGroupSide``: the records of ONE group of a grouped ``http`` source (the registrations
of one event) as a reconcile ``Side`` (``syncworker.reconcile.sides``).

Keys are the records' ids as text (``key_kind`` "text", code point order); a record's digest
is ``record_digest`` of its data exactly as the API sent it, the same function the Redis side
applies to what the sink stored. The group is read once, at ``open``, into memory (a group is
a few thousand records); every other call answers from that read.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from syncworker.connectors.http.source_rest import HttpSource
from syncworker.reconcile.digest import RangeDigests, record_digest
from syncworker.reconcile.sides import Key, KeyKind, KeyRange, SideInfo, Summary


class HttpGroupSide:
    """One group of ``source`` (``None``: the whole ungrouped listing)."""

    key_kind: KeyKind = "text"

    def __init__(self, source: HttpSource, group: str | None, *, label: str | None = None) -> None:
        self.source = source
        self.group = group
        default = f"{source.name} group {group}" if group is not None else source.name
        self.label = label or default
        self._keys: list[str] = []
        self._data: dict[str, dict[str, Any]] = {}
        self._digests: dict[str, int] = {}
        self._ranges = RangeDigests([], [])
        self._opened_client = False

    async def open(self) -> SideInfo:
        """Read every record of the group (``ConnectorError``/``ConfigRefused`` as the source's
        client raises them)."""
        if self.source._client is None:
            await self.source.open()
            self._opened_client = True
        self._data = {}
        async for key, data in self.source.iter_group(self.group):
            self._data[key] = data
        self._digests = {key: record_digest(data) for key, data in self._data.items()}
        self._keys = sorted(self._data)
        self._ranges = RangeDigests(self._keys, [self._digests[k] for k in self._keys])
        columns = sorted({name for data in self._data.values() for name in data})
        modified = self.source.config.modified_field is not None
        return SideInfo(self.label, columns, can_tell_recent=modified)

    async def close(self) -> None:
        if self._opened_client:
            self._opened_client = False
            await self.source.close()

    async def key_bounds(self) -> tuple[Key, Key] | None:
        if not self._keys:
            return None
        return self._keys[0], self._keys[-1]

    def _span(self, rng: KeyRange) -> tuple[int, int]:
        lo = 0 if rng.lo is None else bisect.bisect_left(self._keys, str(rng.lo))
        hi = len(self._keys) if rng.hi is None else bisect.bisect_left(self._keys, str(rng.hi))
        return lo, max(lo, hi)

    def _in(self, rng: KeyRange) -> list[str]:
        lo, hi = self._span(rng)
        return self._keys[lo:hi]

    async def summarize(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> list[Summary]:
        return [Summary(*self._ranges.summary(*self._span(rng), exclude)) for rng in ranges]

    async def fetch(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> dict[Key, int]:
        found: dict[Key, int] = {}
        for rng in ranges:
            for key in self._in(rng):
                if key not in exclude:
                    found[key] = self._digests[key]
        return found

    async def rows(self, keys: Sequence[Key]) -> dict[Key, Mapping[str, object]]:
        return {k: self._data[str(k)] for k in keys if str(k) in self._data}

    async def recent_keys(self, within_s: float) -> frozenset[Key] | None:
        """Records whose modified time is within ``within_s`` of now (times without a zone
        are in the source's ``time_zone``)."""
        field = self.source.config.modified_field
        if field is None:
            return None
        now = datetime.now(UTC)
        zone = ZoneInfo(self.source.config.time_zone)
        recent: set[Key] = set()
        for key, data in self._data.items():
            when = self.source.parse_modified(data.get(field))
            if when is None:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=zone)
            # a little in the future is clock skew; hours ahead is a wrong time_zone, and
            # hiding every record as "in flight" would hide every difference
            if abs((now - when).total_seconds()) <= within_s:
                recent.add(key)
        return frozenset(recent)

    async def count_recent(self, within_s: float) -> int | None:
        recent = await self.recent_keys(within_s)
        return None if recent is None else len(recent)
