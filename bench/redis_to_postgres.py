"""Seed 000's path: Redis lists -> PostgreSQL (and -> JSONL), beside hand-written psycopg.

1,000,000 messages of about 200 bytes are LPUSHed over `whatsapp:in` / `whatsapp:out` (on
the Redis of `--redis-url`, under a key prefix of the run's own whose keys are deleted before
each case and at the end: nothing else in that database is touched), then drained by one
sync run with batches of 5,000, in a fresh child process per case and a fresh PostgreSQL
database per case:

- `syncworker redis_list -> postgres`: the `postgres` sink's default layout
  (key, stream, data jsonb, synced_at);
- `syncworker redis_list -> jsonl`;
- `hand-written COPY + upsert`: the same rows, already in memory (no Redis, no syncworker),
  upserted by the fastest plain psycopg code we know: COPY into a temporary staging table,
  then one INSERT ... ON CONFLICT per batch, one transaction per batch.

    python bench/redis_to_postgres.py                    # 1,000,000 messages
    python bench/redis_to_postgres.py --messages 20000   # the smoke run in the suite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_embedded import cpu_s, peak_rss_mb

# Redis from --redis-url (or SYNCWORKER_BENCH_REDIS). Every key the run makes (the seed's
# lists and the source's processing lists) starts with a prefix of its own, so nothing else
# in that database is touched; the prefix's keys are deleted before each case and at the end.
# The parent sets both variables; its child processes inherit them.
REDIS_URL = os.environ.setdefault("SYNCWORKER_BENCH_REDIS", "redis://127.0.0.1:6379/0")
KEYS = os.environ.setdefault("SYNCWORKER_BENCH_REDIS_PREFIX", f"swbench:{uuid.uuid4().hex[:8]}:")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"  # --pg-dsn: cases make own databases
BATCH = 5_000
CASES = [
    "syncworker redis_list -> postgres",
    "syncworker redis_list -> jsonl",
    "hand-written COPY + upsert",
]
TABLE = """CREATE TABLE IF NOT EXISTS messages (
    key text PRIMARY KEY, stream text, data jsonb, synced_at timestamptz)"""


def message(n: int, stream: str) -> bytes:
    return orjson.dumps(
        {
            "id": f"{stream}-{n}",
            "from": "+447700900123",
            "to": "+447700900456",
            "text": "see you at nine, the order shipped this morning, thanks!",
            "ts": 1767225600 + n,
            "chat": "c-42",
        }
    )


def delete_own_keys() -> None:
    """Deletes the keys under this run's prefix, and nothing else."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{KEYS}*", count=1000):
        client.delete(key)
    client.close()


def fill_redis(count: int) -> None:
    import redis

    delete_own_keys()
    client = redis.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        stream = "in" if n % 2 == 0 else "out"
        pipe.lpush(f"{KEYS}whatsapp:{stream}", message(n, stream))
        if n % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    client.close()


def config_text(root: Path, pg_url: str, sink: str) -> str:
    sinks = {
        "postgres": f'{{type: postgres, url: "{pg_url}", table: messages}}',
        "jsonl": f'{{type: jsonl, path: "{root}/out"}}',
    }
    return (
        f'state: "sqlite:///{root}/state.db"\n'
        "pipelines:\n  bench:\n"
        f'    source: {{type: redis_list, url: "{REDIS_URL}", processing_prefix: "{KEYS}tmp:",'
        f'\n      lists: {{in: "{KEYS}whatsapp:in", out: "{KEYS}whatsapp:out"}}, key_field: id}}\n'
        f"    sinks: [{sinks[sink]}]\n"
        f"    batch: {{size: {BATCH}, max_wait: 10ms, max_in_flight: 2}}\n"
        "    schedule: {manual: true}\n"
    )


async def child_syncworker(root: Path, pg_url: str, sink: str) -> dict[str, float]:
    from syncworker.config import parse_config
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "warning")
    config = parse_config(config_text(root, pg_url, sink))
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state)
    await state.open()
    await engine.pipeline("bench").open()
    await state.close()
    cpu_started, started = cpu_s(), time.perf_counter()
    [run] = await engine.run_once()
    elapsed_s = time.perf_counter() - started
    assert run.status == "success", run
    return {"records": run.processed, "seconds": elapsed_s, "cpu_s": cpu_s() - cpu_started}


