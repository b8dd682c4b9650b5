"""Seed 000's path: Redis lists -> PostgreSQL (and -> JSONL), beside hand-written psycopg.

1,000,000 messages of about 200 bytes are LPUSHed over `whatsapp:in` / `whatsapp:out` (on
the Redis of `--redis-url`, under a key prefix of the run's own whose keys are deleted before
each case and at the end: nothing else in that database is touched, never FLUSHDB), then
drained with batches of 5,000, in a fresh child process per run and a fresh PostgreSQL
database per run (made on the server of `--pg-dsn`, named `--db-prefix`_<random>, and
dropped after the run; no other database is dropped). Cases, interleaved (A, B, C, D, A, ...)
and each run `--repeat` times:

- `syncworker redis_list -> postgres`: one sync run, the `postgres` sink's default layout
  (key, stream, data jsonb, synced_at), two batches in flight;
- `syncworker redis_list -> jsonl`: the same into JSON Lines files;
- `hand-written LMOVE loop -> postgres`: seed 000's loop as a team would write it with
  redis-py and psycopg (`child_lmove_loop`): per list in turn, one pipeline of 5,000 LMOVEs
  from the list into a processing list (`tmp:in` / `tmp:out`), the payloads' ids parsed,
  the batch written as below, then DEL of the processing list. One thread, nothing
  overlapped, no recovery of a dead worker's processing list: the like-for-like baseline;
- `hand-written COPY + upsert (in memory)`: the floor: the same rows, already in memory (no
  Redis, no parsing, no syncworker), written by the fastest plain psycopg we know: COPY into
  a temporary staging table, then one INSERT ... ON CONFLICT, one transaction per batch.

Measured in each child, around the drain only: wall time, the child's CPU, the Redis
server's CPU (`INFO cpu`: used_cpu_sys + used_cpu_user) and the PostgreSQL server's CPU
(utime + stime from /proc of the postmaster and all its children, plus the postmaster's
cutime + cstime, which hold the backends that exited meanwhile). The servers' figures count
whatever else they serve meanwhile; PG CPU is "n/a" when the server is not on this host.

What arrived is checked after every run, not taken from the runtime's counters: every
message's row in the target table (key, stream and payload matching its number), or its line
in the JSONL files, and nothing left in the Redis lists. A missing message fails the run
(exit 1). Target (issue 14): redis_list -> postgres >= 0.8x the hand-written LMOVE loop's
msgs/s (medians); `--check` also exits 1 when it is missed.

    python bench/redis_to_postgres.py --check                         # 1,000,000 messages, 3 runs
    python bench/redis_to_postgres.py --messages 20000 --repeat 1 --lock ''   # the smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_embedded import cpu_s, peak_rss_mb
from runstats import add_medians, median_range, number, run_child
from table_sync import bench_lock

NA = "n/a"  # a figure not measured (PostgreSQL's CPU on another host)

# Redis from --redis-url (or SYNCWORKER_BENCH_REDIS). Every key the run makes (the seed's
# lists and the processing lists) starts with a prefix of its own, so nothing else in that
# database is touched. The parent sets both variables; its child processes inherit them.
REDIS_URL = os.environ.setdefault("SYNCWORKER_BENCH_REDIS", "redis://127.0.0.1:6379/0")
KEYS = os.environ.setdefault("SYNCWORKER_BENCH_REDIS_PREFIX", f"swbench:{uuid.uuid4().hex[:8]}:")
PG_ADMIN = os.environ.get(
    "SYNCWORKER_BENCH_PG",
    f"postgresql://{os.environ.get('PGUSER', 'postgres')}@127.0.0.1:5432/postgres",
)
BATCH = 5_000
CHILD_TIMEOUT_S = 1800
TS0 = 1767225600  # message n has ts TS0 + n
TARGET_OF_LOOP = 0.8
SW_PG = "syncworker redis_list -> postgres"
SW_JSONL = "syncworker redis_list -> jsonl"
LOOP = "hand-written LMOVE loop -> postgres"
FLOOR = "hand-written COPY + upsert (in memory)"
CASES = [SW_PG, SW_JSONL, LOOP, FLOOR]
TABLE = """CREATE TABLE IF NOT EXISTS messages (
    key text PRIMARY KEY, stream text, data jsonb, synced_at timestamptz)"""
STAGING = "CREATE TEMP TABLE staging (key text, stream text, data jsonb) ON COMMIT DROP"
UPSERT = (
    "INSERT INTO messages (key, stream, data, synced_at) "
    "SELECT key, stream, data, now() FROM staging "
    "ON CONFLICT (key) DO UPDATE SET stream = excluded.stream, "
    "data = excluded.data, synced_at = excluded.synced_at"
)
# Rows that are exactly message n for some n in 0..count-1; key is the primary key, so
# `count` such rows means every message arrived once.
ARRIVED = """
SELECT count(*) FILTER (
           WHERE n BETWEEN 0 AND %(last)s AND key = stream || '-' || n AND data->>'id' = key
             AND stream = CASE WHEN n %% 2 = 0 THEN 'in' ELSE 'out' END),
       count(*)
