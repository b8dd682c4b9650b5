"""Embedded pipeline throughput: sqlite_queue -> jsonl (+ sqlite), records/s and peak RSS.

Each case runs in a fresh child process so its peak RSS is its own. The queue is filled
before the child starts (not timed); the child runs one sync (``Engine.run_once``) that drains
the whole backlog and reports records/s and peak RSS. Backlogs of 100k and 1M show whether
memory stays flat as the backlog grows (it must: memory is bounded by batch size x in-flight).

Beside syncworker, in the same run: a hand-written worker in the seeds' style (claim a batch
with one UPDATE ... RETURNING, append it to a JSONL file, fsync, delete the rows): the floor
of what this machine can do with the same SQLite and file work and none of the guarantees.

    python bench/pipeline_embedded.py                # 100k and 1M, every case
    python bench/pipeline_embedded.py --messages 20000 --repeat 1  # the smoke run in the suite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

BATCH = 5_000
CASES = {
    "syncworker jsonl": ["jsonl"],
    "syncworker jsonl + api": ["jsonl"],
    "syncworker jsonl+sqlite": ["jsonl", "sqlite"],
    "hand-written jsonl": None,
}
# What a dashboard and a Prometheus scraper do to a running engine, from another process:
# /status, /dead-letters and /errors every second (the dashboard) and /metrics (the scraper).
POLLER = """
import sys, time, httpx
url, token = sys.argv[1], sys.argv[2]
with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
    while True:
        for path in ("/status", "/dead-letters", "/errors", "/metrics"):
            client.get(path).raise_for_status()
        time.sleep(1)
"""


def fill_queue(path: Path, count: int) -> None:
    from syncworker.connectors.sqlite.queue import SqliteQueue

    chunk = 100_000
    with SqliteQueue(path) as queue:
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            for stream in ("in", "out"):
                queue.enqueue(
                    (
                        orjson.dumps(
                            {
                                "id": f"{stream}-{n}",
                                "from": "+447000000000",
                                "text": "see you at nine, the order shipped",
                                "ts": n,
                            }
                        )
                        for n in range(start, stop, 2)
                    ),
                    stream=stream,
                )


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


async def child_syncworker(root: Path, sinks: list[str], *, api: bool) -> dict[str, float]:
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
    cpu_started = cpu_s()
    started = time.perf_counter()
    try:
        [run] = await engine.run_once()
    finally:
        elapsed_s = time.perf_counter() - started
        cpu_used_s = cpu_s() - cpu_started
        if poller is not None:
            poller.kill()
            poller.wait()
            for service in engine.services:
                await service.stop()
    assert run.status == "success", run
    return {"records": run.processed, "seconds": elapsed_s, "cpu_s": cpu_used_s}


async def _start_api(engine: Any) -> subprocess.Popen[bytes]:
    """The API on a free port, and a poller process hitting it like a dashboard would."""
    from syncworker.api.server import ApiServer

    server = ApiServer(engine, host="127.0.0.1", port=0, token="bench")
    await server.start()
    engine.services.append(server)  # stopped with the engine
    # Popen only starts the process (it does not wait), so the loop is not blocked.
    poller = subprocess.Popen([sys.executable, "-c", POLLER, server.url, "bench"])  # noqa: ASYNC220
    await asyncio.sleep(1.5)  # the poller is up and has polled once before the clock starts
    if poller.poll() is not None:
        raise SystemExit("the API poller died")
    return poller


def child_hand_written(root: Path) -> dict[str, float]:
    """The seeds' loop, done as fast as plain Python can: no retries, no dead letters."""
    import sqlite3

    conn = sqlite3.connect(root / "queue.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    (root / "out").mkdir(exist_ok=True)
    fds: dict[str, int] = {}
    moved = 0
    cpu_started = cpu_s()
    started = time.perf_counter()
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
    return {
        "records": moved,
        "seconds": time.perf_counter() - started,
        "cpu_s": cpu_s() - cpu_started,
    }


def run_child(name: str, count: int, template: Path) -> dict[str, float]:
    """One run of one case, in a fresh process on a fresh copy of the filled queue."""
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        root = Path(tmp)
        shutil.copy(template, root / "queue.db")
        result = subprocess.run(
            [sys.executable, __file__, "--child", name, "--root", str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
        figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["records"] == count, (name, figures)
    return figures


def run_cases(names: list[str], count: int, template: Path, repeat: int) -> list[dict[str, object]]:
    """Every case ``repeat`` times, interleaved (a, b, c, a, b, c, ...) so drift of the
    machine's speed during the run falls on every case alike; the median run is kept."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(repeat):
        for name in names:
            runs[name].append(run_child(name, count, template))
    results: list[dict[str, object]] = []
    for name, figures in runs.items():
        figures.sort(key=lambda f: f["seconds"])
        median = figures[len(figures) // 2]
        results.append(
            {
                "case": name,
                "backlog": count,
                "records_per_s": count / median["seconds"],
                "seconds": median["seconds"],
                "peak_rss_mb": max(f["rss"] for f in figures),
                # Whole-process CPU per record (set-up included): steadier than wall time on a
                # shared VM, and what an always-on API or dashboard really costs.
                "cpu_us_per_record": sorted(f["cpu_s"] for f in figures)[len(figures) // 2]
                / count
                * 1e6,
                "runs": len(figures),
            }
        )
    return results


def child_main(name: str, root: Path) -> None:
    sinks = CASES[name]
    if sinks is None:
        figures = child_hand_written(root)
    else:
        figures = asyncio.run(child_syncworker(root, sinks, api=name.endswith("+ api")))
    figures["rss"] = peak_rss_mb()
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="syncworker jsonl case only")
    parser.add_argument(
        "--case", action="append", choices=list(CASES), help="run only this case (repeatable)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median kept)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child")
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.root)
        return
    names = args.case or (["syncworker jsonl"] if args.quick else list(CASES))
    results = []
    for count in args.messages:
        with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
            template = Path(tmp) / "queue.db"
            fill_queue(template, count)
            results.extend(run_cases(names, count, template, args.repeat))
    print(
        f"{'case':<26} {'backlog':>10} {'records/s':>12} {'seconds':>9} {'peak RSS MB':>12} "
        f"{'CPU us/rec':>11}"
    )
    for r in results:
        print(
            f"{r['case']:<26} {r['backlog']:>10,} {r['records_per_s']:>12,.0f} "
            f"{r['seconds']:>9.2f} {r['peak_rss_mb']:>12.1f} {r['cpu_us_per_record']:>11.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
