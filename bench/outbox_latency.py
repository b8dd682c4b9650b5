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
commit, per change.

What arrived is checked after every run, once the worker has stopped, against the receiver
and the database, not the worker's counters: every queue id the producer committed was
received; every row of the queue is ``completed``; for syncworker, the ``success`` rows of
the log cover every queue id, and the last state the sink received of each product is the
product's state in the database (no row left behind with an older price). A run where
anything is missing fails the benchmark (exit 1), ``--check`` or not.

Cases, each ``--repeat`` times (default 3), interleaved (LISTEN, listen=false, seed, LISTEN,
...), each run in a fresh database and fresh processes (producer, worker):

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

Each case's figures are the median over its runs, with min-max; counts (changes, arrived,
missing) are summed, so nothing lost hides behind a median.

Targets (issue 14, "must not regress"): ``syncworker LISTEN`` p50 <= 6.3 ms and p99 <= 14.2
ms at 500 changes/s (medians over the runs). ``--check`` exits 1 when one is missed.

Services come from the options: ``--pg-dsn`` (an admin DSN; default ``$SYNCWORKER_BENCH_PG``
or the local server) and ``--db-prefix``: each run creates its own database
``<prefix>_<random>`` and drops only that one. Each run holds ``--lock``, the machine's
benchmark lock, so runs do not overlap with other benchmarks.

    python bench/outbox_latency.py --check                  # 500 changes/s for 60 s, 3 runs
    python bench/outbox_latency.py --rate 200 --seconds 3 --repeat 1 --lock ''   # the smoke

The producer uses 4 connections (change n on connection n % 4), since one connection cannot
commit 500 single-row transactions a second when each COMMIT waits for its WAL flush.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_embedded import cpu_s, peak_rss_mb
from table_sync import bench_lock

PG_DSN = os.environ.get("SYNCWORKER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
LOCK = "/tmp/bench.lock"
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
    "queue_rows",
    "queue_unfinished",
    "stale",
)
MEDIAN_KEYS = (
    "rate_achieved",
    "producer_max_lag_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "worker_cpu_s",
    "worker_peak_rss_mb",
)
PRODUCER_CONNECTIONS = 4
TARGET_CASE = "syncworker LISTEN"
TARGET_RATE_PER_S = 500.0
TARGET_P50_MS = 6.3
TARGET_P99_MS = 14.2
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
QUEUE_STATUSES = f"SELECT status, count(*) FROM {QUEUE} GROUP BY 1"
COMPLETED_OF = f"SELECT count(*) FROM {QUEUE} WHERE id = ANY(%s) AND status = 'completed'"
LOG_COVERAGE = (
    f"SELECT count(DISTINCT q) FROM {LOG}, unnest(queue_ids) AS q WHERE result = 'success'"
)
PRODUCT_STATES = "SELECT id::text, price::text FROM products"
PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,39}")


# -- services ----------------------------------------------------------------------------


def add_service_options(parser: argparse.ArgumentParser, db_prefix: str) -> None:
    """``--pg-dsn``, ``--db-prefix`` and ``--lock``, shared with ``outbox_throughput.py``."""
    parser.add_argument(
        "--pg-dsn", default=PG_DSN, help="admin DSN (default $SYNCWORKER_BENCH_PG or local)"
    )
    parser.add_argument(
        "--db-prefix", default=db_prefix, help="the databases this run makes: <prefix>_<random>"
    )
    parser.add_argument("--lock", default=LOCK, help="benchmark lock ('' = none)")


def check_prefix(prefix: str) -> str:
    if not PREFIX.fullmatch(prefix):
        raise SystemExit(f"--db-prefix {prefix!r}: expected [a-z_][a-z0-9_]*, at most 40 bytes")
    return prefix


