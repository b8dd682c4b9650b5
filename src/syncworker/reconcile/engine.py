"""The comparison of two sides, segment by segment; no database in here.

1. Both sides' key bounds; the whole key domain is cut into ``segments`` ranges (the first and
   last unbounded, so a row inserted past the bounds meanwhile is still seen).
2. Both sides summarize every pending range in one call each, at the same time: count and
   digest sum per range, computed where the data lives.
3. A range whose summaries differ is fetched (keys + row digests) when it holds at most
   ``fetch_rows`` rows on each side, else cut into ``split_factor`` ranges that go back to 2.
4. Fetched ranges give the exact keys: missing (source only), extra (target only), different.
5. With ``ignore_recent_s``, keys either side changed in that window are left out of the
   summaries (counted in ``rows``, not in the digest) and, asked again at the end, out of the
   result: they are still in flight, not differences.

Memory is bounded by the fetch batch (``fetch_batch_rows`` keys at once) and the key lists of
the report (``max_keys`` per kind), whatever the size of the tables or of the difference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from syncworker.errors import ConfigError
from syncworker.reconcile import keys as keyspace
from syncworker.reconcile.report import KeySet, Kind, VerifyReport
from syncworker.reconcile.sides import (
    ColumnNote,
    Key,
    KeyKind,
    KeyRange,
    Side,
    SideInfo,
    Summary,
)

log = structlog.get_logger(__name__)

RECENT_UPDATES_WINDOW_S = 3600.0  # the seed's "recent updates (last hour)"


@dataclass(frozen=True, slots=True)
class CompareSettings:
    """How a comparison runs. Defaults suit a million-row table on one server."""

    segments: int = 1000
    split_factor: int = 32
    fetch_rows: int = 256  # a differing range this small (on both sides) is fetched
    fetch_batch_rows: int = 200_000  # keys fetched per call, at most about this many
    max_keys: int = 10_000  # keys listed per kind in the report (counts stay exact)
    ignore_recent_s: float = 0.0
    column_sample: int = 20  # different keys whose differing columns are named
    max_passes: int = 64  # a guard against a side whose ranges never shrink
    # The seed's "recent updates (last hour)" (count_recent), off where nobody shows it (one
    # comparison per group of a discrepancy check: a pass over the group's modified times).
    count_recent: bool = True


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a comparison is: ``phase`` ("bounds", "hash", "fetch", "recheck", "done"),
    segments summarized so far of those known, rows fetched, and rows in the source."""

    phase: str
    segments_done: int
    segments_total: int
    rows_fetched: int = 0
    source_rows: int = 0


ProgressCallback = Callable[[Progress], None]


@dataclass(slots=True)
class _Found:
    """Keys found so far: at most ``cap`` kept per kind, every one counted."""

    cap: int
    keys: dict[Kind, list[Key]] = field(
        default_factory=lambda: {"missing": [], "extra": [], "different": []}
    )
    overflow: dict[Kind, int] = field(
        default_factory=lambda: {"missing": 0, "extra": 0, "different": 0}
    )

    def add(self, kind: Kind, key: Key) -> None:
        if len(self.keys[kind]) < self.cap:
            self.keys[kind].append(key)
        else:
            self.overflow[kind] += 1

    def any(self) -> bool:
        return any(self.keys.values())


async def both(a: Awaitable[Any], b: Awaitable[Any]) -> tuple[Any, Any]:
    """Run the two sides' calls at the same time; the first failure is raised."""
    first, second = await asyncio.gather(a, b)
    return first, second


async def compare(
    source: Side,
    target: Side,
    settings: CompareSettings | None = None,
    progress: ProgressCallback | None = None,
    *,
    pipeline: str | None = None,
) -> VerifyReport:
    """Open both sides, compare them exactly, close them; the report. Raises ``ConfigError``
    when the sides cannot be compared, ``SyncWorkerError`` when a side fails."""
    run = _Comparison(source, target, settings or CompareSettings(), progress)
    try:
        # Both opens finish (or fail) before anything is closed: none is left half open.
        opened = await asyncio.gather(source.open(), target.open(), return_exceptions=True)
        for result in opened:
            if isinstance(result, BaseException):
                raise result
        return await run.run(opened[0], opened[1], pipeline)  # type: ignore[arg-type]
    finally:
        await asyncio.gather(source.close(), target.close(), return_exceptions=True)


