"""The job queue (issue 12): syncworker on Redis, PostgreSQL and SQLite beside the peers a
job-queue user would pick instead (bull, bullmq, graphile-worker, pgqueuer, taskiq with two
processes), all measured in the same run by the same harness.

Every case is one run of a script under the peers' harness (``peerlib.py`` in ``--peers-dir``,
built from ../shared/bench-peers by its README): ``bench/jobs_peer.py`` for syncworker, the
peer's own ``*_bench.{py,mjs}`` for the others. The method is the harness's, the same for all:
``--jobs`` (20,000) no-op jobs that each append one 24-byte record (start, end, tag) to a
file; bulk enqueue rate with no worker running; processing throughput from the first job's
start to the last one's end; then ``--latency-samples`` (50) idle enqueue-to-done latencies,
p50 reported; every job must have run exactly once (the harness counts the records), and for
syncworker the queue itself must also count every job finished (PEERS_BROKER_CHECK). A run
with any error is incorrect and left out of the figures.

Interleaved: repetition 1 of every case, then 2, ... (the order rotates by one each time), so
the machine's drift falls on all cases alike; each figure is the median (min-max) of the
correct runs. The load average is recorded beside every run (a shared machine).

Then the backlog memory case per ``--rss-backend`` (redis, postgres): ``--rss-jobs``
(1,000,000) no-op jobs enqueued in bulk, one worker started and its RSS sampled every 20 ms
for ``--rss-seconds`` while it works; peak reported.

Services: a private ``redis-server`` this bench starts on ``--redis-port`` (17611) and stops
(or ``--redis-url``, never the shared 6379: the harness FLUSHALLs it), and a PostgreSQL
database it creates (``--db-prefix``_<random>) through ``--pg-admin-dsn`` and drops at the end
(the harness drops every schema of it between runs).

Targets (issue 12), ratios to the best peer in the same run: processing >= 1.0x bull and
bullmq on Redis, >= 1.0x graphile-worker on PostgreSQL; bulk enqueue >= 80,000 jobs/s on
Redis and PostgreSQL; idle latency p50 <= 1 ms on Redis, <= 2 ms on PostgreSQL; SQLite >=
5,000 jobs/s; peak worker RSS under the backlog <= 150 MB. ``--check`` exits 1 when one is
missed or cannot be evaluated (a peer's harness missing included), or a run is incorrect.

    python bench/jobs.py --repeat 3 --check --json out.json
    python bench/jobs.py --case syncworker-redis --jobs 500 --repeat 1   # no peers needed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from table_sync import bench_lock  # noqa: E402

SW_CASES = ("syncworker-redis", "syncworker-postgres", "syncworker-sqlite")
# case -> (broker, peer script, extra env, npm package or None for a Python peer)
PEERS: dict[str, tuple[str, str, dict[str, str], str | None]] = {
    "bull": ("redis", "bull_bench.mjs", {}, "bull"),
    "bullmq": ("redis", "bullmq_bench.mjs", {}, "bullmq"),
    "taskiq-2proc": ("redis", "taskiq_bench.py", {"PEERS_PROCS": "2"}, None),
    "graphile-worker": ("postgres", "graphile_worker_bench.mjs", {}, "graphile-worker"),
    "pgqueuer": ("postgres", "pgqueuer_bench.py", {}, None),
}
ALL_CASES = (*SW_CASES, *PEERS)
BROKER = {**{c: c.split("-", 1)[1] for c in SW_CASES}, **{c: p[0] for c, p in PEERS.items()}}
TARGET_PEERS = {"redis": ("bull", "bullmq"), "postgres": ("graphile-worker",)}
ENQUEUE_MIN = 80_000
LATENCY_MAX_MS = {"redis": 1.0, "postgres": 2.0}
SQLITE_MIN = 5_000
RSS_MAX_MB = 150.0
RUN_TIMEOUT_S = 600


# -- services ----------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of the bench's own (no persistence), stopped at the end."""

    def __init__(self, port: int, workdir: Path) -> None:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.url = f"redis://127.0.0.1:{port}/0"
        args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"--redis-port {port}: redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def database_dsn(admin: str, name: str) -> str:
    parts = urlsplit(admin)
    return urlunsplit(parts._replace(path=f"/{name}"))


