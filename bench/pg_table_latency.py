"""Seed 004's real-time path: commit-to-target latency of the ``pg_table`` source into the
``postgres`` sink at 1,000 updates/s (the seed's scheduled path takes up to a minute).

Two databases on the server of ``--pg-dsn``, made for the run (``--db-prefix``) and dropped
after it: a source ``items`` table and the same rows in the target (filled identically, so no
snapshot is needed: ``snapshot: never``), the change capture installed on the source. A
producer process updates every row exactly once, at a steady rate (default 1,000 updates/s
for 25 s), one transaction per update over 4 connections; each UPDATE sets ``seq = 1`` and
``changed_at = clock_timestamp()``, the server's clock as the last statement of the
transaction runs (so the latency below includes the source COMMIT's own WAL flush). A worker
process, started and listening before the producer begins, streams the changes into the
target (``schedule: {stream: true}``, batches of up to 100, ``max_wait`` 1 ms, the
stale-write guard on).

Latency per update, measured without any query during the run:

- **to target commit** (the headline): the worker's postgres sink notes the host clock when
  each batch's transaction has committed in the target (a subclass of the sink that records
  ``time.time()`` after ``write`` returns), minus the row's ``changed_at``; the worker and the
  server share one clock (same host).
- **synced_at**: the target row's ``$synced_at`` (set by the sink just before its merge)
  minus ``changed_at``, computed in SQL in the target after the run: a second, independent
  reading from the rows themselves.

Every update must arrive: after the producer stops, the target must hold ``seq = 1`` on every
row within 60 s; a run where one is missing fails (and fails ``--check``).

Cases, each ``--repeat`` times, interleaved (LISTEN, poll, LISTEN, poll, ...), each run in
fresh databases and fresh processes:

- ``syncworker LISTEN``: ``listen: true`` (NOTIFY wakes the source at once);
- ``syncworker poll``: ``listen: false, poll_interval: 1s``, the fallback while the listening
  connection is down (for scale);
- ``hand-written LISTEN``: the floor, a loop as a team would write the seed's real-time path
  (``child_floor``): LISTEN, the keys of the NOTIFYs waiting, those rows read and upserted
  with the same stale-write guard in one transaction. It keeps no change log (the trigger
  still writes one) and survives no lost connection: a lower bound for the same work.

Target (issue 10): LISTEN p50 <= 5 ms, p99 <= 25 ms (medians over the runs); ``--check`` exits
1 when it is missed or an update is missing.

    python bench/pg_table_latency.py                         # 1,000 updates/s for 25 s, 3 runs
    python bench/pg_table_latency.py --rate 200 --seconds 2 --repeat 1   # the smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_embedded import cpu_s, peak_rss_mb
from table_sync import bench_lock

PRODUCER_CONNECTIONS = 4
BATCH = 100
MAX_WAIT = "1ms"
IN_FLIGHT = 2
DRAIN_TIMEOUT_S = 60.0
TARGET_P50_MS = 5.0
TARGET_P99_MS = 25.0
ITEMS = """
CREATE TABLE items (
    id bigint PRIMARY KEY, name text NOT NULL, seq bigint NOT NULL DEFAULT 0,
    changed_at timestamptz, updated_at timestamptz NOT NULL{extra})
