"""Seed 001's path: how fast the ``pg_outbox`` source drains a backlog, with 1 and 3 workers,
beside the seed's hand-written claim loop.

500,000 changes (``--rows``) wait in ``algolia_sync_queue``: real outbox rows, written by the
installed trigger while ``products`` was filled by multi-row ``INSERT ... SELECT
generate_series`` statements, so each points at an existing row and the source reads its
current state. The filled database is made once and copied (``CREATE DATABASE ... TEMPLATE``)
for every run, so each run starts from the same backlog in a fresh database.

Each worker is a fresh process. It connects, says it is ready, and starts on the parent's
signal; the clock runs from that signal until the last worker finds nothing left to claim.
What arrived is checked afterwards against the database and the receiver, not the workers'
counters: every queue row must be ``completed``; the queue ids the workers' sinks received
(the hand-written loop: the ids it claimed and "sent"), written to a file per worker after
its clock stopped, must cover every queue row of the database; for syncworker, the log table
must hold one ``success`` row per record, whose queue ids cover every row once, and each
worker's log rows must match what its sink received. A run where anything is missing fails
the benchmark (exit 1), ``--check`` or not.

- ``syncworker``: ``pg_outbox`` -> a null sink (it keeps the queue ids of what it receives),
  ``schedule: {manual: true}``, one sync run per worker (``Engine.run_once``), ``batch:
  {size: 5000, max_in_flight: 2}``: the size a user tuning for throughput sets (it is the
  other benchmarks' size, too); with 1 worker, with 3 workers (3 processes, one engine each,
  same outbox; the share of rows per worker comes from the log table's ``worker`` column),
  and with 1 worker at the seed's ``BATCH_SIZE=100``.
- ``hand-written``: the seed's loop as plain psycopg, 1 worker: in one transaction, select up
  to N pending rows ``FOR UPDATE SKIP LOCKED``, then mark them completed; no log, no lease,
  no read of the source rows (syncworker does all three). N = 100 (the seed) and 5000.

Cases are run ``--repeat`` times (default 3), interleaved (a, b, c, ..., a, b, c, ...), so a
drift of the machine's speed falls on every case alike; each figure is the median over the
runs with min-max. Each run (and the fill) holds ``--lock``, the machine's benchmark lock.

Target (issue 14): one syncworker worker (batch 5000) drains at >= 0.7x the rows/s of the
hand-written loop at batch 5000 of the same run (medians). ``--check`` exits 1 when it is
missed. The older absolute figure (issue 5: >= 20,000 rows/s) is printed for reference only.

Services come from the options: ``--pg-dsn`` (an admin DSN; default ``$SYNCWORKER_BENCH_PG``
or the local server) and ``--db-prefix``: the template and every copy are databases
``<prefix>_<random>`` this run creates, and it drops only those.

    python bench/outbox_throughput.py --check                    # 500,000 rows, 3 runs each
    python bench/outbox_throughput.py --rows 5000 --repeat 1 --lock ''   # the smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

sys.path.insert(0, str(Path(__file__).parent))
from outbox_latency import (
    LOG,
    QUEUE,
    SEED_CLAIM,
    SEED_COMPLETE,
    add_service_options,
    check_prefix,
    database,
    database_name,
    install_outbox,
)
from pipeline_embedded import cpu_s, peak_rss_mb
from table_sync import bench_lock

BATCH = 5_000
SEED_BATCH_SIZE = 100
FILL_CHUNK = 100_000
TARGET_RATIO = 0.7
REFERENCE_ROWS_PER_S = 20_000  # issue 5's absolute figure, printed for reference only
MEDIAN_KEYS = ("rows_per_s", "seconds", "cpu_s", "peak_rss_mb")


@dataclass(frozen=True, slots=True)
class Case:
    """Who drains the queue, how many processes, and the batch size."""

    kind: Literal["syncworker", "hand-written"]
    workers: int
    batch: int

    @property
    def name(self) -> str:
        plural = "s" if self.workers > 1 else ""
        return f"{self.kind} {self.workers} worker{plural}, batch {self.batch}"


CASES = [
    Case("syncworker", 1, BATCH),
    Case("syncworker", 3, BATCH),
    Case("syncworker", 1, SEED_BATCH_SIZE),
    Case("hand-written", 1, SEED_BATCH_SIZE),
    Case("hand-written", 1, BATCH),
]
TARGET_CASE = CASES[0]
FLOOR_CASE = CASES[4]


# -- the backlog -------------------------------------------------------------------------


def fill_backlog(pg_url: str, rows: int) -> float:
    """``rows`` products inserted with the trigger on, so ``rows`` pending queue rows.
    Returns the seconds it took."""
    import psycopg

    started = time.perf_counter()
    install_outbox(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for start in range(1, rows + 1, FILL_CHUNK):
            stop = min(start + FILL_CHUNK - 1, rows)
            conn.execute(
                "INSERT INTO products (id, name, price, updated_at)"
                " SELECT g, 'product ' || g, (g %% 1000) + 0.99, now()"
                " FROM generate_series(%s::bigint, %s::bigint) AS g",
                (start, stop),
            )
        conn.execute(f"VACUUM ANALYZE products, {QUEUE}")
        row = conn.execute(f"SELECT count(*) FROM {QUEUE} WHERE status = 'pending'").fetchone()
    assert row is not None and row[0] == rows, (row, rows)
    return time.perf_counter() - started


def check_outcome(
    pg_url: str, case: Case, rows: int, delivered: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """What a drain must leave, read from the database once every worker has stopped: every
    queue row completed, the queue ids the workers received (``delivered``, one list per
    worker) covering every queue row and, for syncworker, one success log row per record
    whose queue ids cover every row once. Returns how many rows are completed, the rows
    each worker logged (syncworker only), how many ids were received more than once, and
    what is wrong (nothing, when the drain is right)."""
    import psycopg

    problems = []
    by_worker: dict[str, int] = {}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        statuses = dict(conn.execute(f"SELECT status, count(*) FROM {QUEUE} GROUP BY 1").fetchall())
        if statuses != {"completed": rows}:
            problems.append(f"queue rows by status: {statuses}, expected {rows} completed")
        queue_ids = {row[0] for row in conn.execute(f"SELECT id FROM {QUEUE}")}
        if case.kind == "syncworker":
            problems += _check_log(conn, rows)
            by_worker = dict(
                conn.execute(
                    f"SELECT worker, count(*) FROM {LOG} WHERE result = 'success' GROUP BY 1"
                ).fetchall()
            )
    received = {queue_id for ids in delivered for queue_id in ids}
    if queue_ids - received:
        problems.append(f"{len(queue_ids - received)} of {len(queue_ids)} queue rows not received")
    if received - queue_ids:
        problems.append(f"{len(received - queue_ids)} ids received that are not in the queue")
    return {
        "completed": statuses.get("completed", 0),
        "by_worker": by_worker,
        "redelivered": sum(len(ids) for ids in delivered) - len(received),
        "problems": problems,
    }


def _check_log(conn: Any, rows: int) -> list[str]:
    row = conn.execute(
        f"SELECT count(DISTINCT q) FROM {LOG}, unnest(queue_ids) AS q WHERE result = 'success'"
    ).fetchone()
    logged = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE result = 'success') FROM {LOG}"
    ).fetchone()
    if logged != (rows, rows) or row is None or row[0] != rows:
        return [
            f"log: {logged} rows (all, success) covering {row and row[0]} queue ids,"
            f" expected {rows} success rows covering {rows}"
        ]
    return []


# -- the null sink -----------------------------------------------------------------------


def null_sink_class() -> type[Any]:
    """A sink that writes nothing but keeps the queue ids it received (built here so only
    worker processes import the registry)."""
    from syncworker.core.protocols import ConnectorConfig

    class NullSinkConfig(ConnectorConfig):
        type: Literal["bench_null"] = "bench_null"

    class NullSink:
        config_model: ClassVar[type[ConnectorConfig]] = NullSinkConfig

        def __init__(self, config: Any, *, name: str) -> None:
            self.name = name
            self.queue_ids = array("q")  # 8 bytes an id: the check barely moves the RSS

        async def open(self) -> None:
            pass

        async def write(self, records: Sequence[Any]) -> None:
            self.queue_ids.extend(i for r in records for i in r.meta["queue_ids"])

        async def close(self) -> None:
            pass

    return NullSink


# -- worker processes --------------------------------------------------------------------


async def child_syncworker(pg_url: str, root: Path, worker_id: str, batch: int) -> dict[str, Any]:
    """Connect, say ready, wait for "go", then one sync run that drains what it can claim."""
    from syncworker.config import config_from_dict
    from syncworker.core import registry
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "warning")
    registry.register("sink", "bench_null", null_sink_class())
    raw = {
        "state": f"sqlite:///{root}/state-{worker_id}.db",
        "pipelines": {
            "bench": {
                "source": {
                    "type": "pg_outbox",
                    "url": pg_url,
                    "queue_table": QUEUE,
                    "tables": ["products"],
                    "worker_id": worker_id,
                },
                "sinks": [{"type": "bench_null"}],
                "batch": {"size": batch, "max_wait": "10ms", "max_in_flight": 2},
                "schedule": {"manual": True},
            }
        },
    }
    config = config_from_dict(raw, environ={})
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state)
    await state.open()
    await engine.pipeline("bench").open()
    await state.close()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    cpu_started = cpu_s()
    [run] = await engine.run_once()
    figures = {"records": run.processed, "finished_at": time.time(), "cpu_s": cpu_s() - cpu_started}
    if run.status != "success":
        figures["problem"] = f"run {run.status}: {run.error}"
    _write_delivered(root, worker_id, engine.pipeline("bench").sinks[0].queue_ids)
    return figures


def child_hand_written(pg_url: str, root: Path, worker_id: str, batch: int) -> dict[str, Any]:
    """The seed's loop: claim a batch with SKIP LOCKED, "send" it, mark it completed."""
    import psycopg

    sent = array("q")
    with psycopg.connect(pg_url) as conn:
        print("ready", flush=True)
        sys.stdin.readline()
        cpu_started = cpu_s()
        while True:
            with conn.transaction():
                rows = conn.execute(SEED_CLAIM, (batch,)).fetchall()
                if rows:
                    ids = [row[0] for row in rows]
                    sent.extend(ids)  # "sent"
                    conn.execute(SEED_COMPLETE, (ids,))
            if not rows:
                break
        finished_at = time.time()
    figures = {"records": len(sent), "finished_at": finished_at, "cpu_s": cpu_s() - cpu_started}
    _write_delivered(root, worker_id, sent)
    return figures


