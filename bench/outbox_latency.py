"""Seed 001's path: change-to-delivery latency of the ``pg_outbox`` source, beside the seed's
own 5-second poller.

A producer process commits single-row changes to ``products(id, name, price, updated_at)`` at
a steady rate (default 500 changes/s for 60 s), one transaction per change, alternating an
INSERT of a new row and an UPDATE of a random row that connection inserted before. The outbox
trigger (installed with ``outbox.install``) enqueues each change into ``algolia_sync_queue``
and NOTIFYs. Right after each COMMIT returns the producer notes ``time.time()`` against the
change's queue id (read with ``currval`` inside the transaction). A worker process, started
and listening before the producer begins, delivers to a null sink that notes ``time.time()``
on receipt of every record and the queue ids it carries (a record stands for every change of
its row in the batch, since the source reads the row's current state). Latency = receipt -
commit, per change. Every change must arrive: the run fails, after printing, if any is
missing.

Cases, each in a fresh database and fresh processes (producer, worker), one after the other:

- ``syncworker LISTEN``: ``pg_outbox`` with ``listen: true``, ``schedule: {stream: true}``,
  ``batch: {size: 100, max_wait: 5ms}``: what a user tuning for latency sets (``max_wait``
  is documented as how long a batch waits to fill, so 5 ms bounds the wait and still lets a
  burst share a batch); ``--max-wait 0`` tries the other choice.
- ``syncworker listen=false``: the poll fallback, ``listen: false, poll_interval: 5s`` (the
  seed's POLLING_INTERVAL), same batch settings.
- ``seed poller``: the seed's approach written by hand (seed 001: ``POLLING_INTERVAL=5000``,
  ``BATCH_SIZE=100``): every 5 s it selects up to 100 pending rows ``FOR UPDATE SKIP
  LOCKED``, "sends" them (nothing), marks them completed, commits. A tick drains the queue
  (batches of 100 until fewer come back): the literal reading, one batch of 100 per tick, is
  20 changes/s and would never catch up with 500/s.

    python bench/outbox_latency.py                          # 500 changes/s for 60 s
    python bench/outbox_latency.py --rate 200 --seconds 3   # the smoke run in the suite

The producer uses 4 connections (change n on connection n % 4), since one connection cannot
commit 500 single-row transactions a second when each COMMIT waits for its WAL flush.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_embedded import cpu_s, peak_rss_mb

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
QUEUE = "algolia_sync_queue"
LOG = "algolia_sync_log"
SCHEMA = """CREATE TABLE products (
    id bigint PRIMARY KEY, name text, price numeric, updated_at timestamptz)"""
BATCH = 100
MAX_WAIT = "5ms"
SEED_POLLING_INTERVAL_S = 5.0
SEED_BATCH_SIZE = 100
DRAIN_TIMEOUT_S = 60.0
SUMMED = (
    "changes",
    "arrived",
    "missing",
    "redelivered",
    "requeued",
    "records",
    "batches",
    "queue_unfinished",
)
PRODUCER_CONNECTIONS = 4
TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
CASES = {
    "syncworker LISTEN": {"listen": True},
    "syncworker listen=false": {"listen": False, "poll_interval": "5s"},
    "seed poller": None,
}
SEED_CLAIM = (
    f"SELECT id, table_name, record_id, operation FROM {QUEUE} WHERE status = 'pending'"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)
SEED_COMPLETE = f"UPDATE {QUEUE} SET status = 'completed', processed_at = now() WHERE id = ANY(%s)"


# -- database ----------------------------------------------------------------------------


def admin_url(database: str) -> str:
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{database}"


@contextmanager
def database(template: str | None = None) -> Iterator[str]:
    """A fresh database (copied from ``template`` if given), dropped afterwards."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    suffix = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{suffix}')
    try:
        yield admin_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def install_outbox(pg_url: str) -> None:
    """The products table, then the outbox and its trigger on it."""
    import psycopg

    from syncworker.connectors.postgres import outbox

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    asyncio.run(outbox.install(pg_url, QUEUE, ["products"]))


