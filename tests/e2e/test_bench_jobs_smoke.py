"""A bounded run of bench/jobs.py on syncworker's own cases (500 jobs, 5 latency samples, a
5,000-job backlog for the memory case), so it cannot rot. No peers are needed (without their
folder the bench runs its own copy of the harness's method); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.private_redis import private_redis

BENCH = Path(__file__).parents[2] / "bench"
CASES = ("syncworker-redis", "syncworker-postgres", "syncworker-sqlite")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_jobs_bench_runs_every_job_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    cases = [arg for case in CASES for arg in ("--case", case)]
    with private_redis() as redis_url:  # the harness FLUSHALLs its Redis
        done = subprocess.run(
            [sys.executable, str(BENCH / "jobs.py"), *cases, "--jobs", "500",
             "--latency-samples", "5", "--repeat", "1", "--rss-jobs", "5000",
             "--rss-seconds", "1", "--peers-dir", str(tmp_path / "no-peers"),
             "--redis-url", redis_url, "--lock", "", "--json", str(out)],
            timeout=280,
            capture_output=True,
            text=True,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    body = json.loads(out.read_text())
    rows = {r["case"]: r for r in body["cases"]}
    assert set(rows) == set(CASES)
    for row in rows.values():
        assert row["status"] == "ran"
        assert row["correct"] == row["runs"] == 1, row["problems"]
        for metric in ("process_jobs_per_s", "enqueue_jobs_per_s", "latency_p50_ms"):
            assert row[metric] > 0, metric
    runs = {r["case"]: r for r in body["runs"]}
    for run in runs.values():
        assert run["records_total"] == run["distinct_tags"] == 500 + 5 + 3
        assert run["duplicates"] == 0
    assert {r["case"] for r in body["rss"]} == {"syncworker-redis", "syncworker-postgres"}
    for rss in body["rss"]:
        assert rss["correct"] and rss["peak_rss_mb"] > 0 and rss["jobs_done"] > 0
    assert {name for name, _met, _detail in body["targets"]} >= {
        "sqlite processing >= 5,000/s",
        "redis idle latency p50 <= 1 ms",
        "postgres bulk enqueue >= 80,000/s",
    }