def pg_admin(admin: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(statement)


# -- one run -----------------------------------------------------------------------------------


class Settings(argparse.Namespace):
    peers_dir: Path
    npm_peers: Path
    jobs: int
    latency_samples: int
    concurrency: int
    redis_url: str
    pg_dsn: str
    work: Path
    results: Path


def missing(case: str, s: Settings) -> str | None:
    """Why ``case`` cannot run here, or None."""
    if case in SW_CASES:
        return None
    _broker, script, _env, package = PEERS[case]
    if not (s.peers_dir / "peerlib.py").exists():
        return f"the peers' harness is missing ({s.peers_dir / 'peerlib.py'}: see its README)"
    if not (s.peers_dir / script).exists():
        return f"its harness script {s.peers_dir / script} is missing"
    if package is None:
        if not (s.peers_dir / ".scratch" / "venv" / "bin" / "python").exists():
            return f"the peers' venv is missing (run {s.peers_dir / 'setup_venv.sh'})"
    else:
        if shutil.which("node") is None:
            return "node is not on PATH"
        if not (s.npm_peers / "node_modules" / package).exists():
            return f"npm package {package} missing in {s.npm_peers} (run setup_npm.sh)"
    return None


def command(case: str, s: Settings) -> tuple[list[str], dict[str, str], Path]:
    env = {
        **os.environ,
        "PEERS_REDIS_URL": s.redis_url,
        "PEERS_PG_DSN": s.pg_dsn,
        "PEERS_RESULTS": str(s.results),
        "PEERS_N": str(s.jobs),
        "PEERS_LAT_N": str(s.latency_samples),
        "NPM_PEERS": str(s.npm_peers),
        "PYTHONUNBUFFERED": "1",
    }
    if case in SW_CASES:
        has_harness = (s.peers_dir / "peerlib.py").exists()
        cwd = s.peers_dir if has_harness else s.work
        if has_harness:
            env["PYTHONPATH"] = str(s.peers_dir)
        else:
            env.pop("PYTHONPATH", None)
        env.update(
            SW_BACKEND=BROKER[case],
            SW_CONCURRENCY=str(s.concurrency),
            SW_SQLITE_PATH=str(s.work / "jobs.db"),
            PEERS_BROKER_CHECK="1",
        )
        return [sys.executable, str(HERE / "jobs_peer.py")], env, cwd
    _broker, script, extra, package = PEERS[case]
    env.update(extra)
    if package is None:
        return [str(s.peers_dir / ".scratch" / "venv" / "bin" / "python"), script], env, s.peers_dir
    return ["node", script], env, s.peers_dir


def run_case(case: str, rep: int, s: Settings) -> dict[str, Any]:
    argv, env, cwd = command(case, s)
    env["PEERS_REPEAT"] = str(rep)
    out = s.results / f"{case}.r{rep}.json"
    out.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
        tail, rc = (done.stdout + done.stderr)[-1500:], done.returncode
    except subprocess.TimeoutExpired as exc:
        tail, rc = f"timed out after {RUN_TIMEOUT_S} s: {exc.stdout!r}"[-1500:], None
    run: dict[str, Any] = {"case": case, "rep": rep, "load_1m": load, "rc": rc}
    run["wall_s"] = time.monotonic() - started
    if not out.exists():
        run.update(correct=False, problem=f"no result written (exit {rc}): {tail}")
        return run
    res = json.loads(out.read_text())
    lat = res.get("latency_ms") or {}
    run.update(
        process_jobs_per_s=res.get("process_jobs_per_s"),
        enqueue_jobs_per_s=res.get("enqueue_jobs_per_s"),
        latency_p50_ms=lat.get("p50"),
        latency_p90_ms=lat.get("p90"),
        duplicates=res.get("process_duplicates"),
        records_total=res.get("records_total"),
        distinct_tags=res.get("distinct_tags"),
        broker_pending_at_first_check=res.get("broker_pending_at_first_check"),
        versions=res.get("versions"),
        errors=res.get("errors", []),
    )
    expected = s.jobs + s.latency_samples + 3
    exact = run["records_total"] == expected and run["distinct_tags"] == expected
    problems = list(run["errors"])
    if not exact and not problems:
        problems.append(f"{run['records_total']} records of {run['distinct_tags']} tags")
    if rc != 0 and not problems:
        problems.append(f"exit {rc}: {tail}")
    run["correct"] = not problems
    run["problem"] = "; ".join(str(p) for p in problems)[:1500] or None
    return run


def run_rss(backend: str, s: Settings, jobs: int, seconds: float) -> dict[str, Any]:
    argv, env, cwd = command(f"syncworker-{backend}", s)
    env.update(SW_RSS_JOBS=str(jobs), SW_RSS_SECONDS=str(seconds))
    load = os.getloadavg()[0]
    done = subprocess.run(
        [*argv, "rss"], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    for line in done.stdout.splitlines():
        if line.startswith("RSS "):
            res: dict[str, Any] = json.loads(line[4:])
            res["load_1m"] = load
            res["correct"] = not res["errors"]
            return res
    tail = (done.stdout + done.stderr)[-1500:]
    return {"case": f"syncworker-{backend}", "backlog": jobs, "correct": False, "errors": [tail]}


# -- summary -----------------------------------------------------------------------------------

METRICS = ("process_jobs_per_s", "enqueue_jobs_per_s", "latency_p50_ms")


def summarize(cases: list[str], runs: list[dict[str, Any]], absent: dict[str, str]) -> list:
    rows = []
    for case in cases:
        if case in absent:
            rows.append({"case": case, "status": f"not run: {absent[case]}", "runs": 0})
            continue
        mine = [r for r in runs if r["case"] == case]
        good = [r for r in mine if r["correct"]]
        row: dict[str, Any] = {"case": case, "broker": BROKER[case], "status": "ran"}
        row.update(runs=len(mine), correct=len(good))
        for metric in METRICS:
            values = [r[metric] for r in good if r.get(metric) is not None]
            row[metric] = statistics.median(values) if values else None
            row[f"{metric}_min"] = min(values) if values else None
            row[f"{metric}_max"] = max(values) if values else None
        row["load_1m"] = [round(r["load_1m"], 2) for r in mine]
        row["problems"] = [f"rep {r['rep']}: {r['problem']}" for r in mine if r.get("problem")]
        row["versions"] = next((r.get("versions") for r in good if r.get("versions")), None)
        rows.append(row)
    return rows


def paired_ratios(runs: list[dict[str, Any]], mine: str, theirs: str) -> list[float]:
    """syncworker's processing over the peer's, per repetition (runs minutes apart, so the
    machine's drift is shared), where both runs were correct."""
    by = {(r["case"], r["rep"]): r for r in runs if r["correct"]}
    reps = sorted({rep for case, rep in by if case == mine})
    return [
        by[mine, rep]["process_jobs_per_s"] / by[theirs, rep]["process_jobs_per_s"]
        for rep in reps
        if (theirs, rep) in by
    ]


def evaluate(
    rows: list[dict[str, Any]], rss: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> list:
    by = {r["case"]: r for r in rows}
    out: list[tuple[str, bool | None, str]] = []

    def figure(case: str, metric: str) -> float | None:
        row = by.get(case)
        return row.get(metric) if row and row["status"] == "ran" else None

    for broker, peers in TARGET_PEERS.items():
        sw = f"syncworker-{broker}"
        if sw not in by:
            continue
        mine = figure(sw, "process_jobs_per_s")
        for peer in peers:
            name = f"{broker} processing >= 1.0x {peer}"
            theirs = figure(peer, "process_jobs_per_s")
            if peer not in by or theirs is None or mine is None:
                why = by[peer]["status"] if peer in by else "not selected (--case)"
                out.append((name, None, "syncworker did not run" if mine is None else why))
            else:
                detail = f"{mine / theirs:.2f}x ({mine:,.0f}/{theirs:,.0f})"
                paired = paired_ratios(runs, sw, peer)
                if paired:
                    detail += f"; per repetition {' '.join(f'{x:.2f}x' for x in paired)}"
                out.append((name, mine >= theirs, detail))
        enq = figure(sw, "enqueue_jobs_per_s")
        name = f"{broker} bulk enqueue >= {ENQUEUE_MIN:,}/s"
        out.append(
            (name, None, "did not run")
            if enq is None
            else (name, enq >= ENQUEUE_MIN, f"{enq:,.0f}/s")
        )
        p50 = figure(sw, "latency_p50_ms")
        limit = LATENCY_MAX_MS[broker]
        name = f"{broker} idle latency p50 <= {limit:g} ms"
        out.append(
            (name, None, "did not run") if p50 is None else (name, p50 <= limit, f"{p50:.2f} ms")
        )
    if "syncworker-sqlite" in by:
        rate = figure("syncworker-sqlite", "process_jobs_per_s")
        name = f"sqlite processing >= {SQLITE_MIN:,}/s"
        out.append(
            (name, None, "did not run")
            if rate is None
            else (name, rate >= SQLITE_MIN, f"{rate:,.0f}/s")
        )
    for r in rss:
        name = f"{r['case']} peak RSS under a {r['backlog']:,}-job backlog <= {RSS_MAX_MB:g} MB"
        if not r["correct"] or r.get("peak_rss_mb") is None:
            out.append((name, None, f"failed: {str(r['errors'])[:300]}"))
        else:
            detail = (
                f"{r['peak_rss_mb']:.1f} MB ({r['jobs_done']:,} jobs done in {r['seconds']:.1f} s)"
            )
            out.append((name, r["peak_rss_mb"] <= RSS_MAX_MB, detail))
    for row in rows:
        if row["status"] != "ran":
            out.append((f"{row['case']} ran", None, row["status"]))
        else:
            ok = row["correct"] == row["runs"] > 0
            out.append((f"{row['case']} exactly once", ok, f"{row['correct']}/{row['runs']} runs"))
    return out


def cell(row: dict[str, Any], metric: str, fmt: str) -> str:
    if row.get(metric) is None:
        return "-"
    lo, hi = row[f"{metric}_min"], row[f"{metric}_max"]
    return f"{row[metric]:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"


def print_summary(rows: list, rss: list, verdicts: list, a: Any) -> None:
    print(f"jobs: {a.jobs:,} no-op jobs, {a.latency_samples} latency samples, {a.repeat} rep(s)")
    print(
        "| case | broker | correct runs | process jobs/s | bulk enqueue jobs/s | idle p50 ms "
        "| load 1m |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        if r["status"] != "ran":
            print(f"| {r['case']} | {BROKER[r['case']]} | 0 | {r['status']} | | | |")
            continue
        print(
            f"| {r['case']} | {r['broker']} | {r['correct']}/{r['runs']} | "
            f"{cell(r, 'process_jobs_per_s', ',.0f')} | {cell(r, 'enqueue_jobs_per_s', ',.0f')} | "
            f"{cell(r, 'latency_p50_ms', '.2f')} | {' '.join(map(str, r['load_1m']))} |"
        )
    for r in rss:
        peak = f"{r['peak_rss_mb']:.1f} MB" if r.get("peak_rss_mb") is not None else "failed"
        print(f"  RSS {r['case']} backlog {r['backlog']:,}: {peak} {r.get('errors') or ''}")
    for r in rows:
        for problem in r.get("problems", []):
            print(f"  !! {r['case']}: {problem[:600]}")
    print("targets (syncworker):")
    for target, met, detail in verdicts:
        verdict = "cannot tell" if met is None else ("met" if met else "NOT met")
        print(f"  {target}: {verdict} ({detail})")


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=ALL_CASES, help="default: all")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every case")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per run (PEERS_N)")
    parser.add_argument("--latency-samples", type=int, default=50, help="PEERS_LAT_N")
    parser.add_argument("--concurrency", type=int, default=50, help="syncworker's, per worker")
    parser.add_argument("--peers-dir", type=Path, default=Path("/tmp/bench-peers"))
    parser.add_argument(
        "--npm-peers", type=Path, default=Path(os.environ.get("NPM_PEERS", "/tmp/npmpeers"))
    )
    parser.add_argument("--redis-port", type=int, default=17611, help="the private redis-server")
    parser.add_argument("--redis-url", default=None, help="an own Redis instead (FLUSHALLed)")
    parser.add_argument(
        "--pg-admin-dsn", default="postgresql://root@/postgres?host=/var/run/postgresql"
    )
    parser.add_argument("--db-prefix", default="sw_bench_jobs", help="the database made here")
    parser.add_argument("--rss-backend", action="append", choices=("redis", "postgres", "sqlite"))
    parser.add_argument("--rss-jobs", type=int, default=1_000_000, help="0: no backlog case")
    parser.add_argument("--rss-seconds", type=float, default=10.0)
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    a = parser.parse_args()
    cases = list(dict.fromkeys(a.case or ALL_CASES))
    if a.redis_url and urlsplit(a.redis_url).port in (None, 6379) and "unix" not in a.redis_url:
        raise SystemExit("--redis-url: expected a Redis of the bench's own, not port 6379")
    with tempfile.TemporaryDirectory(prefix="sw-bench-jobs-") as tmp:
        s = Settings()
        s.peers_dir, s.npm_peers = a.peers_dir.resolve(), a.npm_peers
        s.jobs, s.latency_samples, s.concurrency = a.jobs, a.latency_samples, a.concurrency
        s.work = Path(tmp)
        s.results = s.work / "results"
        s.results.mkdir()
        absent = {c: why for c in cases if (why := missing(c, s))}
        for case, why in absent.items():
            print(f"  {case}: NOT RUN: {why}", flush=True)
        present = [c for c in cases if c not in absent]
        redis = None if a.redis_url else PrivateRedis(a.redis_port, s.work)
        s.redis_url = a.redis_url or (redis.url if redis else "")
        db = f"{a.db_prefix}_{uuid.uuid4().hex[:8]}"
        pg_admin(a.pg_admin_dsn, f'CREATE DATABASE "{db}"')
        s.pg_dsn = database_dsn(a.pg_admin_dsn, db)
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        uptime_before = _uptime()
        runs: list[dict[str, Any]] = []
        rss: list[dict[str, Any]] = []
        try:
            for rep in range(1, a.repeat + 1):
                k = (rep - 1) % max(1, len(present))
                for case in present[k:] + present[:k]:
                    with bench_lock(a.lock):
                        run = run_case(case, rep, s)
                    runs.append(run)
                    figures = ", ".join(
                        f"{m} {run[m]:,.2f}" for m in METRICS if run.get(m) is not None
                    )
                    verdict = "ok" if run["correct"] else f"PROBLEM {run['problem'][:400]}"
                    print(
                        f"rep {rep} {case}: {figures} load {run['load_1m']:.2f} {verdict}",
                        flush=True,
                    )
            sw_backends = [BROKER[c] for c in present if c in SW_CASES]
            backends = a.rss_backend or [b for b in ("redis", "postgres") if b in sw_backends]
            for backend in backends if a.rss_jobs > 0 else []:
                with bench_lock(a.lock):
                    rss.append(run_rss(backend, s, a.rss_jobs, a.rss_seconds))
                r = rss[-1]
                print(
                    f"rss {backend}: {r.get('peak_rss_mb')} MB, {r.get('jobs_done')} done",
                    r["errors"] or "",
                    flush=True,
                )
        finally:
            if redis is not None:
                redis.stop()
            pg_admin(a.pg_admin_dsn, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        uptime_after = _uptime()
    rows = summarize(cases, runs, absent)
    verdicts = evaluate(rows, rss, runs)
    print(f"started {started}; uptime before: {uptime_before}; after: {uptime_after}")
    print_summary(rows, rss, verdicts, a)
    if a.json:
        body = {
            "started": started,
            "uptime_before": uptime_before,
            "uptime_after": uptime_after,
            "settings": {k: str(v) for k, v in vars(a).items()},
            "cases": rows,
            "rss": rss,
            "runs": runs,
            "targets": verdicts,
        }
        a.json.write_text(json.dumps(body, indent=2, default=str))
    failed = any(met is not True for _, met, _ in verdicts)
    return 1 if a.check and failed else 0


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
