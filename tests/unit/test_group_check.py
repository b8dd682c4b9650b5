"""The grouped discrepancy check (reconcile/groups.py) over in-memory sides: exact missing,
extra and different ids per group, groups on one side only, recent changes in flight, and a
repair that re-syncs exactly the listed ids, applies them, and checks again."""

from __future__ import annotations

import time
from typing import Any

from syncworker.reconcile.groups import check_groups, repair_groups
from syncworker.reconcile.memory import MemorySide
from syncworker.reconcile.sides import KeyKind


class Sides:
    """Groups of rows on each side: ``{group: {id: row}}``."""

    key_kind: KeyKind = "text"

    def __init__(
        self,
        source: dict[str, dict[str, dict[str, Any]]],
        target: dict[str, dict[str, dict[str, Any]]],
        changed_at: dict[str, float] | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.changed_at = changed_at or {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def source_groups(self) -> list[str]:
        return list(self.source)

    async def target_groups(self) -> list[str]:
        return list(self.target)

    def source_side(self, group: str) -> MemorySide:
        return MemorySide(
            self.source.get(group, {}), key_kind="text", changed_at=dict(self.changed_at)
        )

    def target_side(self, group: str) -> MemorySide:
        return MemorySide(self.target.get(group, {}), key_kind="text", changed_at={})

    async def resync(self, group: str, ids: list[str]) -> int:
        """What the source and the pipeline do together: each id as the source has it now."""
        rows = self.target.setdefault(group, {})
        for key in ids:
            if key in self.source.get(group, {}):
                rows[key] = dict(self.source[group][key])
            else:
                rows.pop(key, None)
        return len(ids)


def row(key: str, n: int = 1) -> dict[str, Any]:
    return {"ID": key, "n": n}


def seeded() -> Sides:
    source = {
        "a": {k: row(k) for k in ("a1", "a2", "a3", "a5")},
        "b": {k: row(k) for k in ("b1", "b2")},
    }
    target = {
        "a": {"a1": row("a1", 2), "a2": row("a2"), "a4": row("a4"), "a5": row("a5")},
        "c": {"c1": row("c1")},
    }
    return Sides(source, target)


async def test_the_check_lists_every_difference_by_group_and_kind() -> None:
    report = await check_groups(seeded(), pipeline="p")
    totals = report.totals()
    assert (totals["missing"], totals["extra"], totals["different"]) == (3, 2, 1)
    assert report.keys("missing") == {"a": ["a3"], "b": ["b1", "b2"]}
    assert report.keys("extra") == {"a": ["a4"], "c": ["c1"]}
    assert report.keys("different") == {"a": ["a1"]}
    present = {g.group: g.present for g in report.results}
    assert present == {"a": "both", "b": "source", "c": "target"}
    assert totals["source_only_groups"] == 1 and totals["target_only_groups"] == 1
    assert report.status == "inconsistent"
    body = report.to_json()
    assert [g["group"] for g in body["groups"]] == ["a", "b", "c"]
    assert body["groups"][0]["missing"] == {"count": 1, "keys": ["a3"], "truncated": False}
    assert any("INCONSISTENT" in line for line in report.lines())


async def test_equal_sides_are_consistent() -> None:
    rows = {"a": {"a1": row("a1")}}
    report = await check_groups(Sides(rows, {"a": {"a1": row("a1")}}))
    assert report.status == "consistent" and report.totals()["differences"] == 0
    assert report.to_json()["groups"] == []


async def test_records_changed_recently_are_in_flight_not_different() -> None:
    sides = seeded()
    sides.changed_at = {"a1": time.time(), "a3": time.time() - 3600}
    report = await check_groups(sides, ignore_recent_s=60)
    assert report.keys("different") == {}
    assert report.keys("missing")["a"] == ["a3"]
    assert report.totals()["ignored_recent"] >= 1


async def test_repair_resyncs_exactly_the_listed_ids_then_finds_nothing() -> None:
    sides = seeded()
    asked: dict[str, list[str]] = {}

    async def resync(group: str, ids: list[str]) -> int:
        asked[group] = sorted(ids)
        return await sides.resync(group, ids)

    applied = []

    async def apply() -> None:
        applied.append(True)

    report = await check_groups(sides)
    repair = await repair_groups(report, sides, resync, apply)
    assert asked == {"a": ["a1", "a3", "a4"], "b": ["b1", "b2"], "c": ["c1"]}
    assert applied == [True]
    assert repair.requested == {"missing": 3, "extra": 2, "different": 1}
    assert repair.after is not None and repair.after.totals()["differences"] == 0
    assert report.to_json()["repair"]["remaining"] == 0
    again = await check_groups(sides)
    assert again.totals()["differences"] == 0


async def test_a_failing_repair_says_why() -> None:
    sides = seeded()

    async def resync(group: str, ids: list[str]) -> int:
        raise RuntimeError("source down")

    async def apply() -> None:
        pass

    report = await check_groups(sides)
    repair = await repair_groups(report, sides, resync, apply)
    assert repair.error == "RuntimeError: source down" and repair.after is None
