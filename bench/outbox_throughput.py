"""Seed 001's path: how fast the ``pg_outbox`` source drains a backlog, with 1 and 3 workers,
beside the seed's hand-written claim loop.

500,000 changes (``--rows``) wait in ``algolia_sync_queue``: real outbox rows, written by the
installed trigger while ``products`` was filled by multi-row ``INSERT ... SELECT
generate_series`` statements, so each points at an existing row and the source reads its
current state. The filled database is made once and copied (``CREATE DATABASE ... TEMPLATE``)
for every run, so each run starts from the same backlog in a fresh database.

Each worker is a fresh process. It connects, says it is ready, and starts on the parent's
signal; the clock runs from that signal until the last worker finds nothing left to claim
(checked afterwards: no row pending or processing). Then every queue row must be
``completed`` and, for syncworker, the log table must hold one ``success`` row per record,
whose queue ids cover every row once.

- ``syncworker``: ``pg_outbox`` -> a null sink, ``schedule: {manual: true}``, one sync run
  per worker (``Engine.run_once``), ``batch: {size: 5000, max_in_flight: 2}``: the size a user
  tuning for throughput sets (it is the other benchmarks' size, too); with 1 worker, with 3
  workers (3 processes, one engine each, same outbox; the share of rows per worker comes from
  the log table's ``worker`` column), and with 1 worker at the seed's ``BATCH_SIZE=100``.
- ``hand-written``: the seed's loop as plain psycopg, 1 worker: in one transaction, select up
  to N pending rows ``FOR UPDATE SKIP LOCKED``, then mark them completed; no log, no lease,
  no read of the source rows (syncworker does all three). N = 100 (the seed) and 5000.

    python bench/outbox_throughput.py                            # 500,000 rows, 3 runs each
    python bench/outbox_throughput.py --rows 5000 --repeat 1     # the smoke run in the suite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
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
    database,
    install_outbox,
)
from pipeline_embedded import cpu_s, peak_rss_mb

BATCH = 5_000
SEED_BATCH_SIZE = 100
FILL_CHUNK = 100_000
TARGET_ROWS_PER_S = 20_000


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


def check_outcome(pg_url: str, case: Case, rows: int) -> tuple[int, dict[str, int], list[str]]:
    """What a drain must leave: every queue row completed and, for syncworker, one success
    log row per record whose queue ids cover every row once. Returns how many rows are
    completed, the rows each worker logged (syncworker only) and what is wrong (nothing,
    when the drain is right)."""
    import psycopg

    problems = []
    by_worker: dict[str, int] = {}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        statuses = dict(conn.execute(f"SELECT status, count(*) FROM {QUEUE} GROUP BY 1").fetchall())
        if statuses != {"completed": rows}:
            problems.append(f"queue rows by status: {statuses}, expected {rows} completed")
        if case.kind == "syncworker":
            row = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE result = 'success'),"
                f" count(DISTINCT q) FROM {LOG}, unnest(queue_ids) AS q"
            ).fetchone()
            logged = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE result = 'success') FROM {LOG}"
            ).fetchone()
            if logged != (rows, rows) or row is None or row[2] != rows:
                problems.append(
                    f"log: {logged} rows (all, success) covering {row and row[2]} queue ids,"
                    f" expected {rows} success rows covering {rows}"
                )
            by_worker = dict(
                conn.execute(
                    f"SELECT worker, count(*) FROM {LOG} WHERE result = 'success' GROUP BY 1"
                ).fetchall()
            )
    return statuses.get("completed", 0), by_worker, problems


# -- the null sink -----------------------------------------------------------------------


def null_sink_class() -> type[Any]:
    """A sink that writes nothing (built here so only worker processes import the registry)."""
    from syncworker.core.protocols import ConnectorConfig

    class NullSinkConfig(ConnectorConfig):
        type: Literal["bench_null"] = "bench_null"

    class NullSink:
        config_model: ClassVar[type[ConnectorConfig]] = NullSinkConfig

        def __init__(self, config: Any, *, name: str) -> None:
            self.name = name

        async def open(self) -> None:
            pass

        async def write(self, records: Sequence[Any]) -> None:
            pass

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
    config = config_from_dict(raw)
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
    return figures


def child_hand_written(pg_url: str, batch: int) -> dict[str, Any]:
    """The seed's loop: claim a batch with SKIP LOCKED, "send" it, mark it completed."""
    import psycopg

    moved = 0
    with psycopg.connect(pg_url) as conn:
        print("ready", flush=True)
        sys.stdin.readline()
        cpu_started = cpu_s()
        while True:
            with conn.transaction():
                rows = conn.execute(SEED_CLAIM, (batch,)).fetchall()
                if rows:
                    conn.execute(SEED_COMPLETE, ([row[0] for row in rows],))
            if not rows:
                break
            moved += len(rows)
        finished_at = time.time()
    return {"records": moved, "finished_at": finished_at, "cpu_s": cpu_s() - cpu_started}


