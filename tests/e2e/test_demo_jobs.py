"""`syncworker demo` runs seed 003's job queues on SQLite, with no services, and the
commands it prints work as printed."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.e2e.test_cli import cli


def test_the_jobs_demo_runs_every_job_and_its_commands_work(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = cli(
        "demo", "--dir", str(workdir), "--messages", "200", "--jobs", "300", "--no-progress"
    )
    assert "jobs summary" in result.stdout
    config = str(workdir / "jobs.yaml")
    counts = orjson.loads(cli("jobs", "counts", "--json", "--config", config).stdout)
    assert {queue: (c["completed"], c["dead"]) for queue, c in counts.items()} == {
        "cleanup": (27, 3),  # every 100th job (2, 102, 202) refers to no table: dead
        "media": (30, 0),
        "notification": (240, 0),  # the flaky ones completed on their retry
    }
    dead = orjson.loads(cli("jobs", "list", "--state", "dead", "--json", "--config", config).stdout)
    assert sorted(job["id"] for job in dead) == ["103", "203", "3"]
    assert {job["error"] for job in dead} == {
        "LookupError: no table to clean for type 'orphaned_tables'"
    }
    assert "requeued 3 job(s)" in cli("jobs", "requeue", "--all-dead", "--config", config).stdout
    assert "expired_stories" in cli("jobs", "cron", "list", "--config", config).stdout