class _Comparison:
    def __init__(
        self,
        source: Side,
        target: Side,
        settings: CompareSettings,
        progress: ProgressCallback | None,
    ) -> None:
        self.source = source
        self.target = target
        self.settings = settings
        self.progress = progress or (lambda _p: None)
        self.segments_done = 0
        self.segments_total = 0
        self.rows_fetched = 0
        self.source_rows = 0

    async def run(self, src: SideInfo, tgt: SideInfo, pipeline: str | None) -> VerifyReport:
        if self.source.key_kind != self.target.key_kind:
            raise ConfigError(
                f"verify: the source keys are {self.source.key_kind} and the target keys "
                f"{self.target.key_kind}; they must be of the same kind"
            )
        started, t0 = datetime.now(UTC), time.perf_counter()
        report = VerifyReport(
            source=src.label,
            target=tgt.label,
            pipeline=pipeline,
            compared_columns=list(src.compared_columns),
            not_compared=_notes(src, tgt),
            ignore_recent_s=self.settings.ignore_recent_s,
            started_at=started.isoformat(),
        )
        exclude = await self._recent(report)
        self._tick("bounds")
        bounds = await both(self.source.key_bounds(), self.target.key_bounds())
        found = _Found(self.settings.max_keys)
        if bounds[0] is not None or bounds[1] is not None:
            await self._walk(bounds, exclude, report, found)
        await self._finish(report, found)
        if self.settings.count_recent:
            report.recent_updates_last_hour = await self.source.count_recent(
                RECENT_UPDATES_WINDOW_S
            )
        report.duration_s = time.perf_counter() - t0
        self._tick("done")
        log.info(
            "verify_finished",
            pipeline=pipeline,
            status=report.status,
            missing=report.missing.count,
            extra=report.extra.count,
            different=report.different.count,
            source_rows=report.source_rows,
            target_rows=report.target_rows,
            duration_s=round(report.duration_s, 3),
        )
        return report

    async def _recent(self, report: VerifyReport) -> frozenset[Key]:
        if self.settings.ignore_recent_s <= 0:
            return frozenset()
        a, b = await both(
            self.source.recent_keys(self.settings.ignore_recent_s),
            self.target.recent_keys(self.settings.ignore_recent_s),
        )
        report.recent_supported = a is not None and b is not None
        recent = frozenset(a or ()) | frozenset(b or ())
        report.ignored_recent = len(recent)
        return recent

    async def _walk(
        self,
        bounds: tuple[tuple[Key, Key] | None, tuple[Key, Key] | None],
        exclude: frozenset[Key],
        report: VerifyReport,
        found: _Found,
    ) -> None:
        kind = self.source.key_kind
        present = [b for b in bounds if b is not None]
        lo = min(b[0] for b in present)
        hi = max(b[1] for b in present)
        pending = keyspace.cover(kind, lo, hi, self.settings.segments)
        report.segments = len(pending)
        self.segments_total = len(pending)
        first = True
        while pending:
            report.passes += 1
            if report.passes > self.settings.max_passes:
                raise ConfigError(
                    f"verify: still splitting after {self.settings.max_passes} passes; "
                    "a side's ranges do not shrink (is its key order the engine's?)"
                )
            self._tick("hash")
            sums = await both(
                self.source.summarize(pending, exclude), self.target.summarize(pending, exclude)
            )
            _check_lengths(pending, sums)
            if first:
                report.source_rows = sum(s.rows for s in sums[0])
                report.target_rows = sum(s.rows for s in sums[1])
                self.source_rows = report.source_rows
                first = False
            self.segments_done += len(pending)
            pending, small = self._triage(kind, lo, hi, pending, sums[0], sums[1])
            self.segments_total += len(pending)
            await self._fetch_all(small, exclude, found)

    def _triage(
        self,
        kind: KeyKind,
        lo: Key,
        hi: Key,
        ranges: Sequence[KeyRange],
        a: Sequence[Summary],
        b: Sequence[Summary],
    ) -> tuple[list[KeyRange], list[tuple[KeyRange, int]]]:
        """Ranges to split further, and small differing ranges to fetch (with their size)."""
        deeper: list[KeyRange] = []
        small: list[tuple[KeyRange, int]] = []
        for rng, sa, sb in zip(ranges, a, b, strict=True):
            if (sa.compared, sa.digest) == (sb.compared, sb.digest):
                continue
            size = max(sa.compared, sb.compared)
            parts = (
                [rng]
                if size <= self.settings.fetch_rows
                else keyspace.split(kind, rng, lo, hi, self.settings.split_factor)
            )
            if len(parts) == 1:
                small.append((rng, size))
            else:
                deeper.extend(parts)
        return deeper, small

    async def _fetch_all(
        self, small: list[tuple[KeyRange, int]], exclude: frozenset[Key], found: _Found
    ) -> None:
        batch: list[KeyRange] = []
        rows = 0
        for rng, size in small:
            if batch and rows + size > self.settings.fetch_batch_rows:
                await self._fetch(batch, exclude, found)
                batch, rows = [], 0
            batch.append(rng)
            rows += size
        if batch:
            await self._fetch(batch, exclude, found)

    async def _fetch(self, ranges: list[KeyRange], exclude: frozenset[Key], found: _Found) -> None:
        self._tick("fetch")
        a, b = await both(self.source.fetch(ranges, exclude), self.target.fetch(ranges, exclude))
        self.rows_fetched += len(a) + len(b)
        for key, digest in a.items():
            other = b.get(key)
            if other is None:
                found.add("missing", key)
            elif other != digest:
                found.add("different", key)
        for key in b.keys() - a.keys():
            found.add("extra", key)

    async def _finish(self, report: VerifyReport, found: _Found) -> None:
        """Counts and sorted keys into the report; keys changed meanwhile left out; the
        differing columns of a sample of the different keys."""
        report.rows_fetched = self.rows_fetched
        if self.settings.ignore_recent_s > 0 and found.any():
            # Rows that changed while the comparison ran are in flight too.
            self._tick("recheck")
            late = await both(
                self.source.recent_keys(self.settings.ignore_recent_s),
                self.target.recent_keys(self.settings.ignore_recent_s),
            )
            moving = frozenset(late[0] or ()) | frozenset(late[1] or ())
            for keys in found.keys.values():
                kept = [k for k in keys if k not in moving]
                report.ignored_recent += len(keys) - len(kept)
                keys[:] = kept
        for kind, keys in found.keys.items():
            keys.sort()
            more = found.overflow[kind]
            setattr(report, kind, KeySet(len(keys) + more, keys, more > 0))
        await self._columns(report)

    async def _columns(self, report: VerifyReport) -> None:
        sample = report.different.keys[: self.settings.column_sample]
        if not sample:
            return
        a, b = await both(self.source.rows(sample), self.target.rows(sample))
        for key in sample:
            ra, rb = a.get(key, {}), b.get(key, {})
            report.different_columns[key] = [
                c for c in report.compared_columns if ra.get(c) != rb.get(c)
            ]

    def _tick(self, phase: str) -> None:
        self.progress(
            Progress(
                phase,
                self.segments_done,
                self.segments_total,
                self.rows_fetched,
                self.source_rows,
            )
        )


def _check_lengths(ranges: Sequence[KeyRange], sums: tuple[list[Summary], list[Summary]]) -> None:
    for side in sums:
        if len(side) != len(ranges):
            raise ValueError(
                f"a side returned {len(side)} summaries for {len(ranges)} ranges (contract)"
            )


def _notes(src: SideInfo, tgt: SideInfo) -> list[ColumnNote]:
    seen: dict[tuple[str, str], ColumnNote] = {}
    for note in [*src.notes, *tgt.notes]:
        seen.setdefault((note.column, note.reason), note)
    return list(seen.values())