FROM (SELECT key, stream, data, (data->>'ts')::bigint - %(ts0)s AS n FROM messages) m
"""


def stream_of(n: int) -> str:
    return "in" if n % 2 == 0 else "out"


def message(n: int, stream: str) -> bytes:
    return orjson.dumps(
        {
            "id": f"{stream}-{n}",
            "from": "+447700900123",
            "to": "+447700900456",
            "text": "see you at nine, the order shipped this morning, thanks!",
            "ts": TS0 + n,
            "chat": "c-42",
        }
    )


# -- Redis --------------------------------------------------------------------------------


def source_lists() -> dict[str, str]:
    return {stream: f"{KEYS}whatsapp:{stream}" for stream in ("in", "out")}


def delete_own_keys() -> None:
    """Deletes the keys under this run's prefix, and nothing else."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{KEYS}*", count=1000):
        client.delete(key)
    client.close()


def fill_redis(count: int) -> None:
    """LPUSH messages 0..count-1, each on its stream's list, in order (oldest at the right)."""
    import redis

    delete_own_keys()
    client = redis.Redis.from_url(REDIS_URL)
    lists = source_lists()
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 10_000):
        chunk = range(start, min(count, start + 10_000))
        for stream, key in lists.items():
            pipe.lpush(key, *(message(n, stream) for n in chunk if stream_of(n) == stream))
        pipe.execute()
    client.close()


def left_in_redis() -> int:
    """Items still in any list under the prefix (the source lists and processing lists)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    left = 0
    for key in client.scan_iter(match=f"{KEYS}*", count=1000):
        if client.type(key) == b"list":
            left += int(client.llen(key))
    client.close()
    return left


# -- the servers' CPU ---------------------------------------------------------------------

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _postgres_ticks(postmaster: int) -> int:
    """utime + stime + cutime + cstime of the postmaster and each of its children: the
    postmaster's cutime/cstime hold the backends it has reaped."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _proc_stat(pid)
        if fields is not None and (pid == postmaster or int(fields[1]) == postmaster):
            total += sum(int(value) for value in fields[11:15])
    return total


class ServerCpu:
    """The Redis and PostgreSQL servers' CPU seconds so far, every process of theirs."""

    def __init__(self, pg_url: str) -> None:
        import psycopg
        import redis

        self.redis = redis.Redis.from_url(REDIS_URL)
        # Kept open until close(): its backend's exit would land in the measured window.
        self.pg = psycopg.connect(pg_url, autocommit=True)
        row = self.pg.execute("SELECT pg_backend_pid()").fetchone()
        self.postmaster = _postmaster_of(int(row[0])) if row else None

    def read(self) -> tuple[float, float | None]:
        info = self.redis.info("cpu")
        redis_s = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        if self.postmaster is None:
            return redis_s, None
        return redis_s, _postgres_ticks(self.postmaster) * TICK_S

    def close(self) -> None:
        self.redis.close()
        self.pg.close()


def _postmaster_of(backend: int) -> int | None:
    """The postmaster of a backend pid, if that backend is a postgres process on this host."""
    try:
        if Path(f"/proc/{backend}/comm").read_text().strip() != "postgres":
            return None
    except OSError:
        return None
    fields = _proc_stat(backend)
    return int(fields[1]) if fields else None


class Window:
    """Wall time and the child's, Redis's and PostgreSQL's CPU over the timed part."""

    def __init__(self, pg_url: str) -> None:
        self.servers = ServerCpu(pg_url)

    def __enter__(self) -> Window:
        self.redis0, self.pg0 = self.servers.read()
        self.cpu0, self.t0 = cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu_s = cpu_s() - self.cpu0
        redis1, pg1 = self.servers.read()
        self.servers.close()
        self.redis_cpu_s = redis1 - self.redis0
        self.pg_cpu_s = None if pg1 is None or self.pg0 is None else pg1 - self.pg0

    def figures(self, records: int) -> dict[str, Any]:
        return {
            "records": records,
            "seconds": self.seconds,
            "cpu_s": self.cpu_s,
            "redis_cpu_s": self.redis_cpu_s,
            "pg_cpu_s": self.pg_cpu_s,
        }


