"""The discrepancy check of a grouped pipeline (seed 002: the registrations of each event in
Zoho Creator against the per-record keys and index sets in Redis), and its repair.

One comparison per group, by the existing engine (``engine.compare`` over two ``Side``s, the
source's records of the group and the sink's), so counts never stand in for content: every
id is compared by its record digest (``digest.record_digest``). Groups present on one side
only are compared too, against an empty side (all missing, or all extra). Records changed in
the last ``ignore_recent_s`` seconds are reported as in flight (``ignored_recent``), not as
differences.

Repair asks the source (``ResyncsGroups.resync_group``) to deliver the listed ids of each
differing group again (missing, different, and extra ones, which the source delivers as
deletes since it no longer has them), applies them through a pipeline run (``apply``: a run
here, or ``sync_now`` of the engine that runs the pipeline), then checks again: the report's
``repair`` says how many ids were asked for, and what the check after it still found.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import structlog

from syncworker.reconcile.engine import CompareSettings, compare
from syncworker.reconcile.memory import MemorySide
from syncworker.reconcile.report import KINDS, VerifyReport
from syncworker.reconcile.sides import Key, KeyKind, Side

log = structlog.get_logger(__name__)

# A group of a few thousand records needs few segments: the engine then splits only the
# ranges that differ. Fewer, larger first summaries keep the per-group cost small.
GROUP_SEGMENTS = 16
GROUP_FETCH_ROWS = 512


@runtime_checkable
class GroupedSides(Protocol):
    """What a grouped pipeline lends the check: its groups on each side and one ``Side`` per
    group and side (new for every comparison: a ``Side`` is opened and closed by it)."""

    key_kind: KeyKind

    async def open(self) -> None:
        """Connect (both sides). Raises ``ConnectionFailed`` when a dependency is down."""

    async def close(self) -> None:
        """Release connections; safe after a failed ``open``."""

    async def source_groups(self) -> list[str]:
        """Every group the source has now (the parent listing)."""

    async def target_groups(self) -> list[str]:
        """Every group the target holds records or an index for."""

    def source_side(self, group: str) -> Side:
        """The source's records of ``group``."""

    def target_side(self, group: str) -> Side:
        """The target's records of ``group``."""


Resync = Callable[[str, list[str]], Awaitable[int]]
Apply = Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class GroupResult:
    """One group's comparison; ``present`` says on which side the group exists."""

    group: str
    present: str  # "both", "source", "target"
    report: VerifyReport

    def to_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "group": self.group,
            "present": self.present,
            "source_rows": r.source_rows,
            "target_rows": r.target_rows,
            **{kind: r.kind(kind).to_json() for kind in KINDS},
            "ignored_recent": r.ignored_recent,
        }


@dataclass(slots=True)
class GroupsRepair:
    """What the repair did: ids asked for again per kind, how many the source queued, and
    what the check after the pipeline's run still found."""

    requested: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    groups: int = 0
    after: GroupsReport | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        after = self.after
        return {
            "requested": self.requested,
            "queued": self.queued,
            "groups": self.groups,
            "remaining": None if after is None else after.totals()["differences"],
            "after": None if after is None else after.to_json(),
            "error": self.error,
        }


@dataclass(slots=True)
class GroupsReport:
    """Every group's comparison and the totals."""

    pipeline: str | None
    results: list[GroupResult] = field(default_factory=list)
    started_at: str = ""
    duration_s: float = 0.0
    repair: GroupsRepair | None = None

    def totals(self) -> dict[str, int]:
        reports = [g.report for g in self.results]
        missing = sum(r.missing.count for r in reports)
        extra = sum(r.extra.count for r in reports)
        different = sum(r.different.count for r in reports)
        return {
            "groups": len(self.results),
            "groups_differing": sum(1 for r in reports if r.differences),
            "source_only_groups": sum(1 for g in self.results if g.present == "source"),
            "target_only_groups": sum(1 for g in self.results if g.present == "target"),
            "source_rows": sum(r.source_rows for r in reports),
            "target_rows": sum(r.target_rows for r in reports),
            "missing": missing,
            "extra": extra,
            "different": different,
            "differences": missing + extra + different,
            "ignored_recent": sum(r.ignored_recent for r in reports),
        }

    @property
    def status(self) -> str:
        return "consistent" if self.totals()["differences"] == 0 else "inconsistent"

    def differing(self) -> list[GroupResult]:
        return [g for g in self.results if g.report.differences]

    def keys(self, kind: str) -> dict[str, list[Key]]:
        """The ids of one kind by group (groups without any left out)."""
        return {
            g.group: list(g.report.kind(kind).keys)  # type: ignore[arg-type]
            for g in self.results
            if g.report.kind(kind).count  # type: ignore[arg-type]
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "totals": self.totals(),
            "groups": [g.to_json() for g in self.differing()],
            "repair": None if self.repair is None else self.repair.to_json(),
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
        }

    def lines(self, show_keys: int = 20) -> list[str]:
        t = self.totals()
        status = "CONSISTENT" if self.status == "consistent" else "INCONSISTENT"
        out = [
            f"Groups: {t['groups']:,} ({t['source_only_groups']:,} in the source only, "
            f"{t['target_only_groups']:,} in the target only)",
            f"Source: {t['source_rows']:,} records",
            f"Target: {t['target_rows']:,} records",
            f"Difference: {t['source_rows'] - t['target_rows']:+,}",
            f"Consistency: {status}"
            + (
                ""
                if self.status == "consistent"
                else f" ({t['missing']:,} missing, {t['extra']:,} extra, "
                f"{t['different']:,} different in {t['groups_differing']:,} groups)"
            ),
        ]
        if t["ignored_recent"]:
            out.append(f"In flight (changed recently, not compared): {t['ignored_recent']:,}")
        for g in self.differing():
            r = g.report
            where = "" if g.present == "both" else f" (only in the {g.present})"
            out.append(f"group {g.group}{where}: {r.source_rows:,} vs {r.target_rows:,}")
            for kind in KINDS:
                keys = r.kind(kind)
                if keys.count:
                    shown = ", ".join(str(k) for k in keys.keys[:show_keys])
                    more = keys.count - min(len(keys.keys), show_keys)
                    extra = f" ... +{more:,}" if more else ""
                    out.append(f"  {kind} ({keys.count:,}): {shown}{extra}")
        if self.repair is not None:
            rep = self.repair
            asked = sum(rep.requested.values())
            left = "unknown" if rep.after is None else f"{rep.after.totals()['differences']:,}"
            out.append(
                f"Repair: {asked:,} ids re-synced in {rep.groups:,} groups; "
                f"differences after: {left}" + (f" ({rep.error})" if rep.error else "")
            )
        return out