"""
TARGET_EXTRA = ", synced_at timestamptz, source_updated_at timestamptz"
FILL = (
    "INSERT INTO items (id, name, updated_at) SELECT n, 'item ' || n,"
    " timestamptz '2026-01-01' FROM generate_series(1, %s) n"
)
UPDATE = (
    "UPDATE items SET seq = 1, changed_at = clock_timestamp(), updated_at = now() WHERE id = %s"
)
ARRIVED = "SELECT count(*) FROM items WHERE seq = 1"
SYNCED_MS = (
    "SELECT extract(epoch FROM synced_at - changed_at) * 1000 FROM items WHERE seq = 1 ORDER BY 1"
)
CASES: dict[str, dict[str, Any]] = {
    "syncworker LISTEN": {"listen": True},
    "syncworker poll": {"listen": False, "poll_interval": "1s"},
    "hand-written LISTEN": {"floor": True},
}
SELECT_KEYS = "SELECT id, name, seq, changed_at, updated_at FROM items WHERE id = ANY(%s::bigint[])"
UPSERT = (
    "INSERT INTO items AS t (id, name, seq, changed_at, updated_at, synced_at, source_updated_at)"
    " VALUES (%s, %s, %s, %s, %s, clock_timestamp(), %s)"
    " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, seq = EXCLUDED.seq,"
    " changed_at = EXCLUDED.changed_at, updated_at = EXCLUDED.updated_at,"
    " synced_at = EXCLUDED.synced_at, source_updated_at = EXCLUDED.source_updated_at"
    " WHERE t.source_updated_at IS NULL OR t.source_updated_at <= EXCLUDED.source_updated_at"
)


# -- databases ---------------------------------------------------------------------------


def url_of(pg_dsn: str, database: str) -> str:
    return f"{pg_dsn.rsplit('/', 1)[0]}/{database}"


def admin(pg_dsn: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def prepare(source: str, target: str, rows: int) -> None:
    """The same ``rows`` items on both sides, then the capture on the source."""
    import psycopg

    from syncworker.connectors.postgres import table_capture

    for url, extra in ((source, ""), (target, TARGET_EXTRA)):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(ITEMS.format(extra=extra))  # type: ignore[arg-type]
            conn.execute(FILL, (rows,))
            conn.execute("VACUUM ANALYZE items")
    asyncio.run(table_capture.install(source, "items", "id"))


def arrived(target: str) -> int:
    import psycopg

    with psycopg.connect(target, autocommit=True) as conn:
        row = conn.execute(ARRIVED).fetchone()
    return int(row[0]) if row else 0


def wait_arrived(target: str, rows: int, timeout_s: float) -> int:
    """Polls only once the producer has stopped: nothing queries during the timed part."""
    deadline = time.monotonic() + timeout_s
    while (count := arrived(target)) < rows and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def synced_latencies_ms(target: str) -> list[float]:
    import psycopg

    with psycopg.connect(target, autocommit=True) as conn:
        return [float(row[0]) for row in conn.execute(SYNCED_MS)]


# -- the worker --------------------------------------------------------------------------


def timed_sink_class() -> type[Any]:
    """The postgres sink, noting when each batch has committed in the target."""
    from typing import ClassVar

    from syncworker.connectors.postgres.sink import PostgresSink, PostgresSinkConfig

    class TimedSinkConfig(PostgresSinkConfig):
        type: Literal["bench_timed_postgres"] = "bench_timed_postgres"  # type: ignore[assignment]

    class TimedPostgresSink(PostgresSink):
        config_model: ClassVar[type[PostgresSinkConfig]] = TimedSinkConfig

        def __init__(self, config: Any, *, name: str) -> None:
            super().__init__(config, name=name)
            self.receipts: list[tuple[float, list[tuple[str, str | None]]]] = []

        async def write(self, records: Any) -> Any:
            result = await super().write(records)
            committed = time.time()
            self.receipts.append((committed, [(r.key, r.data.get("changed_at")) for r in records]))
            return result

    return TimedPostgresSink


async def child_worker(source: str, target: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Stream until SIGTERM: the receipts and the worker's figures."""
    from syncworker.config import config_from_dict
    from syncworker.core import registry
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "warning")
    registry.register("sink", "bench_timed_postgres", timed_sink_class())
    with tempfile.TemporaryDirectory(prefix="sw-latency-") as tmp:
        raw = {
            "state": f"sqlite:///{tmp}/state.db",
            "pipelines": {
                "items": {
                    "source": {
                        "type": "pg_table",
                        "url": source,
                        "table": "items",
                        "key": "id",
                        "updated_at": "updated_at",
                        "snapshot": "never",
                        **settings["source"],
                    },
                    "sinks": [
                        {
                            "type": "bench_timed_postgres",
                            "url": target,
                            "table": "items",
                            "key_column": "id",
                            "columns": {
                                "name": "name",
                                "seq": "seq",
                                "changed_at": "changed_at",
                                "updated_at": "updated_at",
                                "synced_at": "$synced_at",
                            },
                            "version_column": "source_updated_at",
                            "version": "updated_at",
                        }
                    ],
                    "batch": {
                        "size": BATCH,
                        "max_wait": settings["max_wait"],
                        "max_in_flight": settings["in_flight"],
                    },
                    "schedule": {"stream": True},
                }
            },
        }
        config = config_from_dict(raw, environ={})
        state = state_store_from_url(config.app.state)
        engine = Engine(config.build(state), state, shutdown_timeout_s=5)
        await state.open()
        await engine.pipeline("items").open()
        await state.close()
        print("ready", flush=True)
        cpu_started = cpu_s()
        await engine.run()
        sink = engine.pipeline("items").sinks[0]
        return {"receipts": sink.receipts, "cpu_s": cpu_s() - cpu_started, "rss": peak_rss_mb()}


