"""Embedded pipeline throughput: sqlite_queue -> jsonl (+ sqlite), records/s, CPU and peak RSS.

Messages of about 110 bytes on two streams (message n on `in` when n is even, `out` when odd)
are put in a SQLite queue before anything is timed; each run then drains a fresh copy of that
queue in a fresh child process (so its peak RSS is its own), around the drain only: wall
time, the worker's CPU (every thread) and its peak RSS (VmHWM). Cases, interleaved
(A, B, C, D, A, ...) and each run `--repeat` times per backlog (100k and 1M by default):

- `syncworker jsonl`: one sync run (`Engine.run_once`), sqlite_queue -> jsonl, batches of
  5,000, two in flight;
- `syncworker jsonl + api`: the same with the control API served by the engine and, in a
  process of its own, a poller doing what a dashboard and a Prometheus scraper do: `/status`,
  `/dead-letters`, `/errors` and `/metrics`, each once a second. The poller's CPU is counted
  apart from the worker's (from /proc, over the same window);
- `syncworker jsonl+sqlite`: the same into JSONL and a SQLite table;
- `hand-written jsonl`: a worker in the seeds' style (claim a batch with one UPDATE ...
  RETURNING, append it to a JSONL file, fsync, delete the rows): the floor of what this
  machine does with the same SQLite and file work, with none of the guarantees.

What arrived is checked after every run, not taken from the runtime's counters: every
message exactly once as a line of its stream's JSONL file (and a row of the SQLite sink's
table), nothing else, nothing left in the queue. A missing or repeated message fails the run
(exit 1). Targets (issue 14), `--check` exits 1 when one is missed, at every backlog:
`syncworker jsonl` >= 0.6x `hand-written jsonl` (median records/s) and the control API
costs < 5% of throughput (median over the interleaved pairs of 1 - with/without).

`--profile DIR` runs `syncworker jsonl` and `hand-written jsonl` (or the `--case`s) once
each under cProfile (every thread; no timing figures, no targets) and prints where the
time goes.

    python bench/pipeline_embedded.py --check                 # 100k and 1M, 3 runs per case
    python bench/pipeline_embedded.py --messages 20000 --repeat 1 --lock ''   # the smoke run
    python bench/pipeline_embedded.py --messages 100000 --profile /tmp/prof   # the profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from runstats import add_medians, median_range, number, run_child
from table_sync import bench_lock

NA = "n/a"
BATCH = 5_000
CHILD_TIMEOUT_S = 1800
SW = "syncworker jsonl"
SW_API = "syncworker jsonl + api"
SW_SQLITE = "syncworker jsonl+sqlite"
HAND = "hand-written jsonl"
CASES: dict[str, list[str] | None] = {
    SW: ["jsonl"],
    SW_API: ["jsonl"],
    SW_SQLITE: ["jsonl", "sqlite"],
    HAND: None,
}
TARGET_OF_HAND = 0.6
TARGET_API_COST = 0.05
# A dashboard and a Prometheus scraper, from another process: every endpoint once a second,
# on a fixed tick (a slow answer does not lower the rate). It notes each round's start and
# its own CPU seconds after it; on SIGTERM it prints those and its CPU seconds then, so the
# worker counts the requests and the poller's CPU that fell in its timed window.
POLLER = """
import json, resource, signal, sys, time, httpx
url, token = sys.argv[1], sys.argv[2]
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
rounds, failed = [], []
def stop(*_):
    print(json.dumps({"rounds": rounds, "cpu_s": cpu(), "failed": failed}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
    tick = time.time()
    while True:
        for path in ("/status", "/dead-letters", "/errors", "/metrics"):
            try:
                client.get(path, timeout=30).raise_for_status()
            except httpx.HTTPError as exc:  # noted with its time; the worker judges it
                failed.append((time.time(), path, str(exc)[:200]))
        rounds.append((tick, cpu()))
        tick += 1.0
        time.sleep(max(0.0, tick - time.time()))
"""
POLLER_PATHS = 4


def stream_of(n: int) -> str:
    return "in" if n % 2 == 0 else "out"


def message(n: int) -> bytes:
    stream = stream_of(n)
    return orjson.dumps(
        {
            "id": f"{stream}-{n}",
            "from": "+447000000000",
            "text": "see you at nine, the order shipped",
            "ts": n,
        }
    )


def fill_queue(path: Path, count: int) -> None:
    """Messages 0..count-1, each on its stream, in order."""
    from syncworker.connectors.sqlite.queue import SqliteQueue

    chunk = 100_000  # even, so each chunk starts on `in`
    with SqliteQueue(path) as queue:
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            for stream, first in (("in", start), ("out", start + 1)):
                queue.enqueue((message(n) for n in range(first, stop, 2)), stream=stream)


def config_text(root: Path, sinks: list[str]) -> str:
    outputs = {
        "jsonl": f'{{type: jsonl, path: "{root}/out"}}',
        "sqlite": f'{{type: sqlite, path: "{root}/sink.db", table: messages}}',
    }
    lines = "\n".join(f"      - {outputs[s]}" for s in sinks)
    return (
        f'state: "sqlite:///{root}/state.db"\n'
        "pipelines:\n  bench:\n"
        f'    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id}}\n'
        f"    sinks:\n{lines}\n"
        f"    batch: {{size: {BATCH}, max_wait: 10ms, max_in_flight: 2}}\n"
        "    schedule: {manual: true}\n"
    )


def cpu_s() -> float:
    """CPU seconds this process used so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage: ru_maxrss survives execve, so a child
    would report its parent's peak (the parent filled the queue)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- the children -------------------------------------------------------------------------


class Profiler:
    """cProfile in the main thread and in every thread started after it, one profile per
    thread (saved as <path>.<thread name>): the SQLite client and the JSONL sink work in
    threads of their own, and which thread is busy is what tells the critical path."""

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.threads: dict[str, cProfile.Profile] = {}
        threading.setprofile(self._start_in_thread)

    def _start_in_thread(self, *_: object) -> None:
        profile = cProfile.Profile()
        # Thread names hold file paths ("sqlite-state store '/tmp/.../state.db'_0").
        name = re.sub(r"[^\w.-]+", "_", re.sub(r"'[^']*'", "", threading.current_thread().name))
        self.threads[f"{name}-{len(self.threads)}"] = profile
        profile.enable()

    def save(self, path: Path) -> None:
        threading.setprofile(None)
        self.main.dump_stats(f"{path}.MainThread")
        for name, profile in self.threads.items():
            profile.dump_stats(f"{path}.{name}")


async def child_syncworker(
    root: Path, sinks: list[str], *, api: bool, profiler: Profiler | None
) -> dict[str, Any]:
    from syncworker.config import parse_config
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "warning")
    config = parse_config(config_text(root, sinks))
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state)
    # Connect first (files, threads, schema checks): the clock measures the drain only, so a
    # 1 s run at 100k is not penalised by set-up a 10 s run at 1M spreads thinner.
    await state.open()
    await engine.pipeline("bench").open()
    poller = await _start_api(engine) if api else None
    await state.close()
    wall0, cpu0, started = time.time(), cpu_s(), time.perf_counter()
    if profiler:
        profiler.main.enable()
    try:
        [run] = await engine.run_once()
    finally:
        if profiler:
            profiler.main.disable()
        seconds = time.perf_counter() - started
        cpu_used_s = cpu_s() - cpu0
        wall1 = time.time()
        poller_figures = _stop_poller(poller, wall0, wall1) if poller else {}
        for service in engine.services:
            await service.stop()
    assert run.status == "success", run
    return {"records": run.processed, "seconds": seconds, "cpu_s": cpu_used_s, **poller_figures}


