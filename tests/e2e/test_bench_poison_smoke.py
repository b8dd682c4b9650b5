"""A bounded run of bench/poison_drain.py, so it cannot rot. No timing is asserted: the run
must only drain both backlogs and pass its own checks (rows, lines, dead letters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_bench_smoke import run_bench

pytestmark = pytest.mark.integration


def test_poison_drain_bench_runs(tmp_path: Path) -> None:
    results = {
        r["case"]: r
        for r in run_bench(
            "poison_drain.py", tmp_path, "--messages", "1000", "--repeat", "1", timeout_s=300
        )
    }
    assert set(results) == {
        "redis_list clean",
        "redis_list poison",
        "redis_stream clean",
        "redis_stream poison",
    }
    for case, result in results.items():
        assert result["problems"] == [], case
        assert result["messages"] == 1000 and result["runs"] == 1
        assert result["dead_letters"] == (24 if result["kind"] == "poison" else 0)
        assert result["seconds"] > 0
    assert results["redis_list poison"]["ratio_to_clean"] > 0