def child_hand_written(pg_url: str, count: int) -> dict[str, float]:
    """The baseline: rows in memory, COPY to staging + one upsert per batch."""
    import psycopg

    rows = []
    for n in range(count):
        stream = "in" if n % 2 == 0 else "out"
        rows.append((f"{stream}-{n}", stream, message(n, stream).decode()))
    with psycopg.connect(pg_url) as conn:
        conn.execute(TABLE)
        conn.commit()
        cpu_started, started = cpu_s(), time.perf_counter()
        for start in range(0, count, BATCH):
            with conn.transaction():
                conn.execute(
                    "CREATE TEMP TABLE staging (key text, stream text, data jsonb) ON COMMIT DROP"
                )
                with conn.cursor().copy("COPY staging (key, stream, data) FROM STDIN") as copy:
                    for row in rows[start : start + BATCH]:
                        copy.write_row(row)
                conn.execute(
                    "INSERT INTO messages (key, stream, data, synced_at) "
                    "SELECT key, stream, data, now() FROM staging "
                    "ON CONFLICT (key) DO UPDATE SET stream = excluded.stream, "
                    "data = excluded.data, synced_at = excluded.synced_at"
                )
        elapsed_s = time.perf_counter() - started
        moved = conn.execute("SELECT count(*) FROM messages").fetchone()[0]  # type: ignore[index]
    return {"records": moved, "seconds": elapsed_s, "cpu_s": cpu_s() - cpu_started}


def run_case(name: str, count: int, pg_admin: str) -> dict[str, Any]:
    import psycopg

    database = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    pg_url = f"{pg_admin.rsplit('/', 1)[0]}/{database}"
    try:
        if not name.startswith("hand-written"):
            fill_redis(count)
        with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    name,
                    "--root",
                    tmp,
                    "--pg",
                    pg_url,
                    "--messages",
                    str(count),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
        figures = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        with psycopg.connect(pg_admin, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert figures["records"] == count, (name, figures)
    return {
        "case": name,
        "messages": count,
        "msgs_per_s": count / figures["seconds"],
        "seconds": figures["seconds"],
        "peak_rss_mb": figures["rss"],
        "cpu_us_per_msg": figures["cpu_s"] / count * 1e6,
    }


def child_main(name: str, root: Path, pg_url: str, count: int) -> None:
    if name.startswith("hand-written"):
        figures = child_hand_written(pg_url, count)
    else:
        sink = "postgres" if name.endswith("postgres") else "jsonl"
        figures = asyncio.run(child_syncworker(root, pg_url, sink))
    figures["rss"] = peak_rss_mb()
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--pg")
    parser.add_argument(
        "--redis-url", help="the Redis to use (default $SYNCWORKER_BENCH_REDIS or db 0 on :6379)"
    )
    parser.add_argument(
        "--pg-dsn", default=PG_ADMIN, help="admin DSN of the server the cases' databases go to"
    )
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.root, args.pg, args.messages)
        return
    if args.redis_url:
        global REDIS_URL
        REDIS_URL = os.environ["SYNCWORKER_BENCH_REDIS"] = args.redis_url
    try:
        results = [run_case(name, args.messages, args.pg_dsn) for name in CASES]
    finally:
        delete_own_keys()
    baseline = results[2]["msgs_per_s"]
    print(
        f"{'case':<36} {'messages':>10} {'msgs/s':>10} {'of baseline':>12} "
        f"{'peak RSS MB':>12} {'CPU us/msg':>11}"
    )
    for r in results:
        # the baseline writes PostgreSQL: set beside the JSONL case it would mean nothing
        share = "-" if "jsonl" in r["case"] else f"{r['msgs_per_s'] / baseline:.0%}"
        print(
            f"{r['case']:<36} {r['messages']:>10,} {r['msgs_per_s']:>10,.0f} {share:>12} "
            f"{r['peak_rss_mb']:>12.1f} {r['cpu_us_per_msg']:>11.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
