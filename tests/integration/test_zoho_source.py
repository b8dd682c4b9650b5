"""The ``zoho_creator`` source with the real httpx client against the fake Zoho Creator, through
a real Pipeline: full, incremental and force runs, GroupEnds, resync and the group side."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from syncworker.connectors.http.side import HttpGroupSide
from syncworker.core import jsonvalue
from syncworker.reconcile.digest import record_digest
from syncworker.reconcile.sides import KeyRange
from syncworker.state.base import StateStore
from tests.fakes.zoho_creator import ZohoCreatorServer, zoho_time
from tests.integration.zoho_support import (
    EVENTS,
    REGISTRATIONS,
    GroupSink,
    expected_hash,
    of_event,
    pipeline,
    seed,
    zoho_source,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def zoho() -> AsyncIterator[ZohoCreatorServer]:
    async with ZohoCreatorServer() as server:
        yield server


def same(a: object, b: object) -> bool:
    return jsonvalue.canonical(a) == jsonvalue.canonical(b)


async def test_full_sync_delivers_every_group_exactly_with_one_group_end_each(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 3, 450)
    source, sink = zoho_source(zoho), GroupSink()
    run = pipeline(source, sink, state)
    try:
        result = await run.run_once("full")
    finally:
        await run.close()
    assert result.status == "success", result.error
    held = zoho.records(REGISTRATIONS)
    assert set(sink.rows) == set(held)
    assert all(same(sink.rows[k], v) for k, v in held.items())  # exact numbers, untouched
    assert sorted(end.group for end in sink.ends) == sorted(events)
    for end in sink.ends:
        records = list(of_event(zoho, end.group).values())
        assert end.count == len(records) == 450
        assert end.content_hash == expected_hash(records)
        assert end.group_name == "event_id" and end.stream == REGISTRATIONS
        assert end.source_modified == records[0]["Modified_Time"]
    assert len({end.run for end in sink.ends}) == 3
    status = source.status()
    assert status["groups_done"] == status["groups_total"] == 3
    assert status["auth"]["refreshes"] == 1


async def test_group_end_comes_after_every_batch_of_its_group(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 2, 250)
    sink = GroupSink()
    order: list[tuple[str, str]] = []
    write, finish = sink.write, sink.finish_group

    async def record_write(records):  # type: ignore[no-untyped-def]
        order.extend(("write", r.meta["group"]) for r in records)
        return await write(records)

    async def record_finish(end):  # type: ignore[no-untyped-def]
        order.append(("end", end.group))
        return await finish(end)

    sink.write, sink.finish_group = record_write, record_finish  # type: ignore[method-assign]
    run = pipeline(zoho_source(zoho), sink, state, batch_size=64)
    try:
        assert (await run.run_once("full")).status == "success"
    finally:
        await run.close()
    for index, (kind, group) in enumerate(order):
        if kind == "end":
            assert ("write", group) not in order[index:], "a record of the group after its end"


async def test_full_sync_removes_records_zoho_no_longer_has(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 2, 10)
    source, sink = zoho_source(zoho), GroupSink()
    run = pipeline(source, sink, state)
    try:
        assert (await run.run_once("full")).status == "success"
        gone = sorted(of_event(zoho, events[0]))[:3]
        for key in gone:
            zoho.delete(REGISTRATIONS, key)
        result = await run.run_once("full")
    finally:
        await run.close()
    assert result.status == "success"
    assert not set(gone) & set(sink.rows)
    assert set(sink.rows) == set(zoho.records(REGISTRATIONS))


async def test_a_group_without_records_still_ends(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    zoho.add(EVENTS, {"Event_Name": "empty"})
    seed(zoho, 1, 3)
    sink = GroupSink()
    run = pipeline(zoho_source(zoho), sink, state)
    try:
        assert (await run.run_once("full")).status == "success"
    finally:
        await run.close()
    counts = sorted(end.count for end in sink.ends)
    assert counts == [0, 3]
    empty = next(end for end in sink.ends if end.count == 0)
    assert empty.content_hash == "0000000000000000"


async def test_incremental_reads_changes_then_only_stale_or_differing_groups(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 3, 20)
    source, sink = zoho_source(zoho), GroupSink()
    run = pipeline(source, sink, state)
    try:
        assert (await run.run_once("full")).status == "success"
        assert len(sink.ends) == 3
        nothing = await run.run_once("incremental")
        assert nothing.processed == 0, "records read again though nothing changed"
        changed = sorted(of_event(zoho, events[1]))[0]
        zoho.update(REGISTRATIONS, changed, {"Name": "renamed"})
        added = zoho.add(
            REGISTRATIONS, {"Event": {"ID": events[2], "display_value": "E"}, "Name": "new"}
        )
        sink.writes.clear()
        result = await run.run_once("incremental")
        assert result.status == "success"
        delivered = [key for write in sink.writes for key in write]
        assert sorted(delivered) == sorted([changed, added])
        assert sink.rows[changed]["Name"] == "renamed"
        assert len(sink.ends) == 3, "no group was stale"
        assert sink.groups[events[2]] >= {added}  # meta group set from the lookup
        sink.count_offsets[events[0]] = -1  # the sink lost one record of event 0
        result = await run.run_once("incremental")
        # event 0: the sink's count differs; event 2: it grew since its last full read (the
        # source cannot tell a new record from a changed one), so it is read again too
        assert sorted(end.group for end in sink.ends[3:]) == sorted([events[0], events[2]])
        result = await run.run_once("incremental")
        assert [end.group for end in sink.ends[5:]] == [events[0]]  # still short in the sink
    finally:
        await run.close()
    assert source.status()["hwm"] == zoho.records(REGISTRATIONS)[added]["Modified_Time"]


async def test_incremental_reads_stale_groups_fully(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 2, 5)
    sink = GroupSink()
    run = pipeline(zoho_source(zoho, events={"report": EVENTS, "stale_after": "0s"}), sink, state)
    try:
        assert (await run.run_once("incremental")).status == "success"  # never read: full reads
        assert len(sink.ends) == 2
        assert (await run.run_once("incremental")).status == "success"  # stale at once
        assert len(sink.ends) == 4
    finally:
        await run.close()


async def test_a_parent_modified_since_triggers_its_group(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 2, 5)
    sink = GroupSink()
    run = pipeline(zoho_source(zoho), sink, state)
    try:
        assert (await run.run_once("full")).status == "success"
        zoho.update(EVENTS, events[1], {"Event_Name": "moved"})
        assert (await run.run_once("incremental")).status == "success"
    finally:
        await run.close()
    assert [end.group for end in sink.ends[2:]] == [events[1]]


async def test_force_reads_one_group_now(zoho: ZohoCreatorServer, state: StateStore) -> None:
    events = seed(zoho, 3, 7)
    sink = GroupSink()
    run = pipeline(zoho_source(zoho), sink, state)
    try:
        result = await run.run_once("force", key=events[1])
    finally:
        await run.close()
    assert result.status == "success"
    assert set(sink.rows) == set(of_event(zoho, events[1]))
    assert [(end.group, end.count) for end in sink.ends] == [(events[1], 7)]


async def test_resync_group_delivers_current_records_and_deletes_the_gone(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 2, 5)
    source, sink = zoho_source(zoho), GroupSink()
    run = pipeline(source, sink, state)
    try:
        assert (await run.run_once("full")).status == "success"
        keys = sorted(of_event(zoho, events[0]))
        zoho.delete(REGISTRATIONS, keys[0])
        zoho.update(REGISTRATIONS, keys[1], {"Name": "changed"})
        sink.rows[keys[1]] = {"stale": True}
        assert await source.resync_group(events[0], [keys[0], keys[1], "4433999"]) == 3
        sink.writes.clear()
        result = await run.run_once("incremental")
    finally:
        await run.close()
    assert result.status == "success"
    assert keys[0] not in sink.rows and "4433999" not in sink.rows
    assert sink.rows[keys[1]]["Name"] == "changed"
    assert keys[0] not in sink.groups[events[0]]


async def test_group_side_lists_one_group_with_record_digests(
    zoho: ZohoCreatorServer,
) -> None:
    events = seed(zoho, 2, 30)
    recent = zoho.add(REGISTRATIONS, {"Event": {"ID": events[0]}, "Modified_Time": zoho_time()})
    source = zoho_source(zoho)
    side = HttpGroupSide(source, events[0])
    try:
        info = await side.open()
        assert info.can_tell_recent
        held = of_event(zoho, events[0])
        bounds = await side.key_bounds()
        assert bounds == (min(held), max(held))
        everything = await side.fetch([KeyRange(None, None)], frozenset())
        assert everything == {k: record_digest(v) for k, v in held.items()}
        (summary,) = await side.summarize([KeyRange(None, None)], frozenset({recent}))
        assert (summary.rows, summary.compared) == (31, 30)
        assert await side.recent_keys(600) == frozenset({recent})
        assert set(await side.rows([recent, "nope"])) == {recent}
    finally:
        await side.close()


async def test_source_counts_find_a_record_deleted_in_zoho(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 2, 10)
    groups = {"report": EVENTS, "count_check": "source"}
    source, sink = zoho_source(zoho, events=groups), GroupSink()
    run = pipeline(source, sink, state)
    try:
        assert (await run.run_once("full")).status == "success"
        assert sorted(await source.list_groups()) == sorted(events)
        gone = sorted(of_event(zoho, events[1]))[0]
        zoho.delete(REGISTRATIONS, gone)
        assert (await run.run_once("incremental")).status == "success"
    finally:
        await run.close()
    assert [end.group for end in sink.ends[2:]] == [events[1]]  # Zoho's count says 9, not 10
    assert gone not in sink.rows
    counted = [r for r in zoho.data_requests() if r.path.endswith("/count")]
    assert len(counted) == 2  # one per event, in the incremental run only


async def test_a_change_within_the_same_second_is_not_taken_for_the_one_read(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 1, 5)
    sink = GroupSink()
    run = pipeline(zoho_source(zoho, overlap="10m"), sink, state)
    try:
        assert (await run.run_once("full")).status == "success"
        assert (await run.run_once("incremental")).processed == 0  # all in the window, skipped
        key = sorted(of_event(zoho, events[0]))[2]
        same_second = zoho.records(REGISTRATIONS)[key]["Modified_Time"]
        zoho.update(REGISTRATIONS, key, {"Name": "changed", "Modified_Time": same_second})
        result = await run.run_once("incremental")
    finally:
        await run.close()
    assert result.processed == 1
    assert sink.rows[key]["Name"] == "changed"


async def test_group_side_reads_modified_times_in_the_apps_time_zone(
    zoho: ZohoCreatorServer,
) -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    event = zoho.add(EVENTS, {"Event_Name": "Hanoi"})
    local = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7, where the seed's app runs
    now_there = datetime.now(UTC).astimezone(local)
    fresh = zoho.add(REGISTRATIONS, {"Event": {"ID": event}, "Modified_Time": zoho_time(now_there)})
    old = zoho.add(
        REGISTRATIONS,
        {"Event": {"ID": event}, "Modified_Time": zoho_time(now_there - timedelta(hours=2))},
    )
    right = HttpGroupSide(zoho_source(zoho, time_zone="Asia/Ho_Chi_Minh"), event)
    wrong = HttpGroupSide(zoho_source(zoho), event)  # read as UTC: 7 hours in the future
    try:
        await right.open()
        await wrong.open()
        assert await right.recent_keys(600) == frozenset({fresh})
        assert old not in (await right.recent_keys(600) or set())
        assert await wrong.recent_keys(600) == frozenset()  # nothing hidden as in flight
    finally:
        await right.close()
        await wrong.close()