def unfinished(pg_url: str) -> int:
    """Queue rows still pending or processing."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {QUEUE} WHERE status IN ('pending', 'processing')"
        ).fetchone()
    return int(row[0]) if row else 0


def wait_drained(pg_url: str, timeout_s: float) -> bool:
    """True once no queue row is pending or processing, False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while unfinished(pg_url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- the null sink that notes receipt times ----------------------------------------------


def receipt_sink_class() -> type[Any]:
    """Built on demand so the parent process does not import syncworker's registry."""
    from syncworker.core.protocols import ConnectorConfig

    class ReceiptSinkConfig(ConnectorConfig):
        type: Literal["bench_receipts"] = "bench_receipts"

    class ReceiptSink:
        """A null sink: notes when each batch arrived and which queue ids it carries."""

        config_model: ClassVar[type[ConnectorConfig]] = ReceiptSinkConfig

        def __init__(self, config: Any, *, name: str) -> None:
            self.name = name
            self.receipts: list[tuple[float, list[int]]] = []
            self.records = 0

        async def open(self) -> None:
            pass

        async def write(self, records: Sequence[Any]) -> None:
            now = time.time()
            self.receipts.append((now, [i for r in records for i in r.meta["queue_ids"]]))
            self.records += len(records)

        async def close(self) -> None:
            pass

    return ReceiptSink


# -- child processes ---------------------------------------------------------------------


def child_producer(pg_url: str, rate: float, seconds: float, out: Path) -> None:
    """Changes at ``rate``/s, one transaction each, over ``PRODUCER_CONNECTIONS`` connections
    (change n on connection n % PRODUCER_CONNECTIONS, due at n / rate s): one connection
    cannot keep 500 commits/s once every COMMIT waits for its WAL flush. The time right after
    each COMMIT returns is noted against the change's queue id."""
    total = int(rate * seconds)
    results: list[list[tuple[int, float, str]]] = [[] for _ in range(PRODUCER_CONNECTIONS)]
    lags_s = [0.0] * PRODUCER_CONNECTIONS
    started = time.perf_counter() + 0.2  # every connection is open by then
    threads = [
        threading.Thread(
            target=_produce,
            args=(pg_url, k, range(k, total, PRODUCER_CONNECTIONS), rate, started, results, lags_s),
            name=f"producer-{k}",
        )
        for k in range(PRODUCER_CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - started
    changes = [change for part in results for change in part]
    if len(changes) != total:
        raise SystemExit(f"producer: {len(changes)} of {total} changes committed")
    out.write_text(
        json.dumps({"changes": changes, "seconds": elapsed_s, "max_lag_ms": max(lags_s) * 1e3})
    )


def _produce(
    pg_url: str,
    k: int,
    numbers: range,
    rate: float,
    started: float,
    results: list[list[tuple[int, float, str]]],
    lags_s: list[float],
) -> None:
    """One producer connection: INSERTs of new rows (ids k+1, k+1+step, ...) alternating with
    UPDATEs of rows this connection already committed, so no UPDATE misses its row."""
    import psycopg

    rng = random.Random(k)
    mine: list[int] = []
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (QUEUE,)).fetchone()
        assert row is not None
        sequence = row[0]
        conn.commit()
        for n in numbers:
            ahead_s = started + n / rate - time.perf_counter()
            if ahead_s > 0:
                time.sleep(ahead_s)
            lags_s[k] = max(lags_s[k], -ahead_s)
            if n % 2 == 0 or not mine:
                op = "INSERT"
                mine.append(n + 1)
                cursor = conn.execute(
                    "INSERT INTO products (id, name, price, updated_at) VALUES (%s, %s, %s, now())",
                    (n + 1, f"product {n + 1}", 9.99),
                )
            else:
                op = "UPDATE"
                cursor = conn.execute(
                    "UPDATE products SET price = price + 1, updated_at = now() WHERE id = %s",
                    (rng.choice(mine),),
                )
            assert cursor.rowcount == 1, (op, n)
            row = conn.execute("SELECT currval(%s)", (sequence,)).fetchone()
            assert row is not None
            conn.commit()
            results[k].append((row[0], time.time(), op))


async def child_syncworker(
    pg_url: str, root: Path, source: dict[str, Any], max_wait: str
) -> dict[str, Any]:
    """Stream until SIGTERM; the receipts and the worker's figures."""
    from syncworker.config import config_from_dict
    from syncworker.core import registry
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "warning")
    registry.register("sink", "bench_receipts", receipt_sink_class())
    raw = {
        "state": f"sqlite:///{root}/state.db",
        "pipelines": {
            "bench": {
                "source": {
                    "type": "pg_outbox",
                    "url": pg_url,
                    "queue_table": QUEUE,
                    "tables": ["products"],
                    **source,
                },
                "sinks": [{"type": "bench_receipts"}],
                "batch": {"size": BATCH, "max_wait": max_wait},
                "schedule": {"stream": True},
            }
        },
    }
    config = config_from_dict(raw)
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state, shutdown_timeout_s=5)
    # Connected and LISTENing before the producer starts: the parent waits for "ready".
    await state.open()
    await engine.pipeline("bench").open()
    await state.close()
    print("ready", flush=True)
    cpu_started = cpu_s()
    await engine.run()
    sink = engine.pipeline("bench").sinks[0]
    return {
        "receipts": sink.receipts,
        "records": sink.records,
        "cpu_s": cpu_s() - cpu_started,
        "rss": peak_rss_mb(),
    }


