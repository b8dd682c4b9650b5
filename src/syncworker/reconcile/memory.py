"""An in-memory ``Side``: rows in a dict, digests computed in Python. For tests, and as the
smallest example of the contract (issue 11's Redis and REST sides follow the same shape)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from syncworker.reconcile.sides import Key, KeyKind, KeyRange, SideInfo, Summary

_MASK = (1 << 64) - 1


def row_digest(row: Mapping[str, Any]) -> int:
    """A 64-bit digest of a row's values, independent of dict order."""
    body = orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str)
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big")


class MemorySide:
    """Rows ``{key: {column: value}}``; ``changed_at`` ``{key: unix seconds}`` for recent keys.
    ``calls`` counts the calls per method, so tests can tell how much work was done."""

    def __init__(
        self,
        rows: Mapping[Key, Mapping[str, Any]],
        *,
        key_kind: KeyKind = "int",
        label: str = "memory",
        changed_at: Mapping[Key, float] | None = None,
    ) -> None:
        self.key_kind: KeyKind = key_kind
        self.label = label
        self.data = dict(rows)
        self.changed_at = dict(changed_at) if changed_at is not None else None
        self.calls: dict[str, int] = {}
        self.opened = False

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def open(self) -> SideInfo:
        self._count("open")
        self.opened = True
        columns = sorted({c for row in self.data.values() for c in row})
        return SideInfo(self.label, columns, can_tell_recent=self.changed_at is not None)

    async def close(self) -> None:
        self.opened = False

    async def key_bounds(self) -> tuple[Key, Key] | None:
        self._count("key_bounds")
        if not self.data:
            return None
        return min(self.data), max(self.data)

    async def summarize(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> list[Summary]:
        self._count("summarize")
        out = []
        for rng in ranges:
            keys = [k for k in self.data if rng.contains(k)]
            compared = [k for k in keys if k not in exclude]
            digest = sum(row_digest(self.data[k]) for k in compared) & _MASK
            out.append(Summary(len(keys), len(compared), digest))
        return out

    async def fetch(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> dict[Key, int]:
        self._count("fetch")
        return {
            k: row_digest(row)
            for k, row in self.data.items()
            if k not in exclude and any(r.contains(k) for r in ranges)
        }

    async def rows(self, keys: Sequence[Key]) -> dict[Key, Mapping[str, object]]:
        self._count("rows")
        return {k: self.data[k] for k in keys if k in self.data}

    async def recent_keys(self, within_s: float) -> frozenset[Key] | None:
        self._count("recent_keys")
        if self.changed_at is None:
            return None
        since = time.time() - within_s
        return frozenset(k for k, at in self.changed_at.items() if at >= since)

    async def count_recent(self, within_s: float) -> int | None:
        recent = await self.recent_keys(within_s)
        return None if recent is None else len(recent & self.data.keys())