async def _start_api(engine: Any) -> subprocess.Popen[str]:
    """The API on a free port, and a poller process hitting it like a dashboard would."""
    from syncworker.api.server import ApiServer

    server = ApiServer(engine, host="127.0.0.1", port=0, token="bench")
    await server.start()
    engine.services.append(server)  # stopped with the engine
    # Popen only starts the process (it does not wait), so the loop is not blocked.
    poller = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", POLLER, server.url, "bench"], stdout=subprocess.PIPE, text=True
    )
    await asyncio.sleep(1.5)  # the poller is up and has polled once before the clock starts
    if poller.poll() is not None:
        raise SystemExit("the API poller died")
    return poller


def _stop_poller(poller: subprocess.Popen[str], wall0: float, wall1: float) -> dict[str, Any]:
    """The poller's requests and CPU over the window [wall0, wall1]; the poller is stopped.
    Its CPU counts from the end of its last round before the window (its start-up and the
    rounds before are left out) to its stop."""
    poller.terminate()
    out, _ = poller.communicate(timeout=10)
    report = json.loads(out.strip().splitlines()[-1])
    before = [cpu for tick, cpu in report["rounds"] if tick < wall0]
    inside = [tick for tick, _ in report["rounds"] if wall0 <= tick <= wall1]
    # A request that failed while the run was timed is a defect the run reports; after it
    # (the engine closing its state store while the poller still polls) it is not.
    failed = [f"{path}: {why}" for when, path, why in report["failed"] if when <= wall1]
    return {
        "poller_cpu_s": report["cpu_s"] - before[-1] if before else None,
        "poller_requests": POLLER_PATHS * len(inside),
        "poller_failed": failed,
    }