def child_seed_poller(pg_url: str, out: Path) -> None:
    """The seed's worker: every POLLING_INTERVAL, claim BATCH_SIZE rows, send, mark done."""
    import psycopg

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    receipts: list[tuple[float, list[int]]] = []
    records = 0
    with psycopg.connect(pg_url) as conn:
        print("ready", flush=True)
        cpu_started = cpu_s()
        next_tick = time.monotonic()
        while not stop:
            while True:
                with conn.transaction():
                    rows = conn.execute(SEED_CLAIM, (SEED_BATCH_SIZE,)).fetchall()
                    if rows:
                        receipts.append((time.time(), [row[0] for row in rows]))  # "sent"
                        records += len(rows)
                        conn.execute(SEED_COMPLETE, ([row[0] for row in rows],))
                if len(rows) < SEED_BATCH_SIZE:
                    break
            next_tick += SEED_POLLING_INTERVAL_S
            while not stop and time.monotonic() < next_tick:
                time.sleep(min(0.05, max(0.0, next_tick - time.monotonic())))
    out.write_text(json.dumps({"receipts": receipts, "records": records}))
    print(json.dumps({"cpu_s": cpu_s() - cpu_started, "rss": peak_rss_mb()}), flush=True)


# -- one case ----------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..1)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class Load:
    """What the producer does and how the syncworker worker batches."""

    rate_per_s: float
    seconds: float
    max_wait: str


