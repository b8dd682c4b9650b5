"""Seed 002's endpoints and the grouped control endpoints over real HTTP, on a grouped
pipeline of in-memory doubles: the seed's stats and status fields, full and force syncs, 409
with the running sync's id, and the discrepancy check with and without repair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncworker.api.server import ApiServer
from syncworker.core import Pipeline, PipelineSettings
from syncworker.core.engine import Engine
from syncworker.core.schedule import Schedule
from syncworker.reconcile.memory import MemorySide
from syncworker.reconcile.sides import KeyKind
from syncworker.state import state_store_from_url
from tests.unit.test_group_settle import GroupedSource, GroupSink
from tests.waiting import eventually

TOKEN = "t0ken-for-tests"


class Sides:
    key_kind: KeyKind = "text"

    def __init__(self, source: CheckedSource, sink: CheckedSink) -> None:
        self.source = source
        self.sink = sink

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def source_groups(self) -> list[str]:
        return list(self.source.groups)

    async def target_groups(self) -> list[str]:
        return [g for g, ids in self.sink.index.items() if ids]

    def source_side(self, group: str) -> MemorySide:
        rows = {k: {"id": k, "group": group} for k in self.source.groups[group]}
        return MemorySide(rows, key_kind="text")

    def target_side(self, group: str) -> MemorySide:
        rows = {k: self.sink.rows[k] for k in self.sink.index.get(group, ())}
        return MemorySide(rows, key_kind="text")


class CheckedSource(GroupedSource):
    """The grouped double, able to re-send ids of a group (deletes for the ones it lacks)."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        super().__init__(groups)
        self.resyncs: list[tuple[str, list[str]]] = []

    def group_sides(self, sink: CheckedSink) -> Sides:
        return Sides(self, sink)

    async def resync_group(self, group: str, ids: list[str]) -> int:
        from syncworker.core.record import Batch, Record

        self.resyncs.append((group, sorted(ids)))
        have = set(self.groups.get(group, []))
        records = [
            Record(k, {"id": k, "group": group}, "regs", meta={"group": group})
            if k in have
            else Record(k, {}, "regs", op="delete", meta={"group": group})
            for k in ids
        ]
        self._batches.append(Batch(records))
        return len(records)


class CheckedSink(GroupSink):
    def group_side(self, group: str) -> None:  # marks the sink as holding groups
        return None


@pytest.fixture
async def grouped(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Pipeline]]:
    source = CheckedSource({"e1": ["r1", "r2", "r3"], "e2": ["r4"]})
    sink = CheckedSink()
    sink.rows = {"r1": {"id": "r1", "group": "e1", "stale": 1}, "r9": {"id": "r9"}}
    sink.index = {"e1": {"r1", "r9"}}
    settings = PipelineSettings(
        batch_size=2, max_wait_s=0.01, schedule=Schedule.every(3600, run_at_start=False)
    )
    state = state_store_from_url(f"sqlite:///{tmp_path / 'state.db'}")
    pipeline = Pipeline("zoho", source, [sink], settings=settings, state=state)
    engine = Engine([pipeline], state, shutdown_timeout_s=5)
    server = ApiServer(engine, host="127.0.0.1", port=0, token=TOKEN)
    engine.services.append(server)
    await engine.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            await eventually(lambda: _running(client), "the pipeline to run")
            yield client, pipeline
    finally:
        await engine.stop()


async def _running(client: httpx.AsyncClient) -> bool:
    status = (await client.get("/status")).json()
    return bool(status["pipelines"]["zoho"]["state"] == "running")


async def test_the_seed_status_has_its_fields(
    grouped: tuple[httpx.AsyncClient, Pipeline],
) -> None:
    client, _ = grouped
    full = await client.post("/api/sync-worker/full-sync")
    assert full.status_code == 200, full.text
    run = full.json()["results"]["zoho"]
    assert (run["added"], run["updated"], run["removed"]) == (3, 1, 1)
    status = (await client.get("/api/sync-worker/status")).json()
    assert status["is_running"] is True
    stats = status["stats"]
    assert stats["total_syncs"] == 1 and stats["successful_syncs"] == 1
    assert stats["failed_syncs"] == 0
    assert (stats["records_added"], stats["records_updated"], stats["records_removed"]) == (3, 1, 1)
    assert stats["last_sync_duration"] >= 0
    assert status["last_sync_time"].endswith("Z")
    config = status["config"]["zoho"]
    assert config["sync_interval_ms"] == 3_600_000 and config["batch_size"] == 2
    assert config["enable_auto_sync"] is True and config["enable_discrepancy_detection"] is True