def url_of(pg_dsn: str, name: str) -> str:
    """``pg_dsn`` pointing at database ``name`` (its user, host, port and options kept)."""
    if "://" not in pg_dsn:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(pg_dsn, dbname=name)
    parts = urlsplit(pg_dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin(pg_dsn: str, statement: Any) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def database(pg_dsn: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A database of this run's own, ``<prefix>_<random>`` (copied from ``template`` if
    given), dropped afterwards. Only a database this call created is ever dropped: when the
    CREATE fails nothing is."""
    from psycopg import sql

    name = f"{check_prefix(prefix)}_{uuid.uuid4().hex[:8]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    _admin(pg_dsn, create)
    try:
        yield url_of(pg_dsn, name)
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        _admin(pg_dsn, drop)


def database_name(pg_url: str) -> str:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


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
        """A null sink: notes when each batch arrived, which queue ids it carries and the
        last price received of each product."""

        config_model: ClassVar[type[ConnectorConfig]] = ReceiptSinkConfig

        def __init__(self, config: Any, *, name: str) -> None:
            self.name = name
            self.receipts: list[tuple[float, list[int]]] = []
            self.last_price: dict[str, str | None] = {}
            self.records = 0

        async def open(self) -> None:
            pass

        async def write(self, records: Sequence[Any]) -> None:
            now = time.time()
            self.receipts.append((now, [i for r in records for i in r.meta["queue_ids"]]))
            for r in records:
                price = r.data.get("price") if r.op == "upsert" else None
                self.last_price[r.key] = None if price is None else str(price)
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
    config = config_from_dict(raw, environ={})
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
        "last_price": sink.last_price,
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


# -- one run -----------------------------------------------------------------------------


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


def run_case(name: str, load: Load, pg_dsn: str, db_prefix: str) -> dict[str, Any]:
    """A fresh database, a worker listening, a producer at the load's rate; the latencies
    and what arrived, checked once the worker has stopped."""
    with (
        database(pg_dsn, db_prefix) as pg_url,
        tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp,
    ):
        root = Path(tmp)
        install_outbox(pg_url)
        worker_figures, drained = _drive(name, load, pg_url, root)
        produced = json.loads((root / "producer.json").read_text())
        received = json.loads((root / "receipts.json").read_text())
        checked = check_arrivals(pg_url, name, produced, received)
    figures = _latencies(produced, received)
    problems = checked.pop("problems")
    if not drained:
        problems.append(f"queue not drained {DRAIN_TIMEOUT_S:.0f} s after the producer stopped")
    return {
        "case": name,
        "rate_target": load.rate_per_s,
        **figures,
        **checked,
        "worker_cpu_s": worker_figures["cpu_s"],
        "worker_peak_rss_mb": worker_figures["rss"],
        "drained": drained,
        "problems": problems,
    }


def _drive(name: str, load: Load, pg_url: str, root: Path) -> tuple[dict[str, Any], bool]:
    """The worker started and listening, the producer run to its end, the queue drained (or
    the wait timed out), the worker stopped. Returns the worker's figures and whether the
    queue drained."""
    me = [sys.executable, __file__, "--pg", pg_url, "--root", str(root)]
    me += ["--max-wait", load.max_wait]
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
                [*me, "--child", "producer", *rate], capture_output=True, text=True, check=False
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
    return json.loads(stdout.strip().splitlines()[-1]), drained


def check_arrivals(
    pg_url: str, case: str, produced: dict[str, Any], received: dict[str, Any]
) -> dict[str, Any]:
    """What must hold once the worker has stopped, read from the receiver's notes and the
    database: every committed change received and completed in the queue, no queue row
    left unfinished and, for syncworker, the log covering every queue id and the last state
    received of each product equal to the database's. Returns counts and the problems."""
    import psycopg

    problems = []
    produced_ids = [queue_id for queue_id, _, _ in produced["changes"]]
    received_ids = {queue_id for _, ids in received["receipts"] for queue_id in ids}
    not_received = len(set(produced_ids) - received_ids)
    if not_received:
        problems.append(f"{not_received} of {len(produced_ids)} committed changes not received")
    stale = 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        statuses = dict(conn.execute(QUEUE_STATUSES).fetchall())
        rows = sum(statuses.values())
        if set(statuses) != {"completed"}:
            problems.append(f"queue rows by status: {statuses}, expected all completed")
        completed = _one(conn, COMPLETED_OF, (produced_ids,))
        if completed != len(produced_ids):
            problems.append(f"{len(produced_ids) - completed} committed changes not completed")
        if CASES[case] is not None:
            covered = _one(conn, LOG_COVERAGE)
            if covered != rows:
                problems.append(f"log: success rows cover {covered} of {rows} queue ids")
            states = dict(conn.execute(PRODUCT_STATES).fetchall())
            last = received["last_price"]
            stale = sum(not _same_price(last.get(key), price) for key, price in states.items())
            if stale:
                problems.append(
                    f"{stale} of {len(states)} products: the last state received is not the"
                    " database's"
                )
    return {
        "queue_rows": rows,
        "queue_unfinished": rows - statuses.get("completed", 0),
        "stale": stale,
        "problems": problems,
    }


def _one(conn: Any, query: str, params: tuple[Any, ...] | None = None) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def _same_price(received: str | None, stored: str | None) -> bool:
    if received is None or stored is None:
        return received is stored
    return Decimal(received) == Decimal(stored)


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


# -- summary -----------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: the median of each figure over its runs with min and max; counts summed,
    so nothing missing hides behind a median."""
    summary = []
    for name in dict.fromkeys(r["case"] for r in runs):
        mine = [r for r in runs if r["case"] == name]
        row: dict[str, Any] = {"case": name, "runs": len(mine)}
        for key in SUMMED:
            row[key] = sum(r[key] for r in mine)
        for key in MEDIAN_KEYS:
            values = [r[key] for r in mine]
            row[key] = statistics.median(values)
            row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        row["drained"] = all(r["drained"] for r in mine)
        row["problems"] = [f"run {n}: {p}" for n, r in enumerate(mine, 1) for p in r["problems"]]
        row["all_runs"] = mine
        summary.append(row)
    return summary


def _spread(r: dict[str, Any], key: str, digits: int = 1) -> str:
    return f"{r[key]:.{digits}f} ({r[f'{key}_min']:.{digits}f}-{r[f'{key}_max']:.{digits}f})"


def print_summary(summary: list[dict[str, Any]], load: Load) -> None:
    print(
        "| case | runs | changes/s | changes | arrived | missing | p50 ms (min-max) | p90 ms "
        "| p99 ms (min-max) | max ms | worker CPU s (min-max) | RSS MB (min-max) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        print(
            f"| {r['case']} | {r['runs']} | {r['rate_achieved']:,.0f} | {r['changes']:,} | "
            f"{r['arrived']:,} | {r['missing']:,} | {_spread(r, 'p50_ms')} | {r['p90_ms']:.1f} "
            f"| {_spread(r, 'p99_ms')} | {r['max_ms']:.1f} | {_spread(r, 'worker_cpu_s')} | "
            f"{_spread(r, 'worker_peak_rss_mb', 0)} |"
        )
    print(
        f"({load.rate_per_s:g} changes/s for {load.seconds:g} s per run; syncworker: batch "
        f"{BATCH}, max_wait {load.max_wait}; the last state of every product checked)"
    )


def judge(summary: list[dict[str, Any]], load: Load) -> list[dict[str, Any]]:
    """Issue 14's targets against the medians: each with its value and whether it holds."""
    row = next((r for r in summary if r["case"] == TARGET_CASE), None)
    found = []
    for label, key, limit in (("p50", "p50_ms", TARGET_P50_MS), ("p99", "p99_ms", TARGET_P99_MS)):
        value = row[key] if row else None
        target = {
            "target": f"{TARGET_CASE} {label} <= {limit:g} ms at {TARGET_RATE_PER_S:g} changes/s",
            "value": value,
            "met": value is not None and value <= limit,
        }
        if load.rate_per_s != TARGET_RATE_PER_S:
            target["note"] = f"measured at {load.rate_per_s:g} changes/s"
        found.append(target)
    return found


def print_targets(targets: list[dict[str, Any]]) -> None:
    print("targets (issue 14):")
    for t in targets:
        value = "not measured" if t["value"] is None else f"{t['value']:.1f} ms"
        note = f", {t['note']}" if "note" in t else ""
        print(f"  {t['target']}: {'met' if t['met'] else 'NOT met'} ({value}{note})")


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
        receipts = {
            "receipts": figures.pop("receipts"),
            "records": figures.pop("records"),
            "last_price": figures.pop("last_price"),
        }
        (root / "receipts.json").write_text(json.dumps(receipts))
        print(json.dumps(figures), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the producer runs")
    parser.add_argument("--max-wait", default=MAX_WAIT, help="syncworker's batch.max_wait")
    parser.add_argument(
        "--case", action="append", choices=list(CASES), help="run only this case (repeatable)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians kept)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_service_options(parser, "sw_bench_outbox_lat")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pg", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.child:
        child_main(args)
        return 0
    check_prefix(args.db_prefix)
    load = Load(args.rate, args.seconds, args.max_wait)
    runs = []
    for repeat in range(1, args.repeat + 1):
        for name in args.case or list(CASES):  # interleaved: A, B, C, A, B, C, ...
            with bench_lock(args.lock):
                run = run_case(name, load, args.pg_dsn, args.db_prefix)
            runs.append(run)
            print(
                f"run {repeat}/{args.repeat} {name}: p50 {run['p50_ms']:.1f} ms, "
                f"p99 {run['p99_ms']:.1f} ms, {run['arrived']:,}/{run['changes']:,} arrived"
                f"{', PROBLEMS' if run['problems'] else ''}",
                flush=True,
            )
    summary = summarize(runs)
    print_summary(summary, load)
    targets = judge(summary, load)
    print_targets(targets)
    problems = [f"{r['case']}: {p}" for r in summary for p in r["problems"]]
    if args.json:
        settings = {**asdict(load), "batch": BATCH, "repeat": args.repeat}
        result = {"settings": settings, "cases": summary, "targets": targets, "problems": problems}
        args.json.write_text(json.dumps(result, indent=2))
    for problem in problems:
        print(f"  !! {problem}")
    if problems:
        print("FAILED: changes missing, unfinished or stale (see above)")
        return 1
    return 1 if args.check and not all(t["met"] for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