def run_case(name: str, load: Load) -> dict[str, Any]:
    """A fresh database, a worker listening, a producer at the load's rate; the latencies."""
    with database() as pg_url, tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        root = Path(tmp)
        install_outbox(pg_url)
        me = [sys.executable, __file__, "--pg", pg_url, "--root", tmp, "--max-wait", load.max_wait]
        with open(root / "worker.err", "w") as err:
            worker = subprocess.Popen(
                [*me, "--child", name], stdout=subprocess.PIPE, stderr=err, text=True
            )
            try:
                assert worker.stdout is not None
                if worker.stdout.readline().strip() != "ready":
                    worker.wait(10)
                    raise SystemExit(f"{name}: worker failed:\n{_tail(root / 'worker.err')}")
                rate = ["--rate", str(load.rate_per_s), "--seconds", str(load.seconds)]
                producer = subprocess.run(
                    [*me, "--child", "producer", *rate],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if producer.returncode != 0:
                    raise SystemExit(f"{name}: producer failed:\n{producer.stderr[-3000:]}")
                drained = wait_drained(pg_url, DRAIN_TIMEOUT_S)
                worker.send_signal(signal.SIGTERM)
                stdout, _ = worker.communicate(timeout=60)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        if worker.returncode != 0:
            raise SystemExit(f"{name}: worker failed:\n{_tail(root / 'worker.err')}")
        worker_figures = json.loads(stdout.strip().splitlines()[-1])
        produced = json.loads((root / "producer.json").read_text())
        received = json.loads((root / "receipts.json").read_text())
        left = unfinished(pg_url)
    figures = _latencies(produced, received)
    return {
        "case": name,
        "rate_target": load.rate_per_s,
        **figures,
        "worker_cpu_s": worker_figures["cpu_s"],
        "worker_peak_rss_mb": worker_figures["rss"],
        "drained": drained,
        "queue_unfinished": left,
    }


def _latencies(produced: dict[str, Any], received: dict[str, Any]) -> dict[str, Any]:
    """Receipt - commit per change; a change counts once, at its first delivery."""
    receipt_at: dict[int, float] = {}
    deliveries = 0
    for at, queue_ids in received["receipts"]:
        for queue_id in queue_ids:
            deliveries += 1
            receipt_at.setdefault(queue_id, at)  # the first delivery counts
    latencies_ms = sorted(
        (receipt_at[queue_id] - committed) * 1e3
        for queue_id, committed, _ in produced["changes"]
        if queue_id in receipt_at
    )
    changes = len(produced["changes"])
    produced_ids = {queue_id for queue_id, _, _ in produced["changes"]}
    return {
        "rate_achieved": changes / produced["seconds"],
        "producer_max_lag_ms": produced["max_lag_ms"],
        "changes": changes,
        "arrived": len(latencies_ms),
        "missing": changes - len(latencies_ms),
        "redelivered": deliveries - len(receipt_at),
        # Queue rows the producer did not commit: records the source queued again itself.
        "requeued": len(receipt_at.keys() - produced_ids),
        "records": received["records"],
        "batches": len(received["receipts"]),
        "p50_ms": percentile(latencies_ms, 0.50),
        "p90_ms": percentile(latencies_ms, 0.90),
        "p99_ms": percentile(latencies_ms, 0.99),
        "max_ms": latencies_ms[-1] if latencies_ms else math.nan,
    }


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else ""


def run_cases(names: list[str], load: Load, repeat: int) -> list[dict[str, Any]]:
    """Every case ``repeat`` times, interleaved; each figure is the median over the runs,
    counts (changes, arrived, missing) are summed so nothing lost hides behind a median."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(repeat):
        for name in names:
            runs[name].append(run_case(name, load))
    results: list[dict[str, Any]] = []
    for name, figures in runs.items():
        merged: dict[str, Any] = {"case": name, "runs": len(figures)}
        for key in figures[0]:
            if key == "case":
                continue
            values = [f[key] for f in figures]
            if key in SUMMED:
                merged[key] = sum(values)
            elif key == "drained":
                merged[key] = all(values)
            else:
                merged[key] = sorted(values)[len(values) // 2]
        results.append(merged)
    return results


def print_results(results: list[dict[str, Any]], load: Load) -> None:
    print(
        f"{'case':<26} {'rate/s':>7} {'changes':>8} {'arrived':>8} {'missing':>7} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU s':>6} {'RSS MB':>7}"
    )
    for r in results:
        print(
            f"{r['case']:<26} {r['rate_achieved']:>7.0f} {r['changes']:>8,} {r['arrived']:>8,} "
            f"{r['missing']:>7,} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['max_ms']:>8.1f} {r['worker_cpu_s']:>6.1f} {r['worker_peak_rss_mb']:>7.1f}"
        )
    print(
        f"targets: p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms "
        f"(syncworker: batch {BATCH}, max_wait {load.max_wait}; {load.rate_per_s:g} changes/s "
        f"for {load.seconds:g} s per run)"
    )
    for r in results:
        if r["case"].startswith("syncworker"):
            met = r["p50_ms"] <= TARGET_P50_MS and r["p99_ms"] <= TARGET_P99_MS
            print(f"  {r['case']}: {'met' if met else 'NOT met'}")


def child_main(args: argparse.Namespace) -> None:
    root: Path = args.root
    if args.child == "producer":
        child_producer(args.pg, args.rate, args.seconds, root / "producer.json")
    elif CASES[args.child] is None:
        child_seed_poller(args.pg, root / "receipts.json")
    else:
        source = CASES[args.child]
        assert source is not None
        figures = asyncio.run(child_syncworker(args.pg, root, source, args.max_wait))
        receipts = {"receipts": figures.pop("receipts"), "records": figures.pop("records")}
        (root / "receipts.json").write_text(json.dumps(receipts))
        print(json.dumps(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the producer runs")
    parser.add_argument("--max-wait", default=MAX_WAIT, help="syncworker's batch.max_wait")
    parser.add_argument(
        "--case", action="append", choices=list(CASES), help="run only this case (repeatable)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median kept)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--pg")
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    load = Load(args.rate, args.seconds, args.max_wait)
    results = run_cases(args.case or list(CASES), load, args.repeat)
    print_results(results, load)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    lost = [r["case"] for r in results if r["missing"] or r["queue_unfinished"]]
    if lost:
        raise SystemExit(f"changes missing or unfinished in: {', '.join(lost)}")


if __name__ == "__main__":
    main()
