"""A bounded run of bench/poison_drain.py, so it cannot rot. No timing is asserted: the run
must only drain every backlog and pass its own checks (rows, lines, dead letters or, for
``pg_outbox`` with ``dead_letter: {store: source}``, failed queue rows)."""

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
        "pg_outbox clean",
        "pg_outbox poison",
    }
    for case, result in results.items():
        assert result["problems"] == [], case
        assert result["messages"] == 1000 and result["runs"] == 1
        assert result["poison"] == (24 if result["kind"] == "poison" else 0)
        # pg_outbox keeps what a sink refused in its queue ('failed' rows, checked by the
        # bench), the Redis sources in the dead letters
        letters = 24 if result["kind"] == "poison" and result["source"] != "pg_outbox" else 0
        assert result["dead_letters"] == letters, case
        assert result["seconds"] > 0
    for source in ("redis_list", "redis_stream", "pg_outbox"):
        assert results[f"{source} poison"]["ratio_to_clean"] > 0
