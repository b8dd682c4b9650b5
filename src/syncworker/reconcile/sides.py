"""The contract between the reconcile engine and what it compares: a ``Side``.

A side is one half of a comparison: a source table after its filter and mapping, a target
table, a Redis hash set, a REST collection. It knows its rows by a key and can

- tell the smallest and largest key (``key_bounds``),
- summarize MANY key ranges in one call: per range the number of rows and an order-independent
  digest of their mapped values, computed where the data lives (``summarize``),
- list the keys of a few small ranges with one digest per row (``fetch``),
- say which keys changed recently, so rows still in flight are not reported (``recent_keys``).

Both sides of a comparison must agree on three things, which the caller (``mapping.py`` for
PostgreSQL) arranges: the key domain (``KeyKind``: Python ``int``, canonical lowercase uuid
``str`` or ``str`` ordered by code point), the value each compared column holds, and the digest
function (a row's digest on one side equals the same row's digest on the other).

Ranges are half open: ``lo <= key < hi``; ``None`` is unbounded. Keys outside both sides'
bounds still fall in a range: the engine's first and last segments are unbounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Key = int | str
"""A key as the engine handles it: ``int`` for integer keys, ``str`` for uuid and text keys."""
KeyKind = Literal["int", "uuid", "text"]
"""How keys order and split. ``int``: numeric order. ``uuid``: canonical lowercase text, whose
order is the uuid's byte order. ``text``: code point order (PostgreSQL ``COLLATE "C"``)."""


@dataclass(frozen=True, slots=True)
class KeyRange:
    """``lo <= key < hi``; ``None`` means unbounded on that end."""

    lo: Key | None
    hi: Key | None

    def contains(self, key: Key) -> bool:
        return (self.lo is None or key >= self.lo) and (self.hi is None or key < self.hi)  # type: ignore[operator]

    def describe(self) -> str:
        lo = "-inf" if self.lo is None else repr(self.lo)
        hi = "+inf" if self.hi is None else repr(self.hi)
        return f"[{lo}, {hi})"


@dataclass(frozen=True, slots=True)
class Summary:
    """One range of one side: ``rows`` in it, ``compared`` of them (the rows not excluded as
    recent) and ``digest``, an order-independent combination (a sum) of the compared rows'
    digests. Two sides hold the same compared rows when ``compared`` and ``digest`` match."""

    rows: int
    compared: int
    digest: int


@dataclass(frozen=True, slots=True)
class ColumnNote:
    """A target column the comparison leaves out, or compares in a weaker form, and why."""

    column: str
    reason: str
    compared: bool = False


@dataclass(slots=True)
class SideInfo:
    """What a side tells the report about itself (never a password)."""

    label: str
    compared_columns: list[str] = field(default_factory=list)
    notes: list[ColumnNote] = field(default_factory=list)
    can_tell_recent: bool = False


@runtime_checkable
class Side(Protocol):
    """One half of a comparison. Calls on one side are never concurrent; the engine calls the
    two sides of a comparison at the same time. Every method may raise ``SyncWorkerError``
    (``ConnectorError`` when the dependency fails): the comparison stops with it."""

    key_kind: KeyKind

    async def open(self) -> SideInfo:
        """Connect and check what will be compared (columns exist, types hash). Raises
        ``ConfigError`` for a comparison that cannot be made (a missing column, an
        unsupported key type), ``ConnectionFailed`` when the dependency is unreachable."""
        ...

    async def close(self) -> None:
        """Release connections; safe to call twice, or after a failed ``open``."""
        ...

    async def key_bounds(self) -> tuple[Key, Key] | None:
        """The smallest and largest key, or ``None`` when the side has no rows."""
        ...

    async def summarize(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> list[Summary]:
        """One ``Summary`` per range, in order, computed in one pass where the data lives.
        Keys in ``exclude`` (recently changed) count in ``rows`` but not in ``compared`` nor
        in ``digest``. ``ranges`` never overlap and are sorted."""
        ...

    async def fetch(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> dict[Key, int]:
        """Every key in ``ranges`` (sorted, not overlapping) but those in ``exclude``, with the
        digest of its row: the same function whose sum ``summarize`` returns."""
        ...

    async def rows(self, keys: Sequence[Key]) -> dict[Key, Mapping[str, object]]:
        """The compared values of these rows (column -> value as the side holds it), to say
        which columns of a differing row differ. Keys absent from the side are left out."""
        ...

    async def recent_keys(self, within_s: float) -> frozenset[Key] | None:
        """The keys of rows changed in the last ``within_s`` seconds (by the side's clock),
        or ``None`` when the side cannot tell (no change timestamp)."""
        ...

    async def count_recent(self, within_s: float) -> int | None:
        """How many rows changed in the last ``within_s`` seconds (the seed's "recent updates
        in the last hour"), or ``None`` when the side cannot tell."""
        ...
