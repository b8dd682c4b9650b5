"""The reconcile engine over in-memory sides: exact keys, recursion, recent rows, limits."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import pytest

from syncworker.errors import ConfigError, ConnectionFailed
from syncworker.reconcile.engine import CompareSettings, Progress, compare
from syncworker.reconcile.keys import boundaries, cover, split
from syncworker.reconcile.memory import MemorySide
from syncworker.reconcile.sides import KeyRange, SideInfo


def users(n: int) -> dict[int, dict[str, object]]:
    return {i: {"name": f"user {i}", "phone": None if i % 7 == 0 else str(i)} for i in range(n)}


async def test_identical_sides_are_consistent_in_one_pass_without_fetching() -> None:
    rows = users(5000)
    a, b = MemorySide(rows), MemorySide(rows)
    report = await compare(a, b, CompareSettings(segments=50))
    assert report.status == "consistent"
    assert (report.source_rows, report.target_rows, report.difference) == (5000, 5000, 0)
    assert report.passes == 1
    assert "fetch" not in a.calls and "fetch" not in b.calls


async def test_planted_differences_are_found_exactly() -> None:
    source = users(20_000)
    target = {k: dict(v) for k, v in source.items()}
    changed = [5, 777, 12_345, 19_999]
    for k in changed:
        target[k]["name"] = "renamed"
    target[701]["phone"] = None  # a value become NULL
    target[14]["phone"] = "14"  # NULL become a value (14 % 7 == 0)
    missing = [0, 3, 10_001]
    for k in missing:
        del target[k]
    extra = [20_000, 25_000, -1]
    for k in extra:
        target[k] = {"name": "ghost", "phone": None}
    # Small fetch threshold: differing segments are split again before rows are fetched.
    settings = CompareSettings(segments=8, split_factor=4, fetch_rows=300)
    report = await compare(MemorySide(source), MemorySide(target), settings)
    assert report.missing.keys == sorted(missing)
    assert report.extra.keys == sorted(extra)
    assert report.different.keys == sorted([*changed, 701, 14])
    assert report.status == "inconsistent"
    assert report.difference == 0  # same counts: counts alone would have said "consistent"
    assert report.passes > 2
    assert report.different_columns[5] == ["name"]
    assert report.different_columns[701] == ["phone"]
    assert report.rows_fetched < 2 * 20_000 / 4  # far from fetching everything


async def test_text_keys_of_every_unicode_plane() -> None:
    keys = ["", "a", "b", "z" * 40, "é", "ß", "中文", "\U0001f600", "\U00020000", "\U000e0001"]
    keys += ["\U0010fffd", "\U000f0000", "user-1", "user-10", "user-9", "\u05d0", "\uffff"]
    source = {k: {"v": k} for k in keys}
    target = dict(source)
    del target["\U0001f600"]
    target["\U00020000"] = {"v": "other"}
    target["\U0010fffe"] = {"v": "extra"}
    report = await compare(
        MemorySide(source, key_kind="text"),
        MemorySide(target, key_kind="text"),
        CompareSettings(segments=4, split_factor=3, fetch_rows=2),
    )
    assert report.missing.keys == ["\U0001f600"]
    assert report.different.keys == ["\U00020000"]
    assert report.extra.keys == ["\U0010fffe"]


async def test_uuid_keys() -> None:
    ids = sorted(str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128))) for i in range(3000))
    source = {k: {"n": i} for i, k in enumerate(ids)}
    target = dict(source)
    del target[ids[10]]
    target[ids[2000]] = {"n": -1}
    report = await compare(
        MemorySide(source, key_kind="uuid"),
        MemorySide(target, key_kind="uuid"),
        CompareSettings(segments=16, fetch_rows=50),
    )
    assert report.missing.keys == [ids[10]]
    assert report.different.keys == [ids[2000]]
    assert report.extra.count == 0


async def test_recent_rows_are_ignored_and_counted() -> None:
    source = users(1000)
    target = {k: dict(v) for k, v in source.items()}
    target[10]["name"] = "old"  # changed long ago: a real difference
    target[20]["name"] = "in flight"  # changed just now in the source: ignored
    now = time.time()
    changed = {10: now - 7200, 20: now - 1}
    report = await compare(
        MemorySide(source, changed_at=changed),
        MemorySide(target, changed_at={}),
        CompareSettings(segments=10, ignore_recent_s=60),
    )
    assert report.different.keys == [10]
    assert report.ignored_recent == 1
    assert report.recent_updates_last_hour == 1
    assert report.recent_supported


async def test_recent_cannot_be_told_without_timestamps() -> None:
    report = await compare(
        MemorySide(users(10)), MemorySide(users(10)), CompareSettings(ignore_recent_s=60)
    )
    assert report.recent_supported is False
    assert report.recent_updates_last_hour is None


async def test_empty_sides_and_an_empty_target() -> None:
    report = await compare(MemorySide({}), MemorySide({}))
    assert report.status == "consistent" and report.source_rows == 0
    report = await compare(MemorySide(users(3000)), MemorySide({}), CompareSettings(segments=10))
    assert report.missing.count == 3000
    assert report.missing.keys == list(range(3000))


async def test_key_lists_are_capped_but_counts_stay_exact() -> None:
    settings = CompareSettings(segments=10, max_keys=100)
    report = await compare(MemorySide(users(3000)), MemorySide({}), settings)
    assert report.missing.count == 3000
    assert len(report.missing.keys) == 100
    assert report.missing.truncated


async def test_key_kinds_must_match() -> None:
    with pytest.raises(ConfigError, match="same kind"):
        await compare(MemorySide({1: {}}), MemorySide({"1": {}}, key_kind="text"))


async def test_progress_reports_phases_and_both_sides_are_closed() -> None:
    seen: list[Progress] = []
    a, b = MemorySide(users(2000)), MemorySide(users(1990))
    await compare(a, b, CompareSettings(segments=20), seen.append)
    phases = [p.phase for p in seen]
    assert phases[0] == "bounds" and phases[-1] == "done"
    assert "hash" in phases and "fetch" in phases
    assert seen[-1].segments_done >= 20 and seen[-1].source_rows == 2000
    assert not a.opened and not b.opened


async def test_json_form_holds_the_seed_summary_and_the_keys() -> None:
    target = users(100)
    del target[50]
    report = await compare(MemorySide(users(100)), MemorySide(target), CompareSettings(segments=4))
    data = report.to_json()
    assert data["status"] == "inconsistent"
    assert data["source"]["rows"] == 100 and data["target"]["rows"] == 99
    assert data["difference"] == 1
    assert data["missing"] == {"count": 1, "keys": [50], "truncated": False}
    assert any(line.startswith("Consistency: INCONSISTENT") for line in report.lines())


def test_int_boundaries_match_the_baseline_segmentation() -> None:
    lo, hi, n = 1, 1_000_030, 1000
    cuts = boundaries("int", lo, hi, n)
    span = hi - lo + 1
    assert cuts == [lo + (s * span + n - 1) // n for s in range(1, n)]
    assert boundaries("int", 5, 7, 10) == [6, 7]
    assert boundaries("int", 5, 5, 10) == []


@pytest.mark.parametrize(
    ("lo", "hi"),
    [("a", "z"), ("user-1", "user-999"), ("", "\U0010ffff"), ("\ud7ff", "\ue001"), ("ab", "abc")],
)
def test_text_boundaries_are_increasing_valid_text(lo: str, hi: str) -> None:
    cuts = boundaries("text", lo, hi, 50)
    assert cuts, "no boundary found"
    assert all(lo < c <= hi for c in cuts)
    assert cuts == sorted(set(cuts))
    for c in cuts:
        c.encode("utf-8")  # no surrogates
        assert "\x00" not in c


def test_cover_and_split_leave_no_gap() -> None:
    ranges = cover("int", 0, 99, 10)
    assert ranges[0].lo is None and ranges[-1].hi is None
    assert all(a.hi == b.lo for a, b in itertools.pairwise(ranges))
    inner = split("int", KeyRange(10, 20), 0, 99, 4)
    assert inner[0].lo == 10 and inner[-1].hi == 20 and len(inner) == 4
    assert split("int", KeyRange(10, 11), 0, 99, 4) == [KeyRange(10, 11)]


async def test_a_side_that_fails_to_open_leaves_the_other_closed() -> None:
    gate = asyncio.Event()
    events: list[str] = []

    class Slow(MemorySide):
        async def open(self) -> SideInfo:
            await gate.wait()  # still opening when the other side fails...
            await asyncio.sleep(0.01)  # ... and for a while after (a slow connect)
            info = await super().open()
            events.append("opened")
            return info

        async def close(self) -> None:
            await super().close()
            events.append("closed")

    class Down(MemorySide):
        async def open(self) -> SideInfo:
            gate.set()
            raise ConnectionFailed("target: cannot connect")

    source = Slow(users(10))
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        await compare(source, Down({}))
    assert events == ["opened", "closed"]  # closed after its open finished, not before
    assert not source.opened
