"""The result of a comparison: the seed's summary (counts, difference, recent updates,
consistency status) and the exact keys that differ, in text and JSON form.

Kinds of difference, always from the source's point of view:
- ``missing``: the key is in the source (after its filter) and not in the target;
- ``extra``: the key is in the target only;
- ``different``: both hold the key and the compared columns differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from syncworker.reconcile.sides import ColumnNote, Key

Kind = Literal["missing", "extra", "different"]
KINDS: tuple[Kind, ...] = ("missing", "extra", "different")
Status = Literal["consistent", "inconsistent"]


@dataclass(slots=True)
class KeySet:
    """The keys of one kind: ``count`` is exact; ``keys`` (sorted) holds at most the report's
    ``max_keys`` of them, ``truncated`` says some were left out."""

    count: int = 0
    keys: list[Key] = field(default_factory=list)
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "keys": self.keys, "truncated": self.truncated}


@dataclass(slots=True)
class RepairResult:
    """What ``--repair`` did: keys asked to re-sync, and after re-checking them, which now
    match (``repaired``) and which still differ (``failed``)."""

    requested: int
    repaired: list[Key] = field(default_factory=list)
    failed: list[Key] = field(default_factory=list)
    applied_by: str = ""  # "run-once" (this command ran the pipeline) or "engine"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "repaired": len(self.repaired),
            "failed": len(self.failed),
            "failed_keys": self.failed,
            "applied_by": self.applied_by,
            "error": self.error,
        }


@dataclass(slots=True)
class VerifyReport:
    """One comparison of a source with a target."""

    source: str
    target: str
    source_rows: int = 0
    target_rows: int = 0
    missing: KeySet = field(default_factory=KeySet)
    extra: KeySet = field(default_factory=KeySet)
    different: KeySet = field(default_factory=KeySet)
    # For a sample of the different keys: which compared columns differ.
    different_columns: dict[Key, list[str]] = field(default_factory=dict)
    compared_columns: list[str] = field(default_factory=list)
    not_compared: list[ColumnNote] = field(default_factory=list)
    recent_updates_last_hour: int | None = None
    ignore_recent_s: float = 0.0
    ignored_recent: int = 0  # keys left out as changed recently (in flight)
    recent_supported: bool = True
    segments: int = 0
    passes: int = 0
    rows_fetched: int = 0
    started_at: str = ""
    duration_s: float = 0.0
    pipeline: str | None = None
    repair: RepairResult | None = None

    @property
    def difference(self) -> int:
        """The seed's "difference": source count minus target count."""
        return self.source_rows - self.target_rows

    @property
    def differences(self) -> int:
        return self.missing.count + self.extra.count + self.different.count

    @property
    def status(self) -> Status:
        return "consistent" if self.differences == 0 else "inconsistent"

    def kind(self, name: Kind) -> KeySet:
        return {"missing": self.missing, "extra": self.extra, "different": self.different}[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "source": {"label": self.source, "rows": self.source_rows},
            "target": {"label": self.target, "rows": self.target_rows},
            "difference": self.difference,
            "differences": self.differences,
            "recent_updates_last_hour": self.recent_updates_last_hour,
            "ignore_recent_s": self.ignore_recent_s,
            "ignored_recent": self.ignored_recent,
            "recent_supported": self.recent_supported,
            **{name: self.kind(name).to_json() for name in KINDS},
            "different_columns": [
                {"key": k, "columns": cols} for k, cols in self.different_columns.items()
            ],
            "compared_columns": self.compared_columns,
            "not_compared": [
                {"column": n.column, "reason": n.reason, "compared": n.compared}
                for n in self.not_compared
            ],
            "segments": self.segments,
            "passes": self.passes,
            "rows_fetched": self.rows_fetched,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "repair": None if self.repair is None else self.repair.to_json(),
        }

    def summary(self) -> dict[str, Any]:
        """The short form kept in /status and the dashboard (no key lists past 20)."""
        short = self.to_json()
        for name in KINDS:
            short[name] = {"count": self.kind(name).count, "keys": self.kind(name).keys[:20]}
        short.pop("different_columns")
        return short

    def lines(self, show_keys: int = 50) -> list[str]:
        """The report for people: the seed's four lines, then the keys."""
        recent = (
            "unknown (no updated_at)"
            if self.recent_updates_last_hour is None
            else f"{self.recent_updates_last_hour:,}"
        )
        status = "CONSISTENT" if self.status == "consistent" else "INCONSISTENT"
        out = [
            f"Source ({self.source}): {self.source_rows:,} rows",
            f"Target ({self.target}): {self.target_rows:,} rows",
            f"Difference: {self.difference:+,}",
            f"Recent updates (last hour): {recent}",
            f"Consistency: {status}"
            + (
                ""
                if self.status == "consistent"
                else f" ({self.missing.count:,} missing, {self.extra.count:,} extra, "
                f"{self.different.count:,} different)"
            ),
        ]
        if self.ignore_recent_s:
            note = "" if self.recent_supported else " (a side has no change timestamp)"
            out.append(
                f"Ignored as changed in the last {self.ignore_recent_s:g} s: "
                f"{self.ignored_recent:,}{note}"
            )
        for name in KINDS:
            keys = self.kind(name)
            if keys.count:
                shown = ", ".join(str(k) for k in keys.keys[:show_keys])
                more = keys.count - min(len(keys.keys), show_keys)
                out.append(
                    f"{name} ({keys.count:,}): {shown}" + (f" ... +{more:,}" if more else "")
                )
        for key, cols in list(self.different_columns.items())[:show_keys]:
            out.append(f"  {key}: {', '.join(cols) or '(columns equal as text)'} differ")
        for col in self.not_compared:
            how = "compared as" if col.compared else "not compared:"
            out.append(f"Column {col.column}: {how} {col.reason}")
        if self.repair is not None:
            r = self.repair
            out.append(
                f"Repair: {r.requested:,} keys re-synced, {len(r.repaired):,} now match, "
                f"{len(r.failed):,} still differ" + (f" ({r.error})" if r.error else "")
            )
        return out