def _write_delivered(root: Path, worker_id: str, queue_ids: array[int]) -> None:
    """After the clock stopped: what this worker received, for the parent to check."""
    with open(root / f"delivered-{worker_id}.bin", "wb") as out:
        queue_ids.tofile(out)


def child_main(args: argparse.Namespace) -> None:
    if args.child == "syncworker":
        figures = asyncio.run(child_syncworker(args.pg, args.root, args.worker, args.batch))
    else:
        figures = child_hand_written(args.pg, args.root, args.worker, args.batch)
    figures["rss"] = peak_rss_mb()
    print(json.dumps(figures), flush=True)


# -- one run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """What every run shares: the backlog, its template database, the services."""

    rows: int
    template: str
    pg_dsn: str
    db_prefix: str
    limit_s: float


def run_once(case: Case, s: Settings) -> dict[str, Any]:
    """A copy of the filled database, ``case.workers`` processes started together."""
    with (
        database(s.pg_dsn, s.db_prefix, s.template) as pg_url,
        tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp,
    ):
        root = Path(tmp)
        with ExitStack() as stack:
            workers = []
            for n in range(1, case.workers + 1):
                err = stack.enter_context(open(root / f"w{n}.err", "w"))
                command = [sys.executable, __file__, "--child", case.kind, "--pg", pg_url]
                command += ["--root", tmp, "--worker", f"w{n}", "--batch", str(case.batch)]
                workers.append(
                    subprocess.Popen(
                        command,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
            try:
                figures = _drive(case, workers, root, s.limit_s)
            finally:
                for worker in workers:
                    if worker.poll() is None:
                        worker.kill()
                        worker.wait()
        delivered = [_read_delivered(root, f"w{n}") for n in range(1, case.workers + 1)]
        outcome = check_outcome(pg_url, case, s.rows, delivered)
    return _run_figures(case, s.rows, figures, delivered, outcome)


def _read_delivered(root: Path, worker_id: str) -> array[int]:
    path = root / f"delivered-{worker_id}.bin"
    ids = array("q")
    if path.exists():
        ids.frombytes(path.read_bytes())
    return ids


def _run_figures(
    case: Case,
    rows: int,
    figures: list[dict[str, Any]],
    delivered: Sequence[Sequence[int]],
    outcome: dict[str, Any],
) -> dict[str, Any]:
    problems = outcome["problems"]
    problems += [f"w{n}: {f['problem']}" for n, f in enumerate(figures, start=1) if "problem" in f]
    by_worker = outcome["by_worker"]
    for n, ids in enumerate(delivered, start=1):
        if case.kind == "syncworker" and by_worker.get(f"w{n}", 0) != len(ids):
            problems.append(f"w{n} received {len(ids)} queue ids, logged {by_worker.get(f'w{n}')}")
    seconds = max(f["finished_at"] for f in figures)
    return {
        "seconds": seconds,
        "completed": outcome["completed"],
        "rows_per_s": outcome["completed"] / seconds,
        "cpu_s": sum(f["cpu_s"] for f in figures),
        "peak_rss_mb": max(f["rss"] for f in figures),
        "cpu_s_per_worker": [f["cpu_s"] for f in figures],
        "peak_rss_mb_per_worker": [f["rss"] for f in figures],
        "records_per_worker": [f["records"] for f in figures],
        "received_per_worker": [len(ids) for ids in delivered],
        "share": [len(ids) / rows for ids in delivered],
        "redelivered": outcome["redelivered"],
        "problems": problems,
    }


def _drive(
    case: Case, workers: list[subprocess.Popen[str]], root: Path, limit_s: float
) -> list[dict[str, Any]]:
    """Wait until every worker is ready, start them all, collect their figures; a worker
    still draining after ``limit_s`` is killed and reported."""
    for n, worker in enumerate(workers, start=1):
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            worker.wait(10)
            raise SystemExit(f"{case.name}: worker w{n} failed:\n{_tail(root / f'w{n}.err')}")
    started_at = time.time()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    figures = []
    for n, worker in enumerate(workers, start=1):
        try:
            stdout, _ = worker.communicate(timeout=max(1.0, started_at + limit_s - time.time()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            figures.append(
                {
                    "records": 0,
                    "finished_at": time.time() - started_at,
                    "cpu_s": float("nan"),
                    "rss": float("nan"),
                    "problem": f"still draining after {limit_s:.0f} s: killed",
                }
            )
            continue
        if worker.returncode != 0:
            raise SystemExit(f"{case.name}: worker w{n} failed:\n{_tail(root / f'w{n}.err')}")
        result = json.loads(stdout.strip().splitlines()[-1])
        result["finished_at"] -= started_at
        figures.append(result)
    return figures


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else ""


# -- all runs ----------------------------------------------------------------------------


def run_cases(cases: list[Case], s: Settings, repeat: int, lock: str) -> list[dict[str, Any]]:
    """Every case ``repeat`` times, interleaved (a, b, c, a, b, c, ...) so drift of the
    machine's speed falls on every case alike; each run holds the benchmark lock."""
    runs: dict[Case, list[dict[str, Any]]] = {case: [] for case in cases}
    for n in range(1, repeat + 1):
        for case in cases:
            with bench_lock(lock):
                run = run_once(case, s)
            runs[case].append(run)
            print(
                f"  run {n}/{repeat} {case.name}: {run['seconds']:.1f} s, "
                f"{run['rows_per_s']:,.0f} rows/s{', PROBLEMS' if run['problems'] else ''}",
                flush=True,
            )
    return [summarize(case, found, s.rows) for case, found in runs.items()]


def summarize(case: Case, found: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """One case: each figure's median over its runs with min and max; the share of rows per
    worker from the median run (by rows/s); every run's problems."""
    by_rate = sorted(found, key=lambda run: run["rows_per_s"])
    median_run = by_rate[len(by_rate) // 2]
    result: dict[str, Any] = {
        "case": case.name,
        "kind": case.kind,
        "workers": case.workers,
        "batch": case.batch,
        "rows": rows,
        "runs": len(found),
    }
    for key in MEDIAN_KEYS:
        values = [run[key] for run in found]
        result[key] = statistics.median(values)
        result[f"{key}_min"], result[f"{key}_max"] = min(values), max(values)
    result["completed"] = sum(run["completed"] for run in found)
    result["redelivered"] = sum(run["redelivered"] for run in found)
    result["share"] = median_run["share"]
    result["received_per_worker"] = median_run["received_per_worker"]
    result["problems"] = [
        f"run {n}: {problem}" for n, run in enumerate(found, 1) for problem in run["problems"]
    ]
    result["all_runs"] = found
    return result


def _spread(r: dict[str, Any], key: str, fmt: str) -> str:
    return f"{r[key]:{fmt}} ({r[f'{key}_min']:{fmt}}-{r[f'{key}_max']:{fmt}})"


def print_results(results: list[dict[str, Any]]) -> None:
    print(
        "| case | runs | rows | rows/s (min-max) | seconds (min-max) | worker CPU s (min-max) "
        "| peak RSS MB (min-max) | share of rows |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        share = " / ".join(f"{v:.0%}" for v in r["share"])
        print(
            f"| {r['case']} | {r['runs']} | {r['rows']:,} | {_spread(r, 'rows_per_s', ',.0f')} | "
            f"{_spread(r, 'seconds', '.1f')} | {_spread(r, 'cpu_s', '.1f')} | "
            f"{_spread(r, 'peak_rss_mb', '.0f')} | {share} |"
        )
    print("(worker CPU: summed over the case's workers; peak RSS: its largest worker)")


def judge(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 14's target against the medians of this run."""
    by_name = {r["case"]: r for r in results}
    mine, floor = by_name.get(TARGET_CASE.name), by_name.get(FLOOR_CASE.name)
    ratio = mine["rows_per_s"] / floor["rows_per_s"] if mine and floor else None
    target: dict[str, Any] = {
        "target": f"{TARGET_CASE.name} >= {TARGET_RATIO:g}x {FLOOR_CASE.name} (rows/s)",
        "value": ratio,
        "met": ratio is not None and ratio >= TARGET_RATIO,
    }
    if mine and floor:
        pairs = zip(mine["all_runs"], floor["all_runs"], strict=True)
        target["ratio_per_repeat"] = [a["rows_per_s"] / b["rows_per_s"] for a, b in pairs]
    return [target]


def print_targets(targets: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    print("target (issue 14):")
    for t in targets:
        if t["value"] is None:
            print(f"  {t['target']}: NOT met (not measured: run both cases)")
            continue
        pairs = ", ".join(f"{v:.2f}x" for v in t.get("ratio_per_repeat", []))
        verdict = "met" if t["met"] else "NOT met"
        print(f"  {t['target']}: {verdict} ({t['value']:.2f}x; per repeat: {pairs})")
    for r in results:
        if r["case"] == TARGET_CASE.name:
            print(
                f"  for reference, issue 5's >= {REFERENCE_ROWS_PER_S:,} rows/s with one worker:"
                f" {r['rows_per_s']:,.0f} rows/s (not checked)"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="queued changes to drain")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians kept)")
    parser.add_argument(
        "--case",
        action="append",
        choices=[case.name for case in CASES],
        help="run only this case (repeatable)",
    )
    parser.add_argument(
        "--limit-s", type=float, default=900.0, help="kill a drain still running after this"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_service_options(parser, "sw_bench_outbox_tp")
    parser.add_argument("--child", choices=["syncworker", "hand-written"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pg", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.child:
        child_main(args)
        return 0
    check_prefix(args.db_prefix)
    cases = [case for case in CASES if not args.case or case.name in args.case]
    with database(args.pg_dsn, args.db_prefix) as template_url:
        with bench_lock(args.lock):
            fill_s = fill_backlog(template_url, args.rows)
        print(f"backlog of {args.rows:,} filled in {fill_s:.1f} s (not timed below)", flush=True)
        settings = Settings(
            args.rows, database_name(template_url), args.pg_dsn, args.db_prefix, args.limit_s
        )
        results = run_cases(cases, settings, args.repeat, args.lock)
    print_results(results)
    targets = judge(results)
    print_targets(targets, results)
    problems = [f"{r['case']}: {p}" for r in results for p in r["problems"]]
    if args.json:
        settings_out = {"rows": args.rows, "repeat": args.repeat, "lock": args.lock}
        out = {"settings": settings_out, "cases": results, "targets": targets, "problems": problems}
        args.json.write_text(json.dumps(out, indent=2))
    for problem in problems:
        print(f"  !! {problem}")
    if problems:
        print("FAILED: drains not complete, not received or not logged right (see above)")
        return 1
    return 1 if args.check and not all(t["met"] for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