def _empty(key_kind: KeyKind, label: str) -> MemorySide:
    """The other side of a group that exists on one side only: no records, none recent."""
    return MemorySide({}, key_kind=key_kind, label=label, changed_at={})


def group_settings(ignore_recent_s: float = 0.0, max_keys: int = 10_000) -> CompareSettings:
    """The engine's settings for one group: few first segments, small ranges fetched."""
    return CompareSettings(
        segments=GROUP_SEGMENTS,
        fetch_rows=GROUP_FETCH_ROWS,
        ignore_recent_s=ignore_recent_s,
        max_keys=max_keys,
        column_sample=0,
        count_recent=False,
    )


async def check_groups(
    sides: GroupedSides,
    *,
    pipeline: str | None = None,
    ignore_recent_s: float = 0.0,
    concurrency: int = 8,
    groups: Sequence[str] | None = None,
) -> GroupsReport:
    """Compare every group (or only ``groups``) of an opened ``sides``; the report. Raises
    what a side raises (``ConnectorError`` when a dependency fails)."""
    started, t0 = datetime.now(UTC), time.perf_counter()
    source_groups, target_groups = await asyncio.gather(
        sides.source_groups(), sides.target_groups()
    )
    in_source, in_target = set(source_groups), set(target_groups)
    wanted = sorted(in_source | in_target) if groups is None else list(groups)
    settings = group_settings(ignore_recent_s)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(group: str) -> GroupResult:
        on_source, on_target = group in in_source, group in in_target
        present = "both" if on_source == on_target else "source" if on_source else "target"
        # A group gone from both sides (asked for by name after a repair) compares empty.
        source: Side = (
            sides.source_side(group)
            if on_source
            else _empty(sides.key_kind, f"source group {group}")
        )
        target: Side = (
            sides.target_side(group)
            if on_target
            else _empty(sides.key_kind, f"target group {group}")
        )
        async with limit:
            report = await compare(source, target, settings, pipeline=pipeline)
        return GroupResult(group, present, report)

    results = await asyncio.gather(*(one(g) for g in wanted))
    report = GroupsReport(
        pipeline,
        list(results),
        started_at=started.isoformat(),
        duration_s=time.perf_counter() - t0,
    )
    totals = report.totals()
    log.info(
        "discrepancy_check_finished",
        pipeline=pipeline,
        status=report.status,
        groups=totals["groups"],
        missing=totals["missing"],
        extra=totals["extra"],
        different=totals["different"],
        ignored_recent=totals["ignored_recent"],
        duration_s=round(report.duration_s, 3),
    )
    return report