def child_main(args: argparse.Namespace) -> None:
    if args.child == "syncworker":
        figures = asyncio.run(child_syncworker(args.pg, args.root, args.worker, args.batch))
    else:
        figures = child_hand_written(args.pg, args.batch)
    figures["rss"] = peak_rss_mb()
    print(json.dumps(figures), flush=True)


# -- one run -----------------------------------------------------------------------------


def run_once(case: Case, rows: int, template: str, limit_s: float) -> dict[str, Any]:
    """A copy of the filled database, ``case.workers`` processes started together."""
    with database(template) as pg_url, tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
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
                figures = _drive(case, workers, root, limit_s)
            finally:
                for worker in workers:
                    if worker.poll() is None:
                        worker.kill()
                        worker.wait()
        completed, by_worker, problems = check_outcome(pg_url, case, rows)
    problems += [f"w{n}: {f['problem']}" for n, f in enumerate(figures, start=1) if "problem" in f]
    if case.kind == "syncworker":
        for n, f in enumerate(figures, start=1):
            if "problem" not in f and by_worker.get(f"w{n}", 0) != f["records"]:
                problems.append(f"w{n} sent {f['records']}, logged {by_worker.get(f'w{n}', 0)}")
    seconds = max(f["finished_at"] for f in figures)
    print(f"  {case.name}: {seconds:.1f} s{' (problems)' if problems else ''}", flush=True)
    return {"figures": figures, "seconds": seconds, "completed": completed, "problems": problems}


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


def run_cases(
    cases: list[Case], rows: int, template: str, repeat: int, limit_s: float
) -> list[dict[str, Any]]:
    """Every case ``repeat`` times, interleaved (a, b, c, a, b, c, ...) so drift of the
    machine's speed falls on every case alike; the median run (by seconds) is kept."""
    runs: dict[Case, list[dict[str, Any]]] = {case: [] for case in cases}
    for _ in range(repeat):
        for case in cases:
            runs[case].append(run_once(case, rows, template, limit_s))
    results = []
    for case, found in runs.items():
        found.sort(key=lambda run: run["seconds"])
        median = found[len(found) // 2]
        workers = median["figures"]
        results.append(
            {
                "case": case.name,
                "kind": case.kind,
                "workers": case.workers,
                "batch": case.batch,
                "rows": rows,
                "seconds": median["seconds"],
                "completed": median["completed"],
                "rows_per_s": median["completed"] / median["seconds"],
                "peak_rss_mb": [w["rss"] for w in workers],
                "cpu_s": [w["cpu_s"] for w in workers],
                "records_per_worker": [w["records"] for w in workers],
                "share": [w["records"] / rows for w in workers],
                "runs": len(found),
                "problems": [p for run in found for p in run["problems"]],
            }
        )
    return results


def print_results(results: list[dict[str, Any]]) -> None:
    print(
        f"{'case':<38} {'rows':>9} {'rows/s':>9} {'seconds':>8} "
        f"{'peak RSS MB/worker':>19} {'CPU s/worker':>16}  share of rows"
    )
    for r in results:
        rss = "/".join(f"{v:.0f}" for v in r["peak_rss_mb"])
        cpu = "/".join(f"{v:.1f}" for v in r["cpu_s"])
        share = "/".join(f"{v:.0%}" for v in r["share"])
        print(
            f"{r['case']:<38} {r['rows']:>9,} {r['rows_per_s']:>9,.0f} {r['seconds']:>8.2f} "
            f"{rss:>19} {cpu:>16}  {share}"
        )
        for problem in r["problems"]:
            print(f"  !! {r['case']}: {problem}")
    print(f"target: >= {TARGET_ROWS_PER_S:,} rows/s with one syncworker worker")
    for r in results:
        if r["kind"] == "syncworker" and r["workers"] == 1:
            met = r["rows_per_s"] >= TARGET_ROWS_PER_S and not r["problems"]
            print(f"  {r['case']}: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="queued changes to drain")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median kept)")
    parser.add_argument(
        "--case",
        action="append",
        choices=[case.name for case in CASES],
        help="run only this case (repeatable)",
    )
    parser.add_argument(
        "--limit-s", type=float, default=900.0, help="kill a drain still running after this"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=["syncworker", "hand-written"])
    parser.add_argument("--root", type=Path)
    parser.add_argument("--pg")
    parser.add_argument("--worker")
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    cases = [case for case in CASES if not args.case or case.name in args.case]
    with database() as template_url:
        fill_s = fill_backlog(template_url, args.rows)
        print(f"backlog of {args.rows:,} filled in {fill_s:.1f} s (not timed below)", flush=True)
        template = template_url.rsplit("/", 1)[1]
        results = run_cases(cases, args.rows, template, args.repeat, args.limit_s)
    print_results(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    failed = [r["case"] for r in results if r["problems"]]
    if failed:
        raise SystemExit(f"drains not complete or not logged right: {', '.join(failed)}")


if __name__ == "__main__":
    main()
