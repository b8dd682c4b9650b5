"""`make bench`: every benchmark, one after the other, results printed and kept as JSON.

Copy the figures into docs/PERFORMANCE.md with the command and the date.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
# Each benchmark, and whether it runs with --check: those with targets of their own make
# `make bench` fail when one is missed (the older ones gain --check with issue 14).
BENCHES = {
    "pipeline_embedded.py": True,
    "redis_to_postgres.py": True,
    "outbox_latency.py": True,
    "outbox_throughput.py": True,
    "poison_drain.py": False,
    "table_sync.py": True,
    "pg_table_latency.py": True,
    "verify.py": True,
    "rest_to_redis.py": True,
    "jobs.py": True,
    "media.py": True,
    "connectors.py": True,
}


def main() -> int:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    failed = 0
    for bench, checked in BENCHES.items():
        print(f"== {bench} ({stamp})", flush=True)
        out = results / f"{Path(bench).stem}-{stamp}.json"
        check = ["--check"] if checked else []
        code = subprocess.call([sys.executable, str(HERE / bench), "--json", str(out), *check])
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
