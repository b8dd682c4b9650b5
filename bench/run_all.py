"""`make bench`: every benchmark, one after the other, results printed and kept as JSON.

Copy the figures into docs/PERFORMANCE.md with the command and the date.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = [
    "pipeline_embedded.py",
    "redis_to_postgres.py",
    "outbox_latency.py",
    "outbox_throughput.py",
    "poison_drain.py",
    "table_sync.py",
    "pg_table_latency.py",
    "verify.py",
    "rest_to_redis.py",
    "jobs.py",
    "media.py",
]
# Benchmarks with targets of their own: a missed one makes them, and `make bench`, fail. (The
# older ones gain --check with issue 14.)
CHECKED = {
    "table_sync.py",
    "pg_table_latency.py",
    "verify.py",
    "rest_to_redis.py",
    "jobs.py",
    "media.py",
}


def main() -> int:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    failed = 0
    for bench in BENCHES:
        print(f"== {bench} ({stamp})", flush=True)
        out = results / f"{Path(bench).stem}-{stamp}.json"
        check = ["--check"] if bench in CHECKED else []
        code = subprocess.call([sys.executable, str(HERE / bench), "--json", str(out), *check])
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
