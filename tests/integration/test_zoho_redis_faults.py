"""Faults during a full sync of the example's pipeline (fake Zoho Creator, real Redis, real
HTTP client): the access token expiring mid-sync (one refresh, no failed page), 429 with
Retry-After, a burst of 5xx, a malformed page, a record without an id and one that is no
object, the sink's Redis connections killed, and Redis restarted. The sync ends exact, the
bad records are dead-lettered with the page they came from, and the errors are in the status
and the logs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aredis
import structlog

from syncworker.config import parse_config
from syncworker.core import jsonvalue
from syncworker.reconcile.groups import check_pipeline, sides_for
from syncworker.state import state_store_from_url
from tests.fakes.zoho_creator import ZohoCreatorServer
from tests.integration import zoho_redis_support as support
from tests.integration.test_redis_restart import PrivateRedis
from tests.integration.zoho_redis_support import (
    EXAMPLE,
    PIPELINE,
    REGISTRATIONS,
    environ,
    seed_events,
    seed_registrations,
)
from tests.waiting import eventually

h3_prefix = support.h3_prefix  # fixtures
rclient = support.rclient

EVENTS = 10
PER_EVENT = 450  # three pages of 200 per event


async def kill_our_redis_connections(client: aredis.Redis) -> int:
    """CLIENT KILL every connection this process holds to Redis but ``client``'s own (never
    another program's: they are found by this process's local ports)."""
    own_id = await client.client_id()
    ports = {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == 6379
    }
    killed = 0
    for info in await client.client_list():
        port = int(str(info["addr"]).rsplit(":", 1)[1])
        if int(info["id"]) != own_id and port in ports:
            killed += await client.client_kill_filter(_id=info["id"])
    return killed


async def test_a_full_sync_through_every_fault_ends_exact(
    tmp_path: Path, h3_prefix: str, rclient: aredis.Redis
) -> None:
    async with ZohoCreatorServer(retry_after=0.2) as zoho:
        events = seed_events(zoho, EVENTS)
        seed_registrations(zoho, events, EVENTS * PER_EVENT)
        bad_group = events[3]
        no_id = {"Event": {"ID": bad_group}, "Name": "no id here"}
        zoho.put_raw(REGISTRATIONS, jsonvalue.dumps(no_id), {"Event": {"ID": bad_group}})
        zoho.put_raw(REGISTRATIONS, b'"just a string"', {"Event": {"ID": bad_group}})
        env = environ(zoho, h3_prefix, tmp_path / "state.db", SYNC_BATCH_SIZE="100")
        text = EXAMPLE.read_text().replace("max_records: 1000", "max_records: 200")
        config = parse_config(text, EXAMPLE, environ=env)
        state = state_store_from_url(config.app.state)
        await state.open()
        [pipeline] = config.build(state, [PIPELINE])
        faults: dict[int, Any] = {
            3: lambda: zoho.respond_next("expire"),
            6: lambda: zoho.respond_next("429"),
            9: lambda: zoho.respond_next(500, 503, 502),
            12: lambda: zoho.respond_next("malformed"),
        }
        batches = 0
        killed: list[int] = []

        async def inject(_: dict[str, Any]) -> None:
            nonlocal batches
            batches += 1
            if batches in faults:
                faults[batches]()
            if batches == 15:
                killed.append(await kill_our_redis_connections(rclient))

        pipeline.on("batch_committed", inject)
        try:
            with structlog.testing.capture_logs() as logs:
                started = time.monotonic()
                run = await pipeline.run_once("full")
                duration_s = time.monotonic() - started
            status = pipeline.status()
            sides = sides_for(pipeline)
            assert sides is not None
            report = (await check_pipeline(pipeline, sides)).to_json()
            letters = await state.dead_letters(PIPELINE)
            errors = await state.errors(PIPELINE, limit=50)
        finally:
            await pipeline.close()
            await state.close()

    assert run.status == "success", run.to_dict()
    assert run.processed == EVENTS * PER_EVENT and status["totals"]["failed_batches"] == 0
    assert killed and killed[0] >= 1
    assert report["totals"]["differences"] == 0 and report["totals"]["target_rows"] == 4500
    assert zoho.tokens_issued == 2  # the first token, and one refresh when it expired
    assert zoho.throttled >= 1
    # The two bad rows are dead letters naming their page; the rest of their page went on.
    assert len(letters) == 2, [d.to_dict() for d in letters]
    assert all(d.meta.get("page") is not None for d in letters), [d.meta for d in letters]
    assert {e.type for e in errors} >= {"dead_letter"} or len(errors) >= 2
    # The errors are in the status and the logs.
    source_status = status["source_status"]
    assert source_status is not None and source_status["dead_lettered"] == 2
    assert source_status["last_error"], source_status
    names = [entry["event"] for entry in logs]
    assert "http_token_refreshed" in names
    assert any("dead" in n for n in names), sorted(set(names))
    assert any("retry" in n or "failed" in n for n in names), sorted(set(names))
    assert duration_s < 60


async def test_redis_restarted_mid_sync_ends_exact(tmp_path: Path) -> None:
    """A private redis-server (AOF, fsync always; the shared one is not ours to restart),
    shut down and started again while the full sync writes to it."""
    server = PrivateRedis(tmp_path, persistent=True)
    server.start()
    restarts: list[asyncio.Task[None]] = []
    try:
        async with ZohoCreatorServer() as zoho:
            events = seed_events(zoho, EVENTS)
            seed_registrations(zoho, events, EVENTS * PER_EVENT)
            env = environ(zoho, "", tmp_path / "state.db", SYNC_BATCH_SIZE="100")
            env["REDIS_URL"] = server.url
            text = EXAMPLE.read_text().replace("max_records: 1000", "max_records: 200")
            config = parse_config(text, EXAMPLE, environ=env)
            state = state_store_from_url(config.app.state)
            await state.open()
            [pipeline] = config.build(state, [PIPELINE])
            batches = 0

            async def restart(_: dict[str, Any]) -> None:
                nonlocal batches
                batches += 1
                if batches == 10:
                    restarts.append(asyncio.create_task(asyncio.to_thread(_restart, server)))

            pipeline.on("batch_committed", restart)
            try:
                with structlog.testing.capture_logs() as logs:
                    first = await pipeline.run_once("full")
                    await asyncio.gather(*restarts)
                    # A run the outage cut short ends at its first failure; the next one
                    # (the schedule's) goes on from where the source stands.
                    runs = [first]

                    async def caught_up() -> bool:
                        # run_once waits out the breaker's pause itself.
                        if runs[-1].status != "success":
                            runs.append(await pipeline.run_once("incremental"))
                        return runs[-1].status == "success"

                    await eventually(caught_up, "a run that ends the sync", timeout_s=60)
                sides = sides_for(pipeline)
                assert sides is not None
                report = (await check_pipeline(pipeline, sides)).to_json()
            finally:
                await pipeline.close()
                await state.close()
    finally:
        server.stop()
    assert restarts, "the restart was not triggered"
    assert runs[-1].status == "success", [r.to_dict() for r in runs]
    assert report["totals"]["differences"] == 0 and report["totals"]["target_rows"] == 4500
    names = [entry["event"] for entry in logs]
    assert "sink_write_failed" in names or "sink_unavailable" in names, sorted(set(names))


def _restart(server: PrivateRedis) -> None:
    server.shutdown()
    server.start()
