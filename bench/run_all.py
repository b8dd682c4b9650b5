"""`make bench`: every benchmark, one after the other, results printed and kept as JSON, then
one summary table: each benchmark's result, its time and the targets it missed (its lines
saying a target is "NOT met", "MISSED" or "!!"). Exits 1 when any benchmark did.

Copy the figures into docs/PERFORMANCE.md with the command and the date.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
# Each benchmark, and whether it runs with --check (every one has targets of its own: a
# missed one makes `make bench` fail).
BENCHES = {
    "pipeline_embedded.py": True,
    "redis_to_postgres.py": True,
    "outbox_latency.py": True,
    "outbox_throughput.py": True,
    "poison_drain.py": True,
    "table_sync.py": True,
    "pg_table_latency.py": True,
    "verify.py": True,
    "rest_to_redis.py": True,
    "jobs.py": True,
    "media.py": True,
    "connectors.py": True,
}


# A line of a benchmark's output that names a missed target or a failed run.
MISSED = re.compile(r"NOT met|MISSED|!!")


def run(bench: str, checked: bool, out: Path) -> tuple[int, float, list[str]]:
    """Run one benchmark, its output passed through; (exit code, seconds, missed lines)."""
    check = ["--check"] if checked else []
    command = [sys.executable, "-u", str(HERE / bench), "--json", str(out), *check]
    started = time.monotonic()
    missed: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if MISSED.search(line):
                missed.append(line.strip())
    return proc.returncode, time.monotonic() - started, missed


def main() -> int:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    rows: list[tuple[str, str, float, list[str]]] = []
    for bench, checked in BENCHES.items():
        print(f"== {bench} ({stamp})", flush=True)
        out = results / f"{Path(bench).stem}-{stamp}.json"
        code, seconds, missed = run(bench, checked, out)
        result = "ok" if code == 0 else ("targets missed" if missed else f"failed (exit {code})")
        rows.append((bench, result, seconds, missed))
    print(f"\n## make bench, {stamp}\n")
    print("| benchmark | result | minutes | missed |")
    print("|---|---|---:|---|")
    for bench, result, seconds, missed in rows:
        shown = "; ".join(line[:120] for line in missed[:4]) + (" ..." if len(missed) > 4 else "")
        print(f"| {bench} | {result} | {seconds / 60:.1f} | {shown.replace('|', '/')} |")
    return 1 if any(result != "ok" for _, result, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