async def test_force_sync_reads_one_group(grouped: tuple[httpx.AsyncClient, Pipeline]) -> None:
    client, _ = grouped
    answer = await client.post("/api/sync-worker/force-sync/e2")
    assert answer.status_code == 200, answer.text
    run = answer.json()["results"]["zoho"]
    assert run["mode"] == "force" and run["key"] == "e2" and run["processed"] == 1
    again = await client.post("/pipelines/zoho/force/e1")
    assert again.status_code == 200 and again.json()["removed"] == 1


async def test_a_sync_asked_for_while_one_runs_is_409_with_its_id(
    grouped: tuple[httpx.AsyncClient, Pipeline],
) -> None:
    client, pipeline = grouped
    sink = pipeline.sinks[0]
    assert isinstance(sink, CheckedSink)
    sink.hold, sink.slow_keys = asyncio.Event(), {"r1"}  # the sync stays under way
    accepted = await client.post("/pipelines/zoho/sync", json={"mode": "full", "wait": False})
    assert accepted.status_code == 202
    await eventually(lambda: _syncing(client), "the full sync to start")
    current = (await client.get("/pipelines/zoho")).json()["current_sync"]
    for method, path in [
        ("POST", "/api/sync-worker/full-sync"),
        ("POST", "/api/sync-worker/incremental-sync"),
        ("POST", "/api/sync-worker/force-sync/e1"),
        ("POST", "/pipelines/zoho/force/e1"),
    ]:
        refused = await client.request(method, path)
        assert refused.status_code == 409, path
        assert refused.json()["detail"]["sync_id"] == current["id"], path
        assert refused.json()["detail"]["mode"] == "full"
    legacy = (await client.get("/api/sync-worker/status")).json()
    assert legacy["current_syncs"]["zoho"]["id"] == current["id"]
    sink.hold.set()
    # The generic endpoint queues instead: it answers once the running sync and its own ran.
    queued = await client.post("/pipelines/zoho/sync", json={"mode": "incremental"})
    assert queued.status_code == 200 and queued.json()["sync_id"] != current["id"]
    runs = (await client.get("/pipelines/zoho")).json()["recent_runs"]
    assert {r["sync_id"] for r in runs} >= {current["id"], queued.json()["sync_id"]}


async def _syncing(client: httpx.AsyncClient) -> bool:
    return (await client.get("/pipelines/zoho")).json()["current_sync"] is not None


async def test_the_discrepancy_check_and_its_repair(
    grouped: tuple[httpx.AsyncClient, Pipeline],
) -> None:
    client, pipeline = grouped
    check = await client.get("/api/sync-worker/discrepancy-check")
    assert check.status_code == 200, check.text
    body = check.json()
    assert body["has_discrepancies"] is True
    assert (body["missing"], body["extra"], body["different"]) == (3, 1, 1)
    report = body["results"]["zoho"]
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["e1"]["missing"]["keys"] == ["r2", "r3"]
    assert groups["e1"]["extra"]["keys"] == ["r9"]
    assert groups["e1"]["different"]["keys"] == ["r1"]
    assert groups["e2"]["present"] == "source"
    repaired = await client.get("/pipelines/zoho/discrepancies", params={"repair": "true"})
    assert repaired.status_code == 200, repaired.text
    repair: dict[str, Any] = repaired.json()["repair"]
    assert repair["requested"] == {"missing": 3, "extra": 1, "different": 1}
    assert repair["remaining"] == 0 and repair["error"] is None
    source = pipeline.source
    assert isinstance(source, CheckedSource)
    assert sorted(source.resyncs) == [("e1", ["r1", "r2", "r3", "r9"]), ("e2", ["r4"])]
    after = (await client.get("/api/sync-worker/discrepancy-check")).json()
    assert after["total_discrepancies"] == 0 and after["has_discrepancies"] is False