def child_hand_written(root: Path, profiler: Profiler | None) -> dict[str, Any]:
    """The seeds' loop, done as fast as plain Python can: no retries, no dead letters."""
    conn = sqlite3.connect(root / "queue.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    (root / "out").mkdir(exist_ok=True)
    fds: dict[str, int] = {}
    moved = 0
    cpu0, started = cpu_s(), time.perf_counter()
    if profiler:
        profiler.main.enable()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "UPDATE syncworker_queue SET locked_until = 1e18 WHERE id IN (SELECT id FROM "
            "syncworker_queue ORDER BY id LIMIT ?) RETURNING id, stream, payload",
            (BATCH,),
        ).fetchall()
        conn.execute("COMMIT")
        if not rows:
            break
        by_stream: dict[str, list[bytes]] = {}
        for _, stream, payload in rows:
            by_stream.setdefault(stream, []).append(orjson.dumps(orjson.loads(payload)) + b"\n")
        for stream, lines in by_stream.items():
            fd = fds.get(stream)
            if fd is None:
                path = root / "out" / f"messages_{stream}.jsonl"
                fd = fds[stream] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, b"".join(lines))
            os.fsync(fd)
        conn.execute(
            "DELETE FROM syncworker_queue WHERE id BETWEEN ? AND ?",
            (min(r[0] for r in rows), max(r[0] for r in rows)),
        )
        moved += len(rows)
    if profiler:
        profiler.main.disable()
    figures = {"records": moved, "seconds": time.perf_counter() - started, "cpu_s": cpu_s() - cpu0}
    for fd in fds.values():
        os.close(fd)
    conn.close()
    return figures


def child_main(name: str, root: Path, profile: Path | None) -> None:
    sinks = CASES[name]
    profiler = Profiler() if profile else None
    if sinks is None:
        figures = child_hand_written(root, profiler)
    else:
        figures = asyncio.run(child_syncworker(root, sinks, api=name == SW_API, profiler=profiler))
    figures["rss"] = peak_rss_mb()
    if profiler and profile:
        profiler.save(profile)
    print(json.dumps(figures))


# -- what arrived -------------------------------------------------------------------------


class Arrivals:
    """How often each message 0..count-1 was seen at a target, and what else was there."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = bytearray(count)
        self.items = 0
        self.strays = 0

    def note(self, stream: str, key: str, ts: object) -> None:
        self.items += 1
        n = ts if isinstance(ts, int) else -1
        if 0 <= n < self.count and stream == stream_of(n) and key == f"{stream}-{n}":
            self.seen[n] = min(255, self.seen[n] + 1)
        else:
            self.strays += 1

    def problems(self, where: str) -> list[str]:
        found = []
        missing = self.seen.count(0)
        repeated = sum(1 for times in self.seen if times > 1)
        if missing:
            found.append(f"{where}: {missing} of {self.count} messages missing")
        if repeated:
            found.append(f"{where}: {repeated} messages written more than once")
        if self.strays:
            found.append(f"{where}: {self.strays} lines/rows that are no message")
        return found


def jsonl_arrivals(out: Path, count: int) -> Arrivals:
    """Every line of the JSONL files; the stream is the file's (messages_{stream}[_date])."""
    arrivals = Arrivals(count)
    for path in sorted(out.glob("*.jsonl")):
        stream = path.stem.removeprefix("messages_").split("_")[0]
        with path.open("rb") as handle:
            for line in handle:
                data = orjson.loads(line)
                arrivals.note(stream, data.get("id"), data.get("ts"))
    return arrivals


