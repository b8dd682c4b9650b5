"""Bounded runs of the table benchmarks (issue 10), so `make bench` cannot rot: tiny sizes,
no peer tools (sling, dlt) needed. No timing is asserted; complete, correct data is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).parents[2] / "bench"


def run_bench(script: str, tmp_path: Path, *args: str, timeout_s: float) -> Any:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json", str(out)],
        timeout=timeout_s,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_table_sync_bench_runs(tmp_path: Path) -> None:
    peers = ["copy-floor", "syncworker", "syncworker-records"]
    args = ["--rows", "2000", "--changed", "100", "--repeat", "1", "--lock", ""]
    result = run_bench(
        "table_sync.py",
        tmp_path,
        *args,
        *(arg for peer in peers for arg in ("--peer", peer)),
        "--peers-root",
        str(tmp_path / "no-peers"),
        timeout_s=240,
    )
    cases = {c["case"]: c for c in result["cases"]}
    assert set(cases) == {
        "copy-floor full",
        "copy-floor incr",
        "syncworker full",
        "syncworker-warm incr",
        "syncworker incr",
        "syncworker-records full",
    }
    for case in cases.values():
        assert case["status"] == "ran" and case["problems"] == [], case
        assert case["runs"] == 1 and case["correct"] == 1  # count + checksum matched
        assert case["rows"] == (2000 if case["phase"] == "full" else 100)
        assert case["seconds"] > 0 and case["peak_rss_mb"] > 0
    assert {t[0] for t in result["targets"]} >= {">= 0.7x copy floor", ">= 2.0x sling"}


def test_table_sync_reports_a_missing_peer(tmp_path: Path) -> None:
    args = ["--rows", "200", "--changed", "10", "--repeat", "1", "--lock", "", "--peer", "sling"]
    result = run_bench(
        "table_sync.py",
        tmp_path,
        *args,
        "--peers-root",
        str(tmp_path / "no-peers"),
        timeout_s=120,
    )
    statuses = {c["case"]: c["status"] for c in result["cases"]}
    assert set(statuses) == {"sling full", "sling incr"}
    assert all(status.startswith("not installed") for status in statuses.values())


def test_pg_table_latency_bench_runs(tmp_path: Path) -> None:
    args = ["--rate", "200", "--seconds", "2", "--repeat", "1", "--lock", ""]
    results = {
        r["case"]: r for r in run_bench("pg_table_latency.py", tmp_path, *args, timeout_s=240)
    }
    assert set(results) == {"syncworker LISTEN", "syncworker poll", "hand-written LISTEN"}
    for result in results.values():
        assert result["updates"] == 400
        assert result["arrived"] == 400 and result["missing"] == 0
        assert 0 <= result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
        assert result["synced_at_p50_ms"] >= 0 and result["worker_peak_rss_mb"] > 0