# -- the children -------------------------------------------------------------------------


def config_text(root: Path, pg_url: str, sink: str) -> str:
    sinks = {
        "postgres": f'{{type: postgres, url: "{pg_url}", table: messages}}',
        "jsonl": f'{{type: jsonl, path: "{root}/out"}}',
    }
    lists = source_lists()
    return (
        f'state: "sqlite:///{root}/state.db"\n'
        "pipelines:\n  bench:\n"
        f'    source: {{type: redis_list, url: "{REDIS_URL}", processing_prefix: "{KEYS}tmp:",'
        f'\n      lists: {{in: "{lists["in"]}", out: "{lists["out"]}"}}, key_field: id}}\n'
        f"    sinks: [{sinks[sink]}]\n"
        f"    batch: {{size: {BATCH}, max_wait: 10ms, max_in_flight: 2}}\n"
        "    schedule: {manual: true}\n"
    )


async def child_syncworker(root: Path, pg_url: str, sink: str) -> dict[str, Any]:
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
    with Window(pg_url) as window:
        [run] = await engine.run_once()
    assert run.status == "success", run
    return window.figures(run.processed)


def copy_upsert(conn: Any, rows: Iterable[tuple[str, str, str]]) -> None:
    """One batch, one transaction: COPY into a temporary staging table, one upsert."""
    with conn.transaction():
        conn.execute(STAGING)
        with conn.cursor().copy("COPY staging (key, stream, data) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(UPSERT)


def child_floor(pg_url: str, count: int) -> dict[str, Any]:
    """The floor: rows in memory, COPY to staging + one upsert per batch."""
    import psycopg

    rows = [
        (f"{stream_of(n)}-{n}", stream_of(n), message(n, stream_of(n)).decode())
        for n in range(count)
    ]
    with psycopg.connect(pg_url) as conn:
        conn.execute(TABLE)
        conn.commit()
        with Window(pg_url) as window:
            for start in range(0, count, BATCH):
                copy_upsert(conn, rows[start : start + BATCH])
    return window.figures(count)


def child_lmove_loop(pg_url: str) -> dict[str, Any]:
    """Seed 000's loop, hand-written: per list in turn, a pipeline of BATCH LMOVEs into the
    list's processing list, the batch upserted (COPY + staging), the processing list DELeted.
    A list is done when a pipeline comes back short."""
    import psycopg
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    moved = 0
    with psycopg.connect(pg_url) as conn:
        conn.execute(TABLE)
        conn.commit()
        live = source_lists()
        with Window(pg_url) as window:
            while live:
                for stream, source in list(live.items()):
                    processing = f"{KEYS}tmp:{stream}"
                    pipe = client.pipeline(transaction=False)
                    for _ in range(BATCH):
                        pipe.lmove(source, processing, "RIGHT", "LEFT")
                    items = [item for item in pipe.execute() if item is not None]
                    if len(items) < BATCH:
                        del live[stream]
                    if items:
                        copy_upsert(
                            conn, ((orjson.loads(i)["id"], stream, i.decode()) for i in items)
                        )
                        client.delete(processing)
                        moved += len(items)
    client.close()
    return window.figures(moved)


def child_main(name: str, root: Path, pg_url: str, count: int) -> None:
    if name == FLOOR:
        figures = child_floor(pg_url, count)
    elif name == LOOP:
        figures = child_lmove_loop(pg_url)
    else:
        figures = asyncio.run(
            child_syncworker(root, pg_url, "postgres" if name == SW_PG else "jsonl")
        )
    figures["rss"] = peak_rss_mb()
    print(json.dumps(figures))


# -- one run ------------------------------------------------------------------------------


def url_of(pg_dsn: str, database: str) -> str:
    parts = urlsplit(pg_dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def admin(pg_dsn: str, statement: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(database)))


def arrived_in_postgres(pg_url: str, count: int) -> tuple[int, int]:
    """(messages whose exact row is there, rows in the table)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(ARRIVED, {"last": count - 1, "ts0": TS0}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def arrived_in_jsonl(out: Path, count: int) -> tuple[int, int]:
    """(messages found as a line of their stream's file, lines in the files)."""
    expected = {f"{stream_of(n)}-{n}" for n in range(count)}
    seen: set[str] = set()
    lines = 0
    for path in sorted(out.glob("*.jsonl")):
        stream = path.name.split("_")[1]  # messages_{stream}_{date}.jsonl
        with path.open("rb") as handle:
            for line in handle:
                lines += 1
                data = orjson.loads(line)
                if data.get("id", "").startswith(f"{stream}-"):
                    seen.add(data["id"])
    return len(seen & expected), lines


def spawn_child(name: str, root: str, pg_url: str, count: int) -> dict[str, Any]:
    args = ["--child", name, "--root", root, "--pg", pg_url, "--messages", str(count)]
    return run_child(__file__, name, args, CHILD_TIMEOUT_S)


def run_case(name: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    database = f"{args.db_prefix}_{uuid.uuid4().hex[:8]}"
    admin(args.pg_dsn, "CREATE DATABASE {}", database)
    pg_url = url_of(args.pg_dsn, database)
    try:
        if name != FLOOR:
            fill_redis(count)
        with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
            figures = spawn_child(name, tmp, pg_url, count)
            if name == SW_JSONL:
                arrived, stored = arrived_in_jsonl(Path(tmp) / "out", count)
            else:
                arrived, stored = arrived_in_postgres(pg_url, count)
        left = left_in_redis() if name != FLOOR else 0
    finally:
        admin(args.pg_dsn, "DROP DATABASE IF EXISTS {} WITH (FORCE)", database)
        delete_own_keys()
    return run_figures(name, count, figures, arrived, stored, left)


def per_msg_us(seconds: float | None, count: int) -> float | None:
    return None if seconds is None else seconds / count * 1e6


def run_figures(
    name: str, count: int, figures: dict[str, Any], arrived: int, stored: int, left: int
) -> dict[str, Any]:
    worker = per_msg_us(figures["cpu_s"], count)
    redis_cpu = per_msg_us(figures["redis_cpu_s"], count)
    pg_cpu = per_msg_us(figures["pg_cpu_s"], count)
    parts = (worker, redis_cpu, pg_cpu)
    problems = []
    if arrived != count:
        problems.append(f"{count - arrived} of {count} messages missing at the target")
    if stored != arrived:
        problems.append(f"{stored - arrived} rows/lines that are no message (or repeats)")
    if left:
        problems.append(f"{left} items left in the Redis lists")
    if figures["records"] != count:
        problems.append(f"the run counted {figures['records']} records, not {count}")
    return {
        "case": name,
        "messages": count,
        "seconds": figures["seconds"],
        "msgs_per_s": count / figures["seconds"],
        "worker_cpu_us_per_msg": worker,
        "redis_cpu_us_per_msg": redis_cpu,
        "pg_cpu_us_per_msg": pg_cpu,
        "total_cpu_us_per_msg": None if None in parts else sum(p for p in parts if p is not None),
        "peak_rss_mb": figures["rss"],
        "runtime_records": figures["records"],
        "arrived": arrived,
        "missing": count - arrived,
        "stored": stored,
        "left_in_redis": left,
        "problems": problems,
    }


# -- summary ------------------------------------------------------------------------------

MEDIAN_KEYS = (
    "msgs_per_s",
    "seconds",
    "worker_cpu_us_per_msg",
    "redis_cpu_us_per_msg",
    "pg_cpu_us_per_msg",
    "total_cpu_us_per_msg",
    "peak_rss_mb",
)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: medians with min-max over the runs; counts summed, so nothing missing hides
    behind a median."""
    summary = []
    for name in dict.fromkeys(r["case"] for r in runs):
        mine = [r for r in runs if r["case"] == name]
        row: dict[str, Any] = {"case": name, "runs": len(mine), "messages": mine[0]["messages"]}
        for key in ("arrived", "missing", "stored", "left_in_redis"):
            row[key] = sum(r[key] for r in mine)
        row["problems"] = [p for r in mine for p in r["problems"]]
        add_medians(row, mine, MEDIAN_KEYS)
        row["all_runs"] = mine
        summary.append(row)
    return summary


def _share(row: dict[str, Any], by: dict[str, Any]) -> dict[str, str]:
    shares = {}
    for label, name in (("loop", LOOP), ("floor", FLOOR)):
        base = by.get(name)
        if row["case"] == SW_JSONL or base is None:  # JSONL beside PostgreSQL means nothing
            shares[label] = "-"
        else:
            shares[label] = f"{row['msgs_per_s'] / base['msgs_per_s']:.0%}"
    return shares


def print_summary(summary: list[dict[str, Any]]) -> None:
    by = {r["case"]: r for r in summary}
    print(
        "| case | runs | msgs/s (min-max) | s (min-max) | of LMOVE loop | of floor "
        "| worker CPU us/msg | Redis CPU us/msg | PG CPU us/msg | total CPU us/msg (min-max) "
        "| peak RSS MB (min-max) | arrived |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        share = _share(r, by)
        print(
            f"| {r['case']} | {r['runs']} | {median_range(r, 'msgs_per_s', ',.0f', NA)} "
            f"| {median_range(r, 'seconds', '.2f', NA)} | {share['loop']} | {share['floor']} "
            f"| {number(r['worker_cpu_us_per_msg'], '.2f', NA)} "
            f"| {number(r['redis_cpu_us_per_msg'], '.2f', NA)} "
            f"| {number(r['pg_cpu_us_per_msg'], '.2f', NA)} "
            f"| {median_range(r, 'total_cpu_us_per_msg', '.2f', NA)} "
            f"| {median_range(r, 'peak_rss_mb', '.0f', NA)} "
            f"| {r['arrived']:,} of {r['runs'] * r['messages']:,} |"
        )


def targets(summary: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """(target, held) for the checked targets of issue 14."""
    by = {r["case"]: r for r in summary}
    found = []
    if SW_PG in by and LOOP in by:
        ratio = by[SW_PG]["msgs_per_s"] / by[LOOP]["msgs_per_s"]
        found.append(
            (
                f"{SW_PG} >= {TARGET_OF_LOOP:g}x the hand-written LMOVE loop (medians): "
                f"{ratio:.2f}x ({by[SW_PG]['msgs_per_s']:,.0f} vs {by[LOOP]['msgs_per_s']:,.0f} "
                "msgs/s)",
                ratio >= TARGET_OF_LOOP,
            )
        )
    else:
        found.append((f"{SW_PG} vs the LMOVE loop: not run (both cases are needed)", False))
    problems = [f"{r['case']}: {p}" for r in summary for p in r["problems"]]
    found.append(
        ("every message arrived, nothing left: " + ("; ".join(problems) or "yes"), not problems)
    )
    return found


def print_reference(summary: list[dict[str, Any]]) -> None:
    """Issue 4's targets, for reference (not checked: absolute figures of this machine)."""
    by = {r["case"]: r for r in summary}
    if SW_PG in by and FLOOR in by:
        share = by[SW_PG]["msgs_per_s"] / by[FLOOR]["msgs_per_s"]
        print(
            f"  (issue 4, not checked) {SW_PG}: {share:.0%} of the floor (>= 60%), "
            f"{by[SW_PG]['msgs_per_s']:,.0f} msgs/s (>= 40,000)"
        )
    if SW_JSONL in by:
        print(
            f"  (issue 4, not checked) {SW_JSONL}: "
            f"{by[SW_JSONL]['msgs_per_s']:,.0f} msgs/s (>= 100,000)"
        )
    rss = [r["peak_rss_mb"] for r in summary if r["case"].startswith("syncworker")]
    if rss:
        print(f"  (issue 4, not checked) syncworker peak RSS {max(rss):.0f} MB (<= 150)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians kept)")
    parser.add_argument("--case", action="append", choices=CASES, help="default: all")
    parser.add_argument(
        "--redis-url", help="the Redis to use (default $SYNCWORKER_BENCH_REDIS or db 0 on :6379)"
    )
    parser.add_argument(
        "--pg-dsn", default=PG_ADMIN, help="admin DSN of the server the runs' databases go to"
    )
    parser.add_argument("--db-prefix", default="sw_bench_r2p", help="databases made here")
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pg", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.root, args.pg, args.messages)
        return 0
    if args.redis_url:
        global REDIS_URL
        REDIS_URL = os.environ["SYNCWORKER_BENCH_REDIS"] = args.redis_url
    runs = []
    try:
        for repeat in range(args.repeat):
            for name in args.case or CASES:  # interleaved
                with bench_lock(args.lock):
                    run = run_case(name, args.messages, args)
                runs.append(run)
                print(
                    f"run {repeat + 1}/{args.repeat} {name}: {run['msgs_per_s']:,.0f} msgs/s, "
                    f"{run['missing']} missing" + "".join(f"; {p}" for p in run["problems"]),
                    flush=True,
                )
    finally:
        delete_own_keys()
    summary = summarize(runs)
    print_summary(summary)
    print(f"({args.messages:,} messages per run, batches of {BATCH:,})")
    held = targets(summary)
    for target, ok in held:
        print(f"  {'held' if ok else 'MISSED'}: {target}")
    print_reference(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    incomplete = any(r["problems"] for r in summary)
    return 1 if incomplete or (args.check and not all(ok for _, ok in held)) else 0


if __name__ == "__main__":
    sys.exit(main())
