"""syncworker's job queue under the peers' own harness (``peerlib.py`` of ../shared/bench-peers).

The same method as every peer, by the same code: 20,000 no-op jobs that each append one
24-byte record (start, end, tag) to a file, bulk enqueue with no worker running, processing
throughput from the record file, then 50 idle enqueue-to-done latency samples, and a check that
every job ran exactly once. ``bench/jobs.py`` runs it interleaved with the peers (issue 12).

    PYTHONPATH=<peers dir> SW_BACKEND=redis|postgres|sqlite python bench/jobs_peer.py

The worker is a separate process (``python bench/jobs_peer.py worker``), as the peers' are:
one asyncio process, concurrency SW_CONCURRENCY (default 50, the peers' setting). Brokers come
from PEERS_REDIS_URL / PEERS_PG_DSN, which the harness resets between runs: point them at
servers and databases you created for it (never the shared ones: the harness FLUSHALLs).

Beyond the peers' method, syncworker's own runs also ask the backend (PEERS_BROKER_CHECK=1,
set by bench/jobs.py): once every body ran, the queue itself must count no unfinished job.

Without peerlib on the path (the suite's smoke run has no peers' folder), a compact copy of
its method below stands in (``_Harness``): same record file, same phases, same checks.

``python bench/jobs_peer.py rss`` is the backlog memory case: SW_RSS_JOBS (1,000,000) no-op
jobs enqueued in bulk, then one worker started and its RSS sampled every 20 ms from its start
until SW_RSS_SECONDS (10) after its first job; prints one JSON line (peak RSS, VmHWM, jobs
done).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from syncworker.jobs import JobContext, Jobs, QueueSettings, TaskRegistry, Worker
from syncworker.queue.base import JobState, NewJob, QueueBackend

BACKEND = os.environ.get("SW_BACKEND", "redis")
CONCURRENCY = int(os.environ.get("SW_CONCURRENCY", "50"))
SQLITE_PATH = Path(os.environ.get("SW_SQLITE_PATH", "/tmp/sw-bench-jobs.db"))
PG_SCHEMA = "syncworker_bench"
REDIS_PREFIX = "swbench:jobs"
REC_FMT = "<ddq"
REC_SIZE = struct.calcsize(REC_FMT)


class _Harness:
    """peerlib's method, compacted (used only when peerlib is not importable)."""

    REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")
    PG_DSN = os.environ.get("PEERS_PG_DSN", "postgresql:///bench")
    N_JOBS = int(os.environ.get("PEERS_N", "20000"))
    N_LAT = int(os.environ.get("PEERS_LAT_N", "50"))
    PROCESS_TIMEOUT = float(os.environ.get("PEERS_PROCESS_TIMEOUT", "400"))
    REPEAT = int(os.environ.get("PEERS_REPEAT", "1"))
    BROKER_CHECK = os.environ.get("PEERS_BROKER_CHECK") == "1"
    _fd: int | None = None

    @classmethod
    def record(cls, t0: float, tag: int) -> None:
        if cls._fd is None:
            cls._fd = os.open(os.environ["PEERS_REC"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(cls._fd, struct.pack(REC_FMT, t0, time.time(), int(tag)))

    @classmethod
    def reset_redis(cls) -> None:
        import redis

        client = redis.Redis.from_url(cls.REDIS_URL)
        client.flushall()
        client.close()

    @classmethod
    def reset_pg(cls) -> None:
        import psycopg

        with psycopg.connect(cls.PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE')

    @classmethod
    def run_benchmark(cls, **kw: Any) -> dict[str, Any]:
        name = kw["peer"] + (f"-{kw['variant']}" if kw.get("variant") else "")
        results = Path(os.environ.get("PEERS_RESULTS", tempfile.gettempdir()))
        results.mkdir(parents=True, exist_ok=True)
        rec = results / f"{name}.r{cls.REPEAT}.rec"
        rec.unlink(missing_ok=True)
        rec.touch()
        os.environ["PEERS_REC"] = str(rec)
        res: dict[str, Any] = {"peer": name, "repeat": cls.REPEAT, "n_jobs": cls.N_JOBS}
        res.update(harness="bench/jobs_peer.py (peerlib's method)", errors=[])
        offset = 0
        seen: dict[int, int] = {}
        first, last = float("inf"), float("-inf")

        def new_records() -> list[tuple[float, float, int]]:
            nonlocal offset
            with open(rec, "rb") as f:
                f.seek(offset)
                data = f.read()
            n = len(data) // REC_SIZE
            offset += n * REC_SIZE
            return list(struct.iter_unpack(REC_FMT, data[: n * REC_SIZE]))

        log = results / f"{name}.r{cls.REPEAT}.worker.log"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            kw["reset"]()
            t0 = time.perf_counter()
            kw["enqueue_bulk"](range(1, cls.N_JOBS + 1))
            res["enqueue_s"] = time.perf_counter() - t0
            res["enqueue_jobs_per_s"] = cls.N_JOBS / res["enqueue_s"]
            w_start = time.time()
            with open(log, "w") as out:
                for cmd in kw["worker_cmds"]:
                    procs.append(subprocess.Popen(cmd, stdout=out, stderr=out, env=os.environ))
            while time.time() < w_start + cls.PROCESS_TIMEOUT and len(seen) < cls.N_JOBS:
                for ts, te, tag in new_records():
                    seen[tag] = seen.get(tag, 0) + 1
                    first, last = min(first, ts), max(last, te)
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("worker exited early: " + log.read_text()[-1500:])
                time.sleep(0.05)
            done = len(seen)
            dups = sum(v - 1 for v in seen.values())
            res.update(process_done=done, process_duplicates=dups, process_span_s=last - first)
            res["process_jobs_per_s"] = done / (last - first) if last > first else None
            res["worker_start_to_first_job_s"] = first - w_start
            if dups:
                res["errors"].append(f"{dups} duplicate execution(s) among the bulk jobs")
            if done < cls.N_JOBS:
                res["errors"].append(f"process TIMEOUT: {done}/{cls.N_JOBS} done")
                raise RuntimeError("latency phase skipped: backlog not drained")
            if kw.get("pending") is not None and cls.BROKER_CHECK:
                n0 = n = kw["pending"]()
                limit = time.time() + 30
                while n and time.time() < limit:
                    time.sleep(0.005)
                    n = kw["pending"]()
                res["broker_pending_at_first_check"] = n0
                if n:
                    res["errors"].append(f"broker still reports {n} unfinished jobs after 30 s")
            time.sleep(1.0)
            rng = random.Random(12345)
            lats: list[float] = []
            for i in range(cls.N_LAT + 3):
                time.sleep(rng.uniform(0.1, 0.3))
                tag = cls.N_JOBS + 1 + i
                t_before = time.time()
                kw["enqueue_one"](tag)
                limit, t_done = time.time() + 10, None
                while t_done is None:
                    for _ts, te, tg in new_records():
                        seen[tg] = seen.get(tg, 0) + 1
                        t_done = te if tg == tag else t_done
                    if t_done is None:
                        if time.time() > limit:
                            raise RuntimeError(f"latency sample {i} not done within 10 s")
                        time.sleep(0.0005)
                if i >= 3:
                    lats.append((t_done - t_before) * 1000)
            time.sleep(0.5)
            for _ts, _te, tg in new_records():
                seen[tg] = seen.get(tg, 0) + 1
            expected = cls.N_JOBS + cls.N_LAT + 3
            res["records_total"], res["distinct_tags"] = sum(seen.values()), len(seen)
            if res["records_total"] != expected or len(seen) != expected:
                res["errors"].append(
                    f"{res['records_total']} executions of {len(seen)} distinct jobs, "
                    f"expected {expected} (duplicate or lost executions)"
                )
            lats.sort()
            res["latency_ms"] = {
                "n": len(lats),
                "p50": statistics.median(lats),
                "p90": lats[int(0.9 * (len(lats) - 1))],
                "min": lats[0],
                "max": lats[-1],
            }
        except Exception as exc:
            res["errors"].append(f"{type(exc).__name__}: {exc}")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            try:
                kw["reset"]()
            except Exception as exc:
                res["errors"].append(f"final reset: {exc}")
            if kw.get("teardown"):
                kw["teardown"]()
            rec.unlink(missing_ok=True)
            (results / f"{name}.r{cls.REPEAT}.json").write_text(json.dumps(res, indent=2))
        return res

    @staticmethod
    def main_guard(fn: Any) -> None:
        sys.exit(1 if fn().get("errors") else 0)


try:
    import peerlib  # type: ignore[import-not-found]
except ImportError:
    peerlib = _Harness

registry = TaskRegistry()


@registry.task("noop", queue="default")
async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
    peerlib.record(time.time(), payload["tag"])


def backend() -> QueueBackend:
    if BACKEND == "redis":
        from syncworker.queue.redis import RedisQueueBackend

        return RedisQueueBackend(peerlib.REDIS_URL, prefix=REDIS_PREFIX)
    if BACKEND == "postgres":
        from syncworker.queue.postgres import PostgresQueueBackend

        return PostgresQueueBackend(_pg_url(peerlib.PG_DSN), schema=PG_SCHEMA)
    if BACKEND == "sqlite":
        from syncworker.queue.sqlite import SqliteQueueBackend

        return SqliteQueueBackend(SQLITE_PATH)
    raise SystemExit(f"SW_BACKEND must be redis, postgres or sqlite, got {BACKEND!r}")


def _pg_url(dsn: str) -> str:
    return dsn if "://" in dsn else f"postgresql:///{dsn}"


def reset() -> None:
    if BACKEND == "redis":
        peerlib.reset_redis()
    elif BACKEND == "postgres":
        peerlib.reset_pg()
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)


async def _work() -> None:
    queue = backend()
    await queue.open()
    worker = Worker(queue, registry, queues={"default": QueueSettings(concurrency=CONCURRENCY)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await worker.run(stop)
    finally:
        await queue.close()


async def _unfinished(queue: QueueBackend) -> int:
    """Jobs the backend itself does not count as finished (the broker check)."""
    counts = await queue.counts()
    unfinished = (JobState.QUEUED, JobState.ACTIVE, JobState.DELAYED)
    return sum(n for states in counts.values() for s, n in states.items() if s in unfinished)


def main() -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    queue = backend()
    jobs = Jobs(queue, registry)

    async def bulk(tags: range) -> None:
        await queue.open()
        await jobs.enqueue_many([NewJob("noop", {"tag": t}) for t in tags])

    def one(tag: int) -> None:
        loop.run_until_complete(jobs.enqueue("noop", {"tag": tag}))

    def teardown() -> None:
        loop.run_until_complete(queue.close())

    def reset_and_open() -> None:
        loop.run_until_complete(queue.close())
        reset()

    return peerlib.run_benchmark(  # type: ignore[no-any-return]
        peer="syncworker",
        variant=BACKEND,
        dists=["syncworker", "redis", "hiredis", "psycopg"],
        broker={
            "redis": "Redis 7.0 (Lua scripts)",
            "postgres": "PostgreSQL 15",
            "sqlite": "SQLite",
        }[BACKEND],
        notes=f"Jobs.enqueue_many() of all jobs in one call; one worker process, "
        f"Worker(concurrency={CONCURRENCY}), defaults otherwise (completed jobs kept)",
        reset=reset_and_open,
        enqueue_bulk=lambda tags: loop.run_until_complete(bulk(tags)),
        enqueue_one=one,
        worker_cmds=[[sys.executable, str(Path(__file__).resolve()), "worker"]],
        teardown=teardown,
        pending=lambda: loop.run_until_complete(_unfinished(queue)),
    )


# -- the backlog memory case -------------------------------------------------------------------


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB, (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return (
        int(fields.get("VmRSS", "0 kB").split()[0]),
        int(fields.get("VmHWM", "0 kB").split()[0]),
    )


def rss_case() -> dict[str, Any]:
    total = int(os.environ.get("SW_RSS_JOBS", "1000000"))
    seconds = float(os.environ.get("SW_RSS_SECONDS", "10"))
    chunk = 20_000
    res: dict[str, Any] = {"case": f"syncworker-{BACKEND}", "backlog": total, "errors": []}
    loop = asyncio.new_event_loop()
    queue = backend()
    reset()
    rec = Path(tempfile.mkstemp(prefix="sw-rss-", suffix=".rec")[1])
    proc: subprocess.Popen[bytes] | None = None
    try:
        loop.run_until_complete(queue.open())
        jobs = Jobs(queue, registry)
        t0 = time.perf_counter()
        for start in range(1, total + 1, chunk):
            tags = range(start, min(start + chunk, total + 1))
            loop.run_until_complete(jobs.enqueue_many([NewJob("noop", {"tag": t}) for t in tags]))
        res["enqueue_s"] = time.perf_counter() - t0
        env = {**os.environ, "PEERS_REC": str(rec)}
        command = [sys.executable, str(Path(__file__).resolve()), "worker"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # Sampled from the worker's start; the clock of the window starts at its first job
        # (start-up on a loaded machine takes seconds of its own), bounded by 120 s.
        spawned, started, peak, hwm = time.monotonic(), None, 0, 0
        while proc.poll() is None:
            rss, hwm = _rss_kib(proc.pid)
            peak = max(peak, rss)
            if started is None and rec.stat().st_size > 0:
                started = time.monotonic()
            if started is not None and time.monotonic() - started >= seconds:
                break
            if started is None and time.monotonic() - spawned > 120:
                break
            time.sleep(0.02)
        started = started or time.monotonic()
        if proc.poll() is not None:
            res["errors"].append(f"worker exited early ({proc.returncode})")
        res["seconds"] = time.monotonic() - started
        res["peak_rss_mb"] = peak / 1024
        res["vm_hwm_mb"] = hwm / 1024
        res["jobs_done"] = rec.stat().st_size // REC_SIZE
        res["jobs_per_s"] = res["jobs_done"] / res["seconds"]
        if res["jobs_done"] == 0:
            res["errors"].append("the worker ran no job of the backlog")
    except Exception as exc:
        res["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            if res["errors"]:
                res["worker_log_tail"] = out.decode(errors="replace")[-1500:]
        loop.run_until_complete(queue.close())
        reset()
        rec.unlink(missing_ok=True)
    return res


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        asyncio.run(_work())
    elif sys.argv[1:] == ["rss"]:
        result = rss_case()
        print("RSS " + json.dumps(result), flush=True)
        sys.exit(1 if result["errors"] else 0)
    else:
        peerlib.main_guard(main)