def sqlite_arrivals(db: Path, count: int) -> Arrivals:
    """Every row of the SQLite sink's table (default layout: key, stream, data)."""
    arrivals = Arrivals(count)
    with sqlite3.connect(db) as conn:
        for key, stream, data in conn.execute("SELECT key, stream, data FROM messages"):
            record = orjson.loads(data)
            arrivals.note(stream, key if record.get("id") == key else "", record.get("ts"))
    return arrivals


def left_in_queue(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM syncworker_queue").fetchone()
    return int(row[0])


# -- one run ------------------------------------------------------------------------------


def spawn_child(name: str, root: Path, profile: Path | None = None) -> dict[str, Any]:
    args = ["--child", name, "--root", str(root)]
    if profile:
        args += ["--profile-to", str(profile)]
    return run_child(__file__, name, args, CHILD_TIMEOUT_S)


def run_case(name: str, count: int, template: Path) -> dict[str, Any]:
    """One run of one case on a fresh copy of the filled queue, and what arrived."""
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        root = Path(tmp)
        shutil.copy(template, root / "queue.db")
        figures = spawn_child(name, root)
        problems = jsonl_arrivals(root / "out", count).problems("jsonl")
        if name == SW_SQLITE:
            problems += sqlite_arrivals(root / "sink.db", count).problems("sqlite")
        left = left_in_queue(root / "queue.db")
    if left:
        problems.append(f"{left} messages left in the queue")
    if figures["records"] != count:
        problems.append(f"the run counted {figures['records']} records, not {count}")
    problems += [
        f"an API request failed during the run: {f}" for f in figures.get("poller_failed", [])
    ]
    poller_cpu = figures.get("poller_cpu_s")
    return {
        "case": name,
        "backlog": count,
        "seconds": figures["seconds"],
        "records_per_s": count / figures["seconds"],
        "worker_cpu_us_per_record": figures["cpu_s"] / count * 1e6,
        "poller_cpu_us_per_record": None if poller_cpu is None else poller_cpu / count * 1e6,
        "poller_cpu_s": poller_cpu,
        "poller_requests": figures.get("poller_requests"),
        "peak_rss_mb": figures["rss"],
        "runtime_records": figures["records"],
        "left_in_queue": left,
        "problems": problems,
    }


# -- summary ------------------------------------------------------------------------------

MEDIAN_KEYS = (
    "records_per_s",
    "seconds",
    "worker_cpu_us_per_record",
    "poller_cpu_us_per_record",
    "peak_rss_mb",
)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backlog and case: medians with min-max over the runs; problems of every run kept,
    so nothing missing hides behind a median."""
    summary = []
    for count, name in dict.fromkeys((r["backlog"], r["case"]) for r in runs):
        mine = [r for r in runs if r["case"] == name and r["backlog"] == count]
        row: dict[str, Any] = {"case": name, "backlog": count, "runs": len(mine)}
        row["problems"] = [p for r in mine for p in r["problems"]]
        row["complete_runs"] = sum(not r["problems"] for r in mine)
        add_medians(row, mine, MEDIAN_KEYS)
        row["all_runs"] = mine
        summary.append(row)
    return summary


def api_pairs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The n-th run without the API beside the n-th with it, per backlog (interleaved, so
    each pair ran back to back)."""
    pairs = []
    for count in dict.fromkeys(r["backlog"] for r in runs):
        off = [r for r in runs if r["backlog"] == count and r["case"] == SW]
        on = [r for r in runs if r["backlog"] == count and r["case"] == SW_API]
        for repeat, (a, b) in enumerate(zip(off, on, strict=False), 1):
            pairs.append(
                {
                    "backlog": count,
                    "repeat": repeat,
                    "records_per_s_off": a["records_per_s"],
                    "records_per_s_on": b["records_per_s"],
                    "throughput_cost": 1 - b["records_per_s"] / a["records_per_s"],
                    "worker_cpu_us_off": a["worker_cpu_us_per_record"],
                    "worker_cpu_us_on": b["worker_cpu_us_per_record"],
                    "poller_cpu_ms": None if b["poller_cpu_s"] is None else b["poller_cpu_s"] * 1e3,
                    "poller_cpu_us": b["poller_cpu_us_per_record"],
                    "poller_requests": b["poller_requests"],
                    "seconds_on": b["seconds"],
                }
            )
    return pairs


def print_summary(summary: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> None:
    hand = {r["backlog"]: r for r in summary if r["case"] == HAND}
    print(
        "| case | backlog | runs | records/s (min-max) | s (min-max) | of hand-written "
        "| worker CPU us/rec (min-max) | poller CPU us/rec | peak RSS MB (min-max) "
        "| complete runs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        base = hand.get(r["backlog"])
        share = f"{r['records_per_s'] / base['records_per_s']:.2f}x" if base else "-"
        print(
            f"| {r['case']} | {r['backlog']:,} | {r['runs']} "
            f"| {median_range(r, 'records_per_s', ',.0f')} "
            f"| {median_range(r, 'seconds', '.2f')} | {share} "
            f"| {median_range(r, 'worker_cpu_us_per_record', '.2f')} "
            f"| {number(r['poller_cpu_us_per_record'], '.3f', NA) if r['case'] == SW_API else '-'} "
            f"| {median_range(r, 'peak_rss_mb', '.1f')} | {r['complete_runs']} of {r['runs']} |"
        )
    if not pairs:
        return
    print()
    print(
        "| backlog | pair | records/s without API | with API | throughput cost "
        "| worker CPU us/rec without | with | poller CPU ms (us/rec) | poller requests |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in pairs:
        print(
            f"| {p['backlog']:,} | {p['repeat']} | {p['records_per_s_off']:,.0f} "
            f"| {p['records_per_s_on']:,.0f} | {p['throughput_cost']:+.1%} "
            f"| {p['worker_cpu_us_off']:.2f} | {p['worker_cpu_us_on']:.2f} "
            f"| {number(p['poller_cpu_ms'], '.0f', NA)} ({number(p['poller_cpu_us'], '.3f', NA)}) "
            f"| {p['poller_requests']} in {p['seconds_on']:.1f} s |"
        )


def targets(summary: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checked targets of issue 14 (items 8 and 9), at every backlog measured."""
    by = {(r["backlog"], r["case"]): r for r in summary}
    found = []
    for count in dict.fromkeys(r["backlog"] for r in summary):
        sw, hand = by.get((count, SW)), by.get((count, HAND))
        name = f"{SW} >= {TARGET_OF_HAND:g}x {HAND} (median records/s, backlog {count:,})"
        if sw and hand:
            ratio = sw["records_per_s"] / hand["records_per_s"]
            detail = f"{ratio:.2f}x ({sw['records_per_s']:,.0f} vs {hand['records_per_s']:,.0f})"
            found.append(
                {"target": name, "value": ratio, "detail": detail, "met": ratio >= TARGET_OF_HAND}
            )
        else:
            found.append({"target": name, "value": None, "detail": "not run", "met": False})
        mine = [p["throughput_cost"] for p in pairs if p["backlog"] == count]
        name = (
            f"control API cost < {TARGET_API_COST:.0%} of throughput "
            f"(median of the interleaved pairs, backlog {count:,})"
        )
        if mine:
            cost = statistics.median(mine)
            detail = f"{cost:+.1%} (pairs: {', '.join(f'{c:+.1%}' for c in mine)})"
            found.append(
                {"target": name, "value": cost, "detail": detail, "met": cost < TARGET_API_COST}
            )
        else:
            found.append({"target": name, "value": None, "detail": "not run", "met": False})
    problems = [f"{r['case']} at {r['backlog']:,}: {p}" for r in summary for p in r["problems"]]
    found.append(
        {
            "target": "every message arrived exactly once, nothing left in the queue",
            "value": len(problems),
            "detail": "; ".join(problems) or "yes",
            "met": not problems,
        }
    )
    return found


# -- the profile --------------------------------------------------------------------------


# What a thread does while it has nothing to do: not work, left out of its busy time.
IDLE = (
    "<method 'get' of '_queue.SimpleQueue' objects>",
    "<method 'poll' of 'select.epoll' objects>",
)


def profile_text(path: Path, limit: int = 15) -> str:
    """Per thread: time profiled, time idle, the top functions by own time and the top
    syncworker functions by cumulative time."""
    out = io.StringIO()
    for thread in sorted(path.parent.glob(f"{path.name}.*")):
        stats = pstats.Stats(str(thread), stream=out)
        own = stats.stats  # type: ignore[attr-defined]
        total = sum(entry[2] for entry in own.values())
        idle = sum(entry[2] for func, entry in own.items() if func[2] in IDLE)
        out.write(
            f"--- thread {thread.suffix[1:]}: {total:.3f} s profiled, {idle:.3f} s of it idle "
            f"(waiting for work), {total - idle:.3f} s busy\n"
        )
        stats.sort_stats("tottime").print_stats(limit)
        stats.sort_stats("cumulative").print_stats("syncworker|pipeline_embedded", limit)
    return out.getvalue()


def run_profile(count: int, directory: Path, names: list[str]) -> None:
    """One run of each case under cProfile (default: syncworker jsonl and the hand-written
    worker)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        template = Path(tmp) / "queue.db"
        fill_queue(template, count)
        for name in names:
            path = directory / (re.sub(r"[^\w-]+", "_", name) + ".prof")
            with tempfile.TemporaryDirectory(prefix="bench-embedded-") as run_dir:
                root = Path(run_dir)
                shutil.copy(template, root / "queue.db")
                figures = spawn_child(name, root, profile=path)
                problems = jsonl_arrivals(root / "out", count).problems("jsonl")
            if problems:
                raise SystemExit(f"{name} under the profiler: {'; '.join(problems)}")
            print(
                f"== {name}: {count:,} records in {figures['seconds']:.2f} s under cProfile, "
                f"CPU {figures['cpu_s']:.2f} s; stats in {path}"
            )
            print(profile_text(path))


# -- main ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for count in args.messages:
        with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
            template = Path(tmp) / "queue.db"
            with bench_lock(args.lock):
                fill_queue(template, count)
            for repeat in range(args.repeat):
                for name in args.case or list(CASES):  # interleaved
                    with bench_lock(args.lock):
                        run = run_case(name, count, template)
                    runs.append(run)
                    print(
                        f"run {repeat + 1}/{args.repeat} {name} at {count:,}: "
                        f"{run['records_per_s']:,.0f} records/s"
                        + "".join(f"; {p}" for p in run["problems"]),
                        flush=True,
                    )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians kept)")
    parser.add_argument("--case", action="append", choices=list(CASES), help="default: all")
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", type=Path, help="profile one run of each into this dir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.root, args.profile_to)
        return 0
    if args.profile:
        with bench_lock(args.lock):
            run_profile(args.messages[0], args.profile, args.case or [SW, HAND])
        return 0
    runs = measure(args)
    summary, pairs = summarize(runs), api_pairs(runs)
    print_summary(summary, pairs)
    print(f"(batches of {BATCH:,}, two in flight; medians with min-max in brackets)")
    found = targets(summary, pairs)
    for target in found:
        print(f"  {'held' if target['met'] else 'MISSED'}: {target['target']}: {target['detail']}")
    if args.json:
        result = {"cases": summary, "api_pairs": pairs, "targets": found}
        result["problems"] = [p for r in summary for p in r["problems"]]
        args.json.write_text(json.dumps(result, indent=2))
    incomplete = any(r["problems"] for r in summary)
    return 1 if incomplete or (args.check and not all(t["met"] for t in found)) else 0


if __name__ == "__main__":
    sys.exit(main())
