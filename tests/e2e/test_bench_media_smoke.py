"""A bounded run of bench/media.py, so it cannot rot: every output of both cases must be
there, its database is dropped, and ``--check`` fails on a missed target (an unreachable
one is set); no timing is asserted."""

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


def test_media_bench_checks_its_outputs_and_fails_a_missed_target(tmp_path: Path) -> None:
    _pg_admin().close()  # PostgreSQL must answer: fail clearly, never skip
    out = tmp_path / "result.json"
    prefix = f"sw_test_bm{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, str(BENCH / "media.py"), "--images", "4", "--size", "640x480",
         "--repeat", "1", "--pg-dsn", PG_ADMIN_URL, "--db-prefix", prefix, "--lock", "",
         "--json", str(out), "--check", "--target", "1000"],
        timeout=300,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "MISSED: kit / pillow" in done.stdout
    summary = json.loads(out.read_text())
    assert {run["case"] for run in summary["runs"]} == {"kit", "pillow"}
    for run in summary["runs"]:
        assert run["correct"], run["missing"]
    with _pg_admin() as admin:  # its database is dropped
        left = admin.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",)
        ).fetchone()
    assert left == (0,)
