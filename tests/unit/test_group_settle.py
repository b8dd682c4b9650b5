"""The pipeline's side of grouped syncs (issue 11), on small in-memory doubles: a GroupEnd is
claimed after its group's batches are acked and still ends the same run, travels alone, is
settled with finish_group on every sink that replaces groups (retried, rolled back, or
stopping the pipeline like a write), and counts what was removed; WriteResult added/updated
reach the run and the totals; force runs read one group and are refused for sources that
cannot; CountsGroups sinks are offered to UsesGroupCounts sources before open."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from tests.waiting import eventually

from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy
from syncworker.core.policies import BreakerPolicy
from syncworker.core.protocols import GroupEnd, SourceContext, WriteResult
from syncworker.core.record import Batch
from syncworker.core.schedule import Schedule
from syncworker.errors import ConfigRefused, ConnectionFailed, UnsupportedOperation
from syncworker.testing import MemorySink, MemorySource

SETTINGS = PipelineSettings(
    batch_size=3,
    max_wait_s=0.01,
    max_in_flight=2,
    retry=RetryPolicy(attempts=2, delay_s=0.001, jitter=0),
    breaker=BreakerPolicy(delay_s=0.01, max_delay_s=0.02),
)


class GroupedSource:
    """Groups of records. A full run reads every group, a force run ``force_key``'s; each
    read is delivered in batches tagged with its ``sync_run``, and its GroupEnd is claimable
    only once every batch of the read is acked (``claim`` returns None meanwhile)."""

    name = "grouped"
    full_sync = True
    force_sync = True

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = groups
        self.context: SourceContext | None = None
        self.offered: Any = None
        self.offered_before_open = False
        self.opened = False
        self._run = -1
        self._todo: list[str] = []
        self._batches: list[Batch] = []
        self._unacked: set[int] = set()
        self._end: GroupEnd | None = None
        self._end_out = False
        self.acked_ends: list[str] = []
        self.nacked_ends: list[tuple[str, BaseException | None]] = []
        self.claims_while_waiting = 0
        self.waited = asyncio.Event()  # a claim found batches of a read still unacked
        self.reads = 0

    def bind(self, context: SourceContext) -> None:
        self.context = context

    def offer_group_counts(self, sink: Any) -> None:
        self.offered = sink
        self.offered_before_open = not self.opened

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        pass

    async def wait(self, timeout_s: float) -> None:
        pass

    def _start_run(self) -> None:
        assert self.context is not None
        self._run = self.context.run
        if self.context.mode == "force":
            assert self.context.force_key is not None
            self._todo = [self.context.force_key]
        elif self.context.mode == "full":
            self._todo = list(self.groups)
        else:
            self._todo = []

    def _read(self, group: str) -> None:
        self.reads += 1
        tag = f"{group}-{self.reads}"
        keys = self.groups.get(group, [])
        records = [
            Record(k, {"id": k, "group": group}, "regs", meta={"group": group, "sync_run": tag})
            for k in keys
        ]
        self._batches = [Batch(records[i : i + 2], token=i) for i in range(0, len(records), 2)]
        self._end = GroupEnd([], stream="regs", group=group, run=tag, count=len(records))

    async def claim(self, limit: int) -> Batch | None:
        assert self.context is not None
        if self._run != self.context.run:
            self._start_run()
        while True:
            if self._batches:
                batch = self._batches.pop(0)
                self._unacked.add(id(batch))
                return batch
            if self._unacked:
                self.claims_while_waiting += 1
                self.waited.set()
                return None
            if self._end_out:
                return None  # claimed, not settled yet
            if self._end is not None:
                self._end_out = True
                return self._end
            if not self._todo:
                return None
            self._read(self._todo.pop(0))

    async def ack(self, batch: Batch) -> None:
        if isinstance(batch, GroupEnd):
            self.acked_ends.append(batch.group)
            self._end, self._end_out = None, False
            return
        self._unacked.discard(id(batch))

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        if isinstance(batch, GroupEnd):
            self.nacked_ends.append((batch.group, error))
            self._end_out = False  # served again by the next claim
            return
        self._unacked.discard(id(batch))
        self._batches.insert(0, batch)


class GroupSink:
    """Records by key, an index per group, finish_group removing what a read did not write."""

    name = "groups"

    def __init__(self, *, finish_failures: int = 0, finish_error: Exception | None = None) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.index: dict[str, set[str]] = {}
        self.staged: dict[str, set[str]] = {}
        self.finish_failures = finish_failures
        self.finish_error = finish_error
        self.finished: list[str] = []
        self.hold: asyncio.Event | None = None  # writes of slow_keys wait for it
        self.slow_keys: set[str] = set()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, records: Sequence[Record]) -> WriteResult:
        if self.hold is not None and any(r.key in self.slow_keys for r in records):
            await self.hold.wait()
        added = updated = 0
        for r in records:
            group = r.meta["group"]
            if r.op == "delete":
                self.rows.pop(r.key, None)
                self.index.get(group, set()).discard(r.key)
                continue
            if r.key in self.rows:
                updated += 1
            else:
                added += 1
            self.rows[r.key] = dict(r.data)
            self.index.setdefault(group, set()).add(r.key)
            if "sync_run" in r.meta:
                self.staged.setdefault(r.meta["sync_run"], set()).add(r.key)
        return WriteResult(added=added, updated=updated)

    async def finish_group(self, end: GroupEnd) -> int:
        if self.finish_error is not None:
            raise self.finish_error
        if self.finish_failures:
            self.finish_failures -= 1
            raise ConnectionFailed("groups: unreachable (injected)")
        keep = self.staged.pop(end.run, set())
        gone = self.index.get(end.group, set()) - keep
        for key in gone:
            self.rows.pop(key, None)
        self.index[end.group] = keep
        self.finished.append(end.group)
        return len(gone)

    async def group_counts(self, stream: str, groups: Sequence[str]) -> dict[str, int]:
        return {g: len(self.index.get(g, ())) for g in groups}


def stale_sink() -> GroupSink:
    sink = GroupSink()
    sink.rows = {"a1": {"id": "a1", "group": "a", "old": True}, "a9": {"id": "a9"}}
    sink.index = {"a": {"a1", "a9"}, "gone": {"x1"}}
    sink.rows["x1"] = {"id": "x1"}
    return sink


async def test_full_run_removes_what_the_read_did_not_deliver_and_counts_it() -> None:
    source = GroupedSource({"a": ["a1", "a2", "a3"], "b": ["b1"]})
    sink = stale_sink()
    pipeline = Pipeline("p", source, [sink], settings=SETTINGS)
    run = await pipeline.run_once("full")
    await pipeline.close()
    assert sorted(sink.rows) == ["a1", "a2", "a3", "b1", "x1"]  # group "gone" not read
    assert (run.added, run.updated, run.removed) == (3, 1, 1)
    assert run.status == "success"
    assert source.acked_ends == ["a", "b"]
    totals = pipeline.status()["totals"]
    assert (totals["added"], totals["updated"], totals["removed"]) == (3, 1, 1)
    assert run.to_dict()["removed"] == 1


async def test_a_group_end_claimed_after_in_flight_acks_still_ends_the_run() -> None:
    source = GroupedSource({"a": [f"a{i}" for i in range(7)]})
    sink = GroupSink()
    # The last batch stays in flight until the source has answered a claim with "not yet".
    sink.hold = source.waited
    sink.slow_keys = {"a6"}
    settings = PipelineSettings(batch_size=2, max_wait_s=0.01, max_in_flight=2)
    pipeline = Pipeline("p", source, [sink], settings=settings)
    run = await pipeline.run_once("full")
    await pipeline.close()
    assert source.claims_while_waiting >= 1
    assert source.acked_ends == ["a"]
    assert sink.finished == ["a"]
    assert run.processed == 7


async def test_finish_group_is_retried_then_acked() -> None:
    source = GroupedSource({"a": ["a1"]})
    sink = GroupSink(finish_failures=1)
    pipeline = Pipeline("p", source, [sink], settings=SETTINGS)
    run = await pipeline.run_once("full")
    await pipeline.close()
    assert run.status == "success"
    assert source.acked_ends == ["a"] and not source.nacked_ends


async def test_a_sink_down_rolls_the_group_end_back_and_the_next_run_finishes_it() -> None:
    source = GroupedSource({"a": ["a1", "a2"]})
    sink = GroupSink(finish_failures=2)  # every attempt of the first run fails
    sink.index = {"a": {"old"}}
    sink.rows = {"old": {}}
    pipeline = Pipeline("p", source, [sink], settings=SETTINGS)
    first = await pipeline.run_once("full")
    assert first.status == "partial" and first.error and "unavailable" in first.error
    assert [g for g, _ in source.nacked_ends] == ["a"]
    assert isinstance(source.nacked_ends[0][1], ConnectionFailed | Exception)
    assert "old" in sink.rows
    second = await pipeline.run_once("incremental")  # the source serves the GroupEnd again
    await pipeline.close()
    assert second.status == "success"
    assert second.removed == 1 and "old" not in sink.rows
    assert source.acked_ends == ["a"]


async def test_a_refused_configuration_in_finish_group_stops_the_pipeline() -> None:
    source = GroupedSource({"a": ["a1"]})
    sink = GroupSink(finish_error=ConfigRefused("groups: NOPERM (injected)"))
    pipeline = Pipeline("p", source, [sink], settings=SETTINGS)
    with pytest.raises(ConfigRefused):
        await pipeline.run_once("full")
    assert [g for g, e in source.nacked_ends] == ["a"] and source.nacked_ends[0][1] is None


async def test_a_sink_without_finish_group_just_acks_the_group_end() -> None:
    source = GroupedSource({"a": ["a1"]})
    sink = MemorySink()
    pipeline = Pipeline("p", source, [sink], settings=SETTINGS)
    run = await pipeline.run_once("full")
    await pipeline.close()
    assert source.acked_ends == ["a"] and run.removed == 0
    assert sorted(sink.rows) == ["a1"]


class EagerSource:
    """Records, then a GroupEnd on the very next claim (so it would join the records' fill)."""

    name = "eager"

    def __init__(self) -> None:
        self.served: list[str] = []
        self.nacked: list[str] = []
        self.acked: list[str] = []
        self.end = GroupEnd([], stream="regs", group="a", run="t1", count=1)
        self.records: Batch | None = Batch([Record("a1", {}, "regs", meta={"group": "a"})])

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def wait(self, timeout_s: float) -> None:
        pass

    async def claim(self, limit: int) -> Batch | None:
        if self.records is not None:
            batch, self.records = self.records, None
            return batch
        if self.end is not None:
            self.served.append("end")
            return self.end
        return None

    async def ack(self, batch: Batch) -> None:
        if isinstance(batch, GroupEnd):
            self.acked.append(batch.group)
            self.end = None  # type: ignore[assignment]

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        if isinstance(batch, GroupEnd):
            self.nacked.append(batch.group)


async def test_a_group_end_travels_alone() -> None:
    source = EagerSource()
    sink = GroupSink()
    settings = PipelineSettings(batch_size=10, max_wait_s=0.05, schedule=Schedule.stream())
    pipeline = Pipeline("p", source, [sink], settings=settings)
    run = await pipeline.run_once()
    await pipeline.close()
    # Claimed while the record batch was filling: handed back, then claimed alone.
    assert source.nacked == ["a"] and source.acked == ["a"]
    assert run.processed == 1 and sink.finished == ["a"]


async def test_force_reads_the_one_group_asked_for() -> None:
    source = GroupedSource({"a": ["a1"], "b": ["b1", "b2"]})
    sink = GroupSink()
    pipeline = Pipeline("p", source, [sink], settings=SETTINGS)
    run = await pipeline.run_once("force", key="b")
    await pipeline.close()
    assert sorted(sink.rows) == ["b1", "b2"]
    assert run.mode == "force" and run.key == "b"
    assert source.context is not None and source.context.force_key == "b"


async def test_force_is_refused_for_a_source_that_cannot_and_needs_a_key() -> None:
    pipeline = Pipeline("p", MemorySource(), [MemorySink()], settings=SETTINGS)
    with pytest.raises(UnsupportedOperation, match="cannot force-sync"):
        pipeline.check_mode("force", "k")
    grouped = Pipeline("g", GroupedSource({}), [GroupSink()], settings=SETTINGS)
    with pytest.raises(ValueError, match="needs a key"):
        grouped.check_mode("force")
    with pytest.raises(ValueError, match="only a force sync"):
        grouped.check_mode("full", "k")
    grouped.check_mode("force", "k")


async def test_a_counting_sink_is_offered_before_open() -> None:
    source = GroupedSource({})
    counting = GroupSink()
    pipeline = Pipeline("p", source, [MemorySink(), counting], settings=SETTINGS)
    await pipeline.run_once("incremental")
    await pipeline.close()
    assert source.offered is counting and source.offered_before_open


async def test_a_requested_sync_is_named_while_it_runs() -> None:
    source = GroupedSource({"a": [f"a{i}" for i in range(6)]})
    sink = GroupSink()
    sink.hold = asyncio.Event()  # the run stays under way until the test has named it
    sink.slow_keys = {"a0"}
    settings = PipelineSettings(
        batch_size=2, max_wait_s=0.01, schedule=Schedule.manual(), retry=SETTINGS.retry
    )
    pipeline = Pipeline("p", source, [sink], settings=settings)
    await pipeline.start()
    try:
        assert pipeline.running_sync() is None
        waiting = asyncio.create_task(pipeline.sync_now("force", key="a"))
        named = await eventually(pipeline.running_sync, "the sync under way")
        assert named["mode"] == "force" and named["key"] == "a"
        sink.hold.set()
        run = await waiting
        assert run.sync_id == named["id"]
        assert pipeline.running_sync() is None
    finally:
        await pipeline.stop()
