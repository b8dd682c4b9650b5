"""A bounded run of each benchmark, so `make bench` cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.private_redis import private_redis

BENCH = Path(__file__).parents[2] / "bench"
PG_ADMIN = os.environ.get("SYNCWORKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


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
    # Without --check (its targets cannot hold at smoke sizes): it still exits 1 when a
    # message is missing or repeated at a target.
    out = tmp_path / "result.json"
    args = ["--messages", "20000", "--repeat", "1", "--lock", "", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(BENCH / "pipeline_embedded.py"), *args],
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| case |" in done.stdout and "held: every message arrived" in done.stdout
    result: dict[str, Any] = json.loads(out.read_text())
    cases = {r["case"]: r for r in result["cases"]}
    assert set(cases) == {
        "syncworker jsonl",
        "syncworker jsonl + api",
        "syncworker jsonl+sqlite",
        "hand-written jsonl",
    }
    assert result["problems"] == []
    for case in cases.values():
        assert case["backlog"] == 20000 and case["complete_runs"] == case["runs"] == 1
        [run] = case["all_runs"]
        # counted at the target (JSONL lines, SQLite rows, the queue) by the bench
        assert run["problems"] == [] and run["left_in_queue"] == 0
        assert run["runtime_records"] == 20000
        assert case["records_per_s"] > 0 and case["worker_cpu_us_per_record"] > 0
    [pair] = result["api_pairs"]
    assert pair["poller_requests"] % 4 == 0
    assert [t["met"] for t in result["targets"]][-1] is True  # every message, exactly once
    assert all(isinstance(t["met"], bool) for t in result["targets"])


def test_pipeline_embedded_profile_runs(tmp_path: Path) -> None:
    args = ["--messages", "5000", "--lock", "", "--profile", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(BENCH / "pipeline_embedded.py"), *args],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert (
        "--- thread MainThread" in done.stdout and "--- thread sqlite-sqlite_queue" in done.stdout
    )
    assert (tmp_path / "hand-written_jsonl.prof.MainThread").exists()


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


@contextmanager
def outbox_services(tag: str) -> Iterator[list[str]]:
    """The options for an outbox bench: the test server, a prefix of the test's own and no
    lock. A database of that prefix made beforehand must survive the run (the bench drops
    only what it created), and none of the bench's own may be left."""
    import psycopg
    from psycopg import sql

    prefix = f"sw_smoke_{tag}_{uuid.uuid4().hex[:6]}"
    bystander = sql.Identifier(f"{prefix}_kept")
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(bystander))
    try:
        yield ["--pg-dsn", PG_ADMIN, "--db-prefix", prefix, "--lock", ""]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            left = admin.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
                (prefix,),
            ).fetchall()
        assert left == [(f"{prefix}_kept",)]
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(bystander))


def run_outbox_bench(script: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run an outbox bench without --check (its targets cannot hold at smoke sizes): it
    still exits 1 when anything is missing. Returns what it wrote with --json."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json", str(out)],
        timeout=110,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| case |" in done.stdout and "target" in done.stdout
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["problems"] == []
    assert result["targets"] and all(isinstance(t["met"], bool) for t in result["targets"])
    return result


def test_outbox_latency_bench_runs(tmp_path: Path) -> None:
    with outbox_services("lat") as services:
        args = ["--rate", "200", "--seconds", "3", "--repeat", "1", *services]
        result = run_outbox_bench("outbox_latency.py", tmp_path, *args)
    cases = {r["case"]: r for r in result["cases"]}
    assert set(cases) == {"syncworker LISTEN", "syncworker listen=false", "seed poller"}
    for case in cases.values():
        assert case["runs"] == 1 and case["changes"] == 600
        assert case["arrived"] == case["changes"] and case["missing"] == 0
        assert case["queue_unfinished"] == 0 and case["stale"] == 0
        assert case["queue_rows"] >= 600
        assert case["p50_ms_min"] <= case["p50_ms"] <= case["p50_ms_max"]
        assert case["p50_ms"] >= 0 and case["max_ms"] >= case["p50_ms"]
        assert case["worker_peak_rss_mb"] > 0
    assert len(result["targets"]) == 2


def test_outbox_throughput_bench_runs(tmp_path: Path) -> None:
    with outbox_services("tp") as services:
        args = ["--rows", "5000", "--repeat", "2", *services]
        result = run_outbox_bench("outbox_throughput.py", tmp_path, *args)
    cases = {r["case"]: r for r in result["cases"]}
    assert set(cases) == {
        "syncworker 1 worker, batch 5000",
        "syncworker 3 workers, batch 5000",
        "syncworker 1 worker, batch 100",
        "hand-written 1 worker, batch 100",
        "hand-written 1 worker, batch 5000",
    }
    for case in cases.values():
        assert case["runs"] == 2 and case["rows"] == 5000 and case["completed"] == 2 * 5000
        assert case["rows_per_s_min"] <= case["rows_per_s"] <= case["rows_per_s_max"]
        assert len(case["received_per_worker"]) == case["workers"]
        assert sum(case["received_per_worker"]) == 5000
        assert case["peak_rss_mb"] > 0
    [target] = result["targets"]
    assert target["value"] > 0 and len(target["ratio_per_repeat"]) == 2