async def repair_groups(
    report: GroupsReport,
    sides: GroupedSides,
    resync: Resync,
    apply: Apply,
    *,
    ignore_recent_s: float = 0.0,
    concurrency: int = 8,
) -> GroupsRepair:
    """Re-sync the ids ``report`` lists (per group: missing, different, extra), apply them with
    one pipeline run, then check those groups again (``repair.after``). A failing step is kept
    in ``repair.error``; the report's ``repair`` is set either way."""
    repair = GroupsRepair()
    report.repair = repair
    todo = report.differing()
    if not todo:
        return repair
    repair.requested = {kind: sum(g.report.kind(kind).count for g in todo) for kind in KINDS}
    repair.groups = len(todo)
    try:
        for g in todo:
            ids = [str(k) for kind in KINDS for k in g.report.kind(kind).keys]
            repair.queued += await resync(g.group, ids)
        log.info(
            "discrepancy_repair_requested",
            pipeline=report.pipeline,
            groups=repair.groups,
            queued=repair.queued,
        )
        await apply()
        repair.after = await check_groups(
            sides,
            pipeline=report.pipeline,
            ignore_recent_s=ignore_recent_s,
            concurrency=concurrency,
            groups=[g.group for g in todo],
        )
    except Exception as exc:
        repair.error = f"{type(exc).__name__}: {exc}"
        log.warning("discrepancy_repair_failed", pipeline=report.pipeline, error=repair.error)
    return repair


class HttpRedisSides:
    """A grouped ``http`` source (``zoho_creator``) against a ``redis`` sink with an index:
    the source's groups from its parent listing, the sink's from its ``groups`` registry
    (without one: the source's only), one ``HttpGroupSide`` and one ``RedisGroupSide`` per
    group. The source's client is shared by the groups' sides (and with the pipeline, when
    it is open: its rate limit then counts the check's requests too)."""

    key_kind: KeyKind = "text"

    def __init__(self, source: Any, sink: Any, owner: Any = None) -> None:
        self.source = source
        self.sink = sink
        self.owner = owner  # the pipeline: once it opened the source, it closes it
        groups = source.config.groups
        self.group_name: str = groups.name if groups is not None else "group"
        self._opened_source = False
        self._client: Any = None

    async def open(self) -> None:
        if getattr(self.source, "_client", None) is None:
            await self.source.open()
            self._opened_source = True
        from syncworker.reconcile.redis_side import side_client

        self._client = side_client(self.sink.config)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self._opened_source:
            self._opened_source = False
            if not getattr(self.owner, "is_open", False):
                await self.source.close()

    async def source_groups(self) -> list[str]:
        lister = getattr(self.source, "list_groups", None) or self.source._list_groups
        return sorted(await lister())

    async def target_groups(self) -> list[str]:
        from syncworker.reconcile.redis_side import redis_groups

        if self.sink.config.groups is None:
            return []
        return await redis_groups(self.sink.config, self.source.stream, client=self._client)

    def source_side(self, group: str) -> Side:
        from syncworker.connectors.http.side import HttpGroupSide

        side: Side = HttpGroupSide(self.source, group)
        return side

    def target_side(self, group: str) -> Side:
        from syncworker.reconcile.redis_side import RedisGroupSide

        side: Side = RedisGroupSide(
            self.sink.config,
            stream=self.source.stream,
            group=group,
            group_name=self.group_name,
            client=self._client,
        )
        return side


def sides_for(pipeline: Any) -> GroupedSides | None:
    """The grouped sides of ``pipeline``: a source offering ``group_sides(sink)`` against
    its first sink that has ``group_side``, or a grouped ``http`` source against its first
    ``redis`` sink with an index; None when the pipeline has neither."""
    factory = getattr(pipeline.source, "group_sides", None)
    if factory is not None:
        for sink in pipeline.sinks:
            if hasattr(sink, "group_side"):
                sides: GroupedSides = factory(sink)
                return sides
        return None
    source_config = getattr(pipeline.source, "config", None)
    if getattr(source_config, "groups", None) is None or not hasattr(pipeline.source, "iter_group"):
        return None
    for sink in pipeline.sinks:
        config = getattr(sink, "config", None)
        if getattr(config, "type", None) == "redis" and getattr(config, "index", None):
            return HttpRedisSides(pipeline.source, sink, pipeline)
    return None


async def check_pipeline(
    pipeline: Any,
    sides: GroupedSides,
    *,
    repair: bool = False,
    ignore_recent_s: float | None = None,
    apply: Apply | None = None,
    concurrency: int = 8,
) -> GroupsReport:
    """Check ``pipeline`` (a ``core.Pipeline``) group by group; with ``repair``, re-sync what
    differs through its source's ``resync_group`` and ``apply`` (default: one run of the
    pipeline here), then check again (``report.repair``)."""
    recent_s = ignore_recent_s or 0.0
    await sides.open()
    try:
        report = await check_groups(
            sides, pipeline=pipeline.name, ignore_recent_s=recent_s, concurrency=concurrency
        )
        if repair and report.differing():
            resync = getattr(pipeline.source, "resync_group", None)
            if resync is None:
                report.repair = GroupsRepair(error="the source cannot re-sync by id")
                return report

            async def run_here() -> Any:
                return await pipeline.run_once("incremental")

            async def resync_opened(group: str, ids: list[str]) -> int:
                await pipeline.open(retry=pipeline.settings.retry)  # no-op when open
                return int(await resync(group, ids))

            await repair_groups(
                report,
                sides,
                resync_opened,
                apply or run_here,
                ignore_recent_s=recent_s,
                concurrency=concurrency,
            )
        return report
    finally:
        await sides.close()