async def child_floor(source: str, target: str) -> dict[str, Any]:
    """The hand-written floor, as a team would write the seed's real-time path: LISTEN on
    the capture's channel, take the keys of every NOTIFY waiting (up to a batch), read those
    rows, upsert them into the target with the same stale-write guard in one transaction,
    note the time. It leaves the change log alone (a lower bound: syncworker also acks by
    deleting its rows) and keeps nothing across a lost connection."""
    import signal as signals

    import psycopg

    from syncworker.connectors.postgres.table_capture import CaptureNames

    channel = CaptureNames.for_table("items").channel
    listen = await psycopg.AsyncConnection.connect(source, autocommit=True)
    read = await psycopg.AsyncConnection.connect(source, autocommit=True)
    write = await psycopg.AsyncConnection.connect(target)
    await listen.execute(f'LISTEN "{channel}"')  # type: ignore[arg-type]
    payloads: asyncio.Queue[str] = asyncio.Queue()

    async def pump() -> None:
        async for notify in listen.notifies():
            payloads.put_nowait(notify.payload)

    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signals.SIGTERM, stopping.set)
    pumping = asyncio.create_task(pump())
    stopped = asyncio.create_task(stopping.wait())
    receipts: list[tuple[float, list[tuple[str, str | None]]]] = []
    print("ready", flush=True)
    cpu_started = cpu_s()
    while True:
        first = asyncio.create_task(payloads.get())
        await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():
            first.cancel()
            break
        batch = [first.result()]
        while len(batch) < BATCH and not payloads.empty():
            batch.append(payloads.get_nowait())
        keys = [int(payload.partition(":")[2]) for payload in batch]
        rows = await (await read.execute(SELECT_KEYS, (keys,))).fetchall()
        async with write.transaction():
            await write.cursor().executemany(UPSERT, [(*row, row[4]) for row in rows])
        committed = time.time()
        receipts.append((committed, [(str(row[0]), row[3].isoformat()) for row in rows]))
    pumping.cancel()
    for conn in (listen, read, write):
        await conn.close()
    return {"receipts": receipts, "cpu_s": cpu_s() - cpu_started, "rss": peak_rss_mb()}


# -- the producer ------------------------------------------------------------------------


