"""Seed 002's case through the example's config, a fake Zoho Creator, the real Redis and the
real HTTP client: 40 events with 2,419 registrations in Zoho; Redis holds 2,355 of them, 12
with stale contents, and 7 that Zoho no longer has. The discrepancy check reports exactly 64
missing, 12 different and 7 extra, by key; repair makes the next check report zero; a full
sync from empty gives the same Redis contents byte for byte."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aredis

from syncworker.reconcile.groups import check_pipeline, sides_for
from tests.fakes.zoho_creator import ZohoCreatorServer
from tests.integration import zoho_redis_support as support
from tests.integration.zoho_redis_support import (
    EXAMPLE,
    REGISTRATIONS,
    close_pipeline,
    environ,
    example_config,
    open_pipeline,
    pick,
    seed_events,
    seed_registrations,
    snapshot,
)

h3_prefix = support.h3_prefix  # fixtures
rclient = support.rclient

SYNCED = 2_355 + 7  # what the first full sync copies: 2,355 kept + 7 Zoho deletes later


async def seed_case(zoho: ZohoCreatorServer, env: dict[str, str]) -> dict[str, list[str]]:
    """Zoho and Redis as the seed found them; the ids of each planted difference."""
    rng = random.Random(2419)
    events = seed_events(zoho, 40)
    synced = seed_registrations(zoho, events, SYNCED)
    pipeline, state = await open_pipeline(example_config(env))
    try:
        run = await pipeline.run_once("full")
        assert run.status == "success" and run.processed == SYNCED, run.to_dict()
    finally:
        await close_pipeline(pipeline, state)
    gone = pick(synced, 7, rng)
    for record_id in gone:
        zoho.delete(REGISTRATIONS, record_id)
    kept = sorted(set(synced) - set(gone))
    stale = pick(kept, 12, rng)
    for record_id in stale:
        zoho.update(REGISTRATIONS, record_id, {"Name": f"Renamed {record_id}"})
    missing = seed_registrations(zoho, events, 64, start=SYNCED)
    assert len(zoho.records(REGISTRATIONS)) == 2_419
    return {"missing": sorted(missing), "different": stale, "extra": gone}


def by_kind(body: dict[str, object], kind: str) -> list[str]:
    groups = body["groups"]
    assert isinstance(groups, list)
    return sorted(k for g in groups for k in g[kind]["keys"])


async def test_the_seed_case_is_found_exactly_and_repaired(
    tmp_path: Path, h3_prefix: str, rclient: aredis.Redis
) -> None:
    async with ZohoCreatorServer() as zoho:
        env = environ(zoho, h3_prefix, tmp_path / "state.db")
        planted = await seed_case(zoho, env)
        assert await rclient.scard(f"{h3_prefix}events:synced") == 40

        pipeline, state = await open_pipeline(example_config(env))
        try:
            sides = sides_for(pipeline)
            assert sides is not None
            report = (await check_pipeline(pipeline, sides)).to_json()
            totals = report["totals"]
            assert (totals["missing"], totals["different"], totals["extra"]) == (64, 12, 7)
            assert totals["source_rows"] == 2_419 and totals["target_rows"] == 2_362
            for kind, ids in planted.items():
                assert by_kind(report, kind) == ids, kind

            repaired = (await check_pipeline(pipeline, sides, repair=True)).to_json()
            assert repaired["repair"]["requested"] == {"missing": 64, "extra": 7, "different": 12}
            assert repaired["repair"]["remaining"] == 0, repaired["repair"]
            again = (await check_pipeline(pipeline, sides)).to_json()
            assert again["status"] == "consistent" and again["totals"]["differences"] == 0
            assert again["totals"]["target_rows"] == 2_419
            # A full sync over the repaired Redis brings the events' metadata up to date too.
            run = await pipeline.run_once("full")
            assert run.status == "success" and run.removed == 0
        finally:
            await close_pipeline(pipeline, state)
        repaired_bytes = await snapshot(rclient, h3_prefix)

        # From empty: a new state store and no key of ours left.
        ours = [k async for k in rclient.scan_iter(match=f"{h3_prefix}*", count=2000)]
        await rclient.delete(*ours)
        fresh_env = {**env, "SYNC_STATE_PATH": str(tmp_path / "fresh.db")}
        pipeline, state = await open_pipeline(example_config(fresh_env))
        try:
            run = await pipeline.run_once("full")
            assert run.status == "success" and run.processed == 2_419 and run.added == 2_419
        finally:
            await close_pipeline(pipeline, state)
        fresh_bytes = await snapshot(rclient, h3_prefix)
    record_keys = [k for k in fresh_bytes if b":registration:" in k]
    assert len(record_keys) == 2_419
    assert fresh_bytes.keys() == repaired_bytes.keys()
    for key, value in fresh_bytes.items():
        assert repaired_bytes[key] == value, key


async def test_the_cli_reports_the_seed_case_by_key(
    tmp_path: Path, h3_prefix: str, rclient: aredis.Redis
) -> None:
    async with ZohoCreatorServer() as zoho:
        env = environ(zoho, h3_prefix, tmp_path / "state.db")
        planted = await seed_case(zoho, env)
        config = tmp_path / "syncworker.yaml"
        config.write_text(EXAMPLE.read_text())
        command = [
            sys.executable,
            "-m",
            "syncworker.cli",
            "discrepancy-check",
            "zoho_registrations",
        ]
        command += ["--config", str(config), "--json"]
        found = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
        )
        assert found.returncode == 1, found.stderr[-2000:]
        assert found.stdout.startswith("{"), (found.stdout[:500], found.stderr[-1500:])
        body = json.loads(found.stdout)
        assert (body["totals"]["missing"], body["totals"]["different"]) == (64, 12)
        assert body["totals"]["extra"] == 7
        for kind, ids in planted.items():
            assert by_kind(body, kind) == ids, kind
        repaired = await asyncio.to_thread(
            subprocess.run,
            [*command, "--repair"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert repaired.returncode == 0, repaired.stderr[-2000:]
        assert json.loads(repaired.stdout)["repair"]["remaining"] == 0
        clean = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
        )
        assert clean.returncode == 0 and json.loads(clean.stdout)["status"] == "consistent"
