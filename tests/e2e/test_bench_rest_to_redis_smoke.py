"""A bounded run of bench/rest_to_redis.py (a few thousand records, one repetition), so it
cannot rot: both sync cases must leave exactly the records in Redis, the check must find
exactly the planted differences, and nothing may be left under the prefix; no timing is
asserted."""

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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_rest_to_redis_bench_moves_and_checks_exactly(tmp_path: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # Redis must answer: fail clearly, never skip
    prefix = f"h3:bench:{uuid.uuid4().hex[:8]}:"
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "rest_to_redis.py"), "--records", "3000", "--events", "10",
         "--diffs", "20", "--repeat", "1", "--port", "17352", "--redis-url", REDIS_URL,
         "--redis-prefix", prefix, "--lock", "", "--json", str(out)],
        timeout=280,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"syncworker", "hand-loop", "discrepancy-check"}
    for row in rows.values():
        assert row["correct"] == row["runs"] == 1, row["problems"]
        assert row["peak_rss_mb"] > 0
    assert not list(client.scan_iter(match=f"{prefix}*"))
    client.close()
