"""A bounded run of bench/connectors.py (its --smoke mode: a few thousand messages, one run
of every case), so it cannot rot: every message must arrive exactly once at each target (the
JSONL files, the webhook receiver, the fake Algolia), nothing may be left in Redis, and no
key of the run's prefix may survive it. No timing is asserted, and --check is not passed."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

BENCH = Path(__file__).parents[2] / "bench"
REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_connectors_bench_delivers_every_message(tmp_path: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # Redis must answer: fail clearly, never skip
    prefix = f"h3:bench:{uuid.uuid4().hex[:8]}:"
    neighbour = f"{prefix[:-1]}-not-ours"
    client.set(neighbour, "kept")  # a key beside the prefix must survive the run
    out = tmp_path / "result.json"
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / "connectors.py"), "--smoke", "--redis-url", REDIS_URL,
             "--redis-prefix", prefix, "--lock", "", "--json", str(out)],
            timeout=110,
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
        assert set(rows) == {
            "stream-sw", "stream-loop", "webhook-sw", "webhook-loop", "algolia-sw",
            "algolia-loop", "lists-sw-1", "lists-sw-2", "lists-sw-3", "lists-loop-1",
            "lists-loop-2", "lists-loop-3",
        }  # fmt: skip
        for row in rows.values():
            assert row["runs"] == 1
            assert row["arrived"] == row["messages"] > 0, row["problems"]
            assert row["missing"] == row["repeats"] == row["strays"] == 0, row["problems"]
            assert row["left_in_redis"] == 0
            assert not row["problems"]
        for workers in (2, 3):  # each worker process reported
            [run] = rows[f"lists-sw-{workers}"]["all_runs"]
            assert len(run["records_per_worker"]) == workers
        assert not list(client.scan_iter(match=f"{prefix}*"))
        assert client.get(neighbour) == b"kept"
    finally:
        client.delete(neighbour)
        client.close()
