"""Issue 11's scale acceptance, through ``syncworker run`` on the example's config, a fake Zoho
Creator (1,000 records a page) and the real Redis: a full sync of N records over 100 events
ends exact with a peak RSS flat between N/10 and N records, and a run killed with SIGKILL in
the middle, then started again, ends exact too.

Sized by ``SYNCWORKER_ZOHO_ROWS``: 20,000 in the normal suite, 200,000 in ``make chaos`` (the
issue's figure). The figures (duration, peak RSS) are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis.asyncio as aredis

from syncworker.reconcile.groups import check_pipeline, sides_for
from tests.conformance.harness import PYTHON, child_env
from tests.fakes.zoho_creator import ZohoCreatorServer
from tests.integration import zoho_redis_support as support
from tests.integration.zoho_redis_support import (
    EXAMPLE,
    close_pipeline,
    environ,
    example_config,
    open_pipeline,
    seed_events,
    seed_registrations,
)
from tests.waiting import NotYet, eventually

ROWS = int(os.environ.get("SYNCWORKER_ZOHO_ROWS", "20000"))
GROUPS = 100
KILL_AT = 0.30  # share of the records in Redis when the first run is killed
SCALE_S = 60.0 + ROWS / 1_000

pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(120 + 6 * SCALE_S))]

h3_prefix = support.h3_prefix  # fixture
FIGURES: dict[str, Any] = {}
RUNNING: list[Run] = []


class Run:
    """``syncworker run EXAMPLE --once`` with ``env``, its peak RSS sampled while it runs."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "syncworker.cli", "--log-format", "json", "run", str(EXAMPLE), "--once"],
            env={**child_env(), **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.peak_rss = 0
        self.started = time.monotonic()
        RUNNING.append(self)
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        proc = psutil.Process(self.process.pid)
        while self.process.poll() is None:
            try:
                self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            except psutil.Error:
                return
            await asyncio.sleep(0.05)

    async def wait(self, timeout_s: float) -> int:
        try:
            await eventually(
                lambda: self.process.poll() is not None,
                "syncworker run to end",
                timeout_s=timeout_s,
                interval_s=0.05,
            )
        except NotYet:
            self.process.kill()
            raise
        await self._sampler
        self.process.wait()
        self.log.close()
        return self.process.returncode

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)  # no ack, no close, no shutdown


async def held(client: aredis.Redis, prefix: str) -> int:
    """Records in Redis now: the members of every event's index set."""
    total = 0
    async for key in client.scan_iter(match=f"{prefix}event:*:registrations", count=1000):
        total += await client.scard(key)
    return total


async def assert_exact(env: dict[str, str], client: aredis.Redis, prefix: str, rows: int) -> None:
    pipeline, state = await open_pipeline(example_config(env))
    try:
        sides = sides_for(pipeline)
        assert sides is not None
        report = (await check_pipeline(pipeline, sides)).to_json()
    finally:
        await close_pipeline(pipeline, state)
    totals = report["totals"]
    assert totals["differences"] == 0, totals
    assert totals["source_rows"] == rows and totals["target_rows"] == rows
    keys = [k async for k in client.scan_iter(match=f"{prefix}registration:*", count=5000)]
    assert len(keys) == rows


def run_env(zoho: ZohoCreatorServer, prefix: str, tmp: Path, name: str) -> dict[str, str]:
    return environ(zoho, prefix, tmp / f"{name}.db", SYNC_BATCH_SIZE="1000")


async def test_full_syncs_are_exact_with_flat_memory_and_survive_sigkill(
    tmp_path: Path, h3_prefix: str
) -> None:
    client = aredis.Redis.from_url(support.REDIS_URL)
    zoho = ZohoCreatorServer()
    zoho.keep_requests = False
    try:
        async with zoho:
            events = seed_events(zoho, GROUPS)
            small = ROWS // 10
            seed_registrations(zoho, events, small)
            env = run_env(zoho, f"{h3_prefix}small:", tmp_path, "small")
            first = Run(env, tmp_path / "small.log")
            assert await first.wait(SCALE_S) == 0
            await assert_exact(env, client, f"{h3_prefix}small:", small)
            FIGURES["small_rows"], FIGURES["small_rss_mb"] = small, first.peak_rss / 2**20

            seed_registrations(zoho, events, ROWS - small, start=small)
            env = run_env(zoho, f"{h3_prefix}full:", tmp_path, "full")
            full = Run(env, tmp_path / "full.log")
            assert await full.wait(SCALE_S) == 0
            FIGURES["full_s"] = round(time.monotonic() - full.started, 2)
            FIGURES["rows"], FIGURES["full_rss_mb"] = ROWS, full.peak_rss / 2**20
            await assert_exact(env, client, f"{h3_prefix}full:", ROWS)
            # Memory is bounded by batches in flight, not by the records read: ten times the
            # records may not cost more than a quarter more memory (plus 20 MB of noise).
            assert full.peak_rss <= first.peak_rss * 1.25 + 20 * 2**20, FIGURES

            prefix = f"{h3_prefix}killed:"
            env = run_env(zoho, prefix, tmp_path, "killed")
            killed = Run(env, tmp_path / "killed.log")
            await eventually(
                lambda: _past(client, prefix, int(ROWS * KILL_AT)),
                "the first run to hold 30 % of the records",
                timeout_s=SCALE_S,
                interval_s=0.02,
            )
            killed.kill()
            await killed.wait(10)
            FIGURES["held_at_kill"] = await held(client, prefix)
            assert FIGURES["held_at_kill"] < ROWS, "the run ended before the kill"
            again = Run(env, tmp_path / "killed.log")
            assert await again.wait(SCALE_S) == 0
            FIGURES["restart_s"] = round(time.monotonic() - again.started, 2)
            await assert_exact(env, client, prefix, ROWS)
    finally:
        for run in RUNNING:
            if run.process.poll() is None:
                run.kill()
                await run.wait(10)
        RUNNING.clear()
        await client.aclose()
        print("zoho -> redis acceptance:", FIGURES)


async def _past(client: aredis.Redis, prefix: str, count: int) -> bool:
    return await held(client, prefix) >= count