def child_producer(source: str, rate: float, rows: int) -> dict[str, Any]:
    """Row n updated once, due at n / rate s, on connection n % PRODUCER_CONNECTIONS."""
    lags_s = [0.0] * PRODUCER_CONNECTIONS
    done = [0] * PRODUCER_CONNECTIONS
    started = time.perf_counter() + 0.2  # every connection is open by then
    threads = [
        threading.Thread(
            target=_produce,
            args=(source, k, range(k, rows, PRODUCER_CONNECTIONS), rate, started, lags_s, done),
            name=f"producer-{k}",
        )
        for k in range(PRODUCER_CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if sum(done) != rows:
        raise SystemExit(f"producer: {sum(done)} of {rows} updates committed")
    return {"updates": rows, "seconds": seconds, "max_lag_ms": max(lags_s) * 1e3}


def _produce(
    source: str,
    k: int,
    numbers: range,
    rate: float,
    started: float,
    lags_s: list[float],
    done: list[int],
) -> None:
    import psycopg

    with psycopg.connect(source) as conn:
        for n in numbers:
            ahead_s = started + n / rate - time.perf_counter()
            if ahead_s > 0:
                time.sleep(ahead_s)
            lags_s[k] = max(lags_s[k], -ahead_s)
            cursor = conn.execute(UPDATE, (n + 1,))
            assert cursor.rowcount == 1, n
            conn.commit()
            done[k] += 1


# -- one run -----------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..1)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    rows = int(args.rate * args.seconds)
    tag = uuid.uuid4().hex[:8]
    databases = [f"{args.db_prefix}_{tag}_src", f"{args.db_prefix}_{tag}_dst"]
    for database in databases:
        admin(args.pg_dsn, f'CREATE DATABASE "{database}"')
    source, target = (url_of(args.pg_dsn, d) for d in databases)
    try:
        prepare(source, target, rows)
        settings = {"source": CASES[name], "max_wait": args.max_wait, "in_flight": args.in_flight}
        worker_out, produced = drive(source, target, settings, args.rate, rows)
        count = wait_arrived(target, rows, DRAIN_TIMEOUT_S)
        worker = stop(worker_out)
        synced = synced_latencies_ms(target)
    finally:
        for database in databases:
            admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {"case": name, **figures(worker, produced, rows, count, synced)}


def drive(
    source: str, target: str, settings: dict[str, Any], rate: float, rows: int
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The worker started and listening, then the producer run to its end."""
    me = [sys.executable, __file__]
    worker = subprocess.Popen(
        [*me, "--child", "worker", "--source", source, "--target", target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(settings),
    )
    assert worker.stdout is not None
    if worker.stdout.readline().strip() != "ready":
        worker.kill()
        _, err = worker.communicate(timeout=30)
        raise SystemExit(f"worker failed:\n{err[-3000:]}")
    producer = subprocess.run(
        [*me, "--child", "producer", "--source", source, "--rate", str(rate), "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if producer.returncode != 0:
        worker.kill()
        raise SystemExit(f"producer failed:\n{producer.stderr[-3000:]}")
    return worker, json.loads(producer.stdout.strip().splitlines()[-1])


def _env(settings: dict[str, Any]) -> dict[str, str]:
    import os

    return {**os.environ, "SW_BENCH_LATENCY_SETTINGS": json.dumps(settings)}


def stop(worker: subprocess.Popen[str]) -> dict[str, Any]:
    worker.send_signal(signal.SIGTERM)
    try:
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    if worker.returncode != 0:
        raise SystemExit(f"worker failed:\n{err[-3000:]}")
    if err.strip():
        print(f"  worker said: {err.strip()[-2000:]}", flush=True)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def figures(
    worker: dict[str, Any], produced: dict[str, Any], rows: int, count: int, synced: list[float]
) -> dict[str, Any]:
    first: dict[str, float] = {}
    for committed, items in worker["receipts"]:
        for key, changed_at in items:
            if changed_at is not None and key not in first:
                first[key] = committed - datetime.fromisoformat(changed_at).timestamp()
    latencies = sorted(v * 1e3 for v in first.values())
    return {
        "updates": rows,
        "rate_achieved": rows / produced["seconds"],
        "producer_max_lag_ms": produced["max_lag_ms"],
        "arrived": count,
        "missing": rows - count,
        "batches": len(worker["receipts"]),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else math.nan,
        "synced_at_p50_ms": percentile(synced, 0.50),
        "synced_at_p99_ms": percentile(synced, 0.99),
        "worker_cpu_s": worker["cpu_s"],
        "worker_peak_rss_mb": worker["rss"],
    }


# -- summary -----------------------------------------------------------------------------

MEDIAN_KEYS = (
    "rate_achieved",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "synced_at_p50_ms",
    "synced_at_p99_ms",
    "worker_cpu_s",
    "worker_peak_rss_mb",
    "producer_max_lag_ms",
)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: medians (and min-max) over the runs; counts summed, so nothing missing hides
    behind a median."""
    summary = []
    for name in dict.fromkeys(r["case"] for r in runs):
        mine = [r for r in runs if r["case"] == name]
        row: dict[str, Any] = {"case": name, "runs": len(mine)}
        for key in ("updates", "arrived", "missing", "batches"):
            row[key] = sum(r[key] for r in mine)
        for key in MEDIAN_KEYS:
            values = [r[key] for r in mine]
            row[key] = statistics.median(values)
            row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        row["all_runs"] = mine
        summary.append(row)
    return summary


def print_summary(summary: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        "| case | runs | updates/s | updates | arrived | p50 ms (min-max) | p90 ms "
        "| p99 ms (min-max) | max ms | synced_at p50 / p99 ms | worker CPU s | RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        print(
            f"| {r['case']} | {r['runs']} | {r['rate_achieved']:,.0f} | {r['updates']:,} | "
            f"{r['arrived']:,} | {r['p50_ms']:.1f} ({r['p50_ms_min']:.1f}-{r['p50_ms_max']:.1f}) "
            f"| {r['p90_ms']:.1f} | {r['p99_ms']:.1f} ({r['p99_ms_min']:.1f}-"
            f"{r['p99_ms_max']:.1f}) | {r['max_ms']:.1f} | {r['synced_at_p50_ms']:.1f} / "
            f"{r['synced_at_p99_ms']:.1f} | {r['worker_cpu_s']:.1f} | "
            f"{r['worker_peak_rss_mb']:.0f} |"
        )
    print(
        f"target: p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms with LISTEN "
        f"({args.rate:g} updates/s for {args.seconds:g} s per run, batch {BATCH}, "
        f"max_wait {args.max_wait}, max_in_flight {args.in_flight})"
    )


def missed(summary: list[dict[str, Any]]) -> list[str]:
    found = [f"{r['case']}: {r['missing']} updates missing" for r in summary if r["missing"]]
    for r in summary:
        slow = not (r["p50_ms"] <= TARGET_P50_MS and r["p99_ms"] <= TARGET_P99_MS)
        if r["case"] == "syncworker LISTEN" and slow:
            found.append(f"{r['case']}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")
    return found


def child_main(args: argparse.Namespace) -> None:
    if args.child == "producer":
        print(json.dumps(child_producer(args.source, args.rate, args.rows)), flush=True)
        return
    import os

    settings = json.loads(os.environ["SW_BENCH_LATENCY_SETTINGS"])
    if settings["source"].get("floor"):
        done = asyncio.run(child_floor(args.source, args.target))
    else:
        done = asyncio.run(child_worker(args.source, args.target, settings))
    print(json.dumps(done), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="updates per second")
    parser.add_argument("--seconds", type=float, default=25.0, help="how long the producer runs")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians kept)")
    parser.add_argument("--case", action="append", choices=list(CASES), help="default: all")
    parser.add_argument("--max-wait", default=MAX_WAIT, help="syncworker's batch.max_wait")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT, help="batch.max_in_flight")
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument(
        "--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--db-prefix", default="sw_bench_latency", help="databases made here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=["worker", "producer"], help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return 0
    runs = []
    for repeat in range(args.repeat):
        for name in args.case or list(CASES):  # interleaved
            with bench_lock(args.lock):
                result = run_case(name, args)
            runs.append(result)
            print(
                f"run {repeat + 1}/{args.repeat} {name}: p50 {result['p50_ms']:.1f} ms, "
                f"p99 {result['p99_ms']:.1f} ms, {result['missing']} missing",
                flush=True,
            )
    summary = summarize(runs)
    print_summary(summary, args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    problems = missed(summary)
    for problem in problems:
        print(f"  !! {problem}")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
