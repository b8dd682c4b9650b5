"""Seed 002's status helpers (compat/zoho_worker.py), shared by its Python API and
/api/sync-worker/status: the seven counters summed over pipelines, the newest run's
duration, the seed's config fields and its ISO time."""

from __future__ import annotations

from typing import Any

from syncworker.compat.zoho_worker import last_sync_time, seed_config, seed_stats
from syncworker.core import Pipeline, PipelineSettings, RetryPolicy
from syncworker.core.schedule import Schedule
from syncworker.testing import MemorySink, MemorySource


def status(runs: int, ok: int, added: int, at: float | None, ms: float | None) -> dict[str, Any]:
    totals = {"runs": runs, "succeeded_runs": ok, "failed_runs": runs - ok, "added": added}
    totals |= {"updated": 1, "removed": 2}
    return {"totals": totals, "last_sync_at": at, "last_duration_ms": ms}


def test_the_seven_counters_add_up_and_the_newest_run_gives_the_duration() -> None:
    stats = seed_stats([status(3, 2, 10, 100.0, 50.0), status(1, 1, 5, 200.0, 7.5)])
    assert stats == {
        "total_syncs": 4,
        "successful_syncs": 3,
        "failed_syncs": 1,
        "records_added": 15,
        "records_updated": 2,
        "records_removed": 4,
        "last_sync_duration": 7.5,
    }
    assert seed_stats([])["total_syncs"] == 0 and seed_stats([])["last_sync_duration"] == 0


def test_the_time_is_the_seeds_iso_form() -> None:
    assert last_sync_time([status(1, 1, 0, 1_700_000_000.25, 1.0)]) == "2023-11-14T22:13:20.250Z"
    assert last_sync_time([status(0, 0, 0, None, None)]) is None


def test_the_config_fields_follow_the_pipeline() -> None:
    settings = PipelineSettings(
        batch_size=100, schedule=Schedule.every(300), retry=RetryPolicy(attempts=3)
    )
    pipeline = Pipeline("p", MemorySource(), [MemorySink()], settings=settings)
    config = seed_config(pipeline)
    assert config["sync_interval_ms"] == 300_000 and config["batch_size"] == 100
    assert config["max_retries"] == 3 and config["enable_auto_sync"] is True
    assert config["enable_discrepancy_detection"] is False
    manual = Pipeline("m", MemorySource(), [MemorySink()], settings=PipelineSettings(
        schedule=Schedule.manual()))  # fmt: skip
    assert seed_config(manual)["enable_auto_sync"] is False
