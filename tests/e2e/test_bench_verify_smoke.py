"""A bounded run of bench/verify.py (syncworker only, no peers), so it cannot rot: the
planted differences must be found exactly; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import PG_ADMIN_URL, _pg_admin

BENCH = Path(__file__).parents[2] / "bench"

pytestmark = pytest.mark.integration


def test_verify_bench_finds_the_planted_keys(tmp_path: Path) -> None:
    _pg_admin().close()  # PostgreSQL must answer: fail clearly, never skip
    out = tmp_path / "result.json"
    prefix = f"sw_test_bv{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, str(BENCH / "verify.py"), "--rows", "3000", "--repeat", "1",
         "--peer", "syncworker", "--pg-dsn", PG_ADMIN_URL, "--db-prefix", prefix,
         "--lock", "", "--json", str(out)],
        timeout=300,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    cases = {c["case"]: c for c in json.loads(out.read_text())["cases"]}
    assert set(cases) == {"syncworker identical", "syncworker planted"}
    for case in cases.values():
        assert case["correct"] == case["runs"] == 1, case["problems"]
        assert case["peak_rss_mb"] > 0
    with _pg_admin() as admin:  # its two databases are dropped
        left = admin.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",)
        ).fetchone()
    assert left == (0,)
