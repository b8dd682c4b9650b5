"""A bounded run of each benchmark, so `make bench` cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.private_redis import private_redis

BENCH = Path(__file__).parents[2] / "bench"


def run_bench(script: str, tmp_path: Path, *args: str, timeout_s: float) -> list[dict[str, Any]]:
    """Run ``bench/<script>`` with ``args`` and return the results it wrote with --json."""
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json", str(out)],
        check=True,
        timeout=timeout_s,
        capture_output=True,
    )
    results: list[dict[str, Any]] = json.loads(out.read_text())
    return results


def test_pipeline_embedded_bench_runs(tmp_path: Path) -> None:
    results = run_bench(
        "pipeline_embedded.py", tmp_path, "--messages", "20000", "--repeat", "1", timeout_s=300
    )
    assert {r["case"] for r in results} == {
        "syncworker jsonl",
        "syncworker jsonl + api",
        "syncworker jsonl+sqlite",
        "hand-written jsonl",
    }
    for result in results:
        assert result["backlog"] == 20000
        assert result["records_per_s"] > 0 and result["peak_rss_mb"] > 0


def test_redis_to_postgres_bench_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    with private_redis() as redis_url:
        monkeypatch.setenv("SYNCWORKER_BENCH_REDIS", redis_url)
        client = redis.Redis.from_url(redis_url)
        client.set("not:the:bench's", "kept")
        args = ("--messages", "20000", "--repeat", "1", "--lock", "")
        results = {
            r["case"]: r for r in run_bench("redis_to_postgres.py", tmp_path, *args, timeout_s=300)
        }
        # The server's other keys are left alone, and the bench leaves none of its own.
        assert client.get("not:the:bench's") == b"kept"
        assert client.dbsize() == 1
        client.close()
    assert set(results) == {
        "syncworker redis_list -> postgres",
        "syncworker redis_list -> jsonl",
        "hand-written LMOVE loop -> postgres",
        "hand-written COPY + upsert (in memory)",
    }
    for result in results.values():
        assert result["messages"] == 20000 and result["msgs_per_s"] > 0
        # counted at the target by the bench, not taken from the runtime
        assert result["arrived"] == 20000 and result["missing"] == 0, result["problems"]
        assert result["left_in_redis"] == 0 and result["worker_cpu_us_per_msg"] > 0


def test_outbox_latency_bench_runs(tmp_path: Path) -> None:
    results = {
        r["case"]: r
        for r in run_bench(
            "outbox_latency.py", tmp_path, "--rate", "200", "--seconds", "3", timeout_s=110
        )
    }
    assert set(results) == {"syncworker LISTEN", "syncworker listen=false", "seed poller"}
    for result in results.values():
        assert result["changes"] == 600
        assert result["arrived"] == result["changes"] and result["missing"] == 0
        assert result["queue_unfinished"] == 0
        assert result["p50_ms"] >= 0 and result["max_ms"] >= result["p50_ms"]


def test_outbox_throughput_bench_runs(tmp_path: Path) -> None:
    results = {
        r["case"]: r
        for r in run_bench(
            "outbox_throughput.py", tmp_path, "--rows", "5000", "--repeat", "1", timeout_s=110
        )
    }
    assert set(results) == {
        "syncworker 1 worker, batch 5000",
        "syncworker 3 workers, batch 5000",
        "syncworker 1 worker, batch 100",
        "hand-written 1 worker, batch 100",
        "hand-written 1 worker, batch 5000",
    }
    for result in results.values():
        assert result["rows"] == 5000 and result["rows_per_s"] > 0
        assert len(result["records_per_worker"]) == result["workers"]
        assert sum(result["records_per_worker"]) == 5000
        assert all(rss > 0 for rss in result["peak_rss_mb"])
