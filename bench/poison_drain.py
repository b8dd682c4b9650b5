"""What poison records cost a drain: 10,000 messages with and without 24 records PostgreSQL
refuses, from Redis or a PostgreSQL outbox into PostgreSQL and JSONL (issue 9 point E).

The poison: 12 keys of 10 kB of random text (over the btree index limit of the table's
primary key: ``ProgramLimitExceeded``) and 12 payloads with a NUL character (``\\u0000``,
which jsonb refuses: ``UntranslatableCharacter``), spread evenly through the backlog. Every
other message is a plain chat message of about 200 bytes.

``pg_outbox`` (seed 001's source) reads the messages as rows of a table ``chat`` whose
trigger fills ``algolia_sync_queue``; the sink maps them into a table ``messages`` with
``columns``. A PostgreSQL text column can hold neither of the two poisons above (the source's
own primary key refuses the 10 kB key, text refuses NUL), so its 24 are rows the target
refuses: 12 bodies over ``varchar(200)`` (``StringDataRightTruncation``) and 12 negative
``ts`` against ``CHECK (ts >= 0)`` (``CheckViolation``). It runs with seed 001's
``dead_letter: {store: source}``: a refused record stays in the queue, ``failed`` with its
error (``max_retries: 1``, so it settles within the drain as a dead letter does for Redis;
with the seed's 5 attempts and 1 s backoff a drain longer than 1 s claims it again).

Cases, per source (``redis_list``, ``redis_stream`` and ``pg_outbox``):

- ``clean``: the 10,000 messages, none refused;
- ``poison``: the same backlog with 24 of them replaced by poison.

One sync run drains the backlog (``Engine.run_once``), batches of 100 (the seed's size), two
in flight, the seed's retry policy (3 attempts, 1 s delay: what an outage would wait), in a
fresh child process, a fresh database and fresh Redis keys per run. The clock runs from the
start of the run to its end. Afterwards the run is checked: every clean message is a row in
PostgreSQL and one line in the JSONL file (poison too: JSONL takes them), each poison record
is one dead letter, nothing is left in Redis; for ``pg_outbox`` no dead letter, every clean
queue row ``completed`` and every poison row ``failed`` after one attempt, with its error.

Cases are interleaved (clean, poison, clean, poison, ...) so the machine's drift falls on
both; median and min-max of ``--repeat`` runs. The target: poison <= 1.5x clean (``--check``
exits 1 when a source misses it).

Services come from the options and only what this script creates is removed afterwards: its
own databases (``--db-prefix``, one per run, the outbox inside) and its own Redis keys (a
random prefix).

    python bench/poison_drain.py                          # 10,000 messages, 5 runs per case
    python bench/poison_drain.py --messages 2000 --repeat 1   # a short run (the suite's: 1000)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_embedded import cpu_s, peak_rss_mb

SOURCES = ["redis_list", "redis_stream", "pg_outbox"]
KINDS = ["clean", "poison"]
POISON = 24
BATCH = 100
TARGET_RATIO = 1.5
QUEUE = "algolia_sync_queue"
OUTBOX_SCHEMA = """
CREATE TABLE chat (
    id text PRIMARY KEY, "from" text NOT NULL, "to" text NOT NULL, text text NOT NULL,
    ts bigint NOT NULL);
CREATE TABLE messages (
    key text PRIMARY KEY, sender text, recipient text, body varchar(200),
    ts bigint CHECK (ts >= 0));
"""
OUTBOX_COLUMNS = {"sender": "from", "recipient": "to", "body": "text", "ts": "ts"}


def message(n: int) -> dict[str, Any]:
    return {
        "id": f"m{n}",
        "from": "+447700900123",
        "to": "+447700900456",
        "text": "see you at nine, the order shipped this morning, thanks!",
        "ts": 1767225600 + n,
    }


def backlog(count: int, kind: str) -> tuple[list[bytes], set[str], set[str]]:
    """The payloads in order, the keys that must become rows, the poison keys."""
    poison_at = (
        set(range(count // (2 * POISON), count, count // POISON)) if kind == "poison" else set()
    )
    payloads: list[bytes] = []
    clean: set[str] = set()
    poison: set[str] = set()
    for n in range(count):
        data = message(n)
        if n in poison_at:
            if len(poison) % 2 == 0:
                data["id"] = secrets.token_hex(5_000)  # 10 kB that no compression shrinks
            else:
                data["text"] = "a NUL \u0000 jsonb refuses"
            poison.add(data["id"])
        else:
            clean.add(data["id"])
        payloads.append(orjson.dumps(data))
    return payloads, clean, poison


def outbox_backlog(count: int, kind: str) -> tuple[list[dict[str, Any]], set[str], set[str]]:
    """``backlog`` for ``pg_outbox``: rows of the source table ``chat``. A poison row is one
    the target table refuses: half a ``body`` over its ``varchar(200)`` (22001, string data
    right truncation), half a negative ``ts`` against its ``CHECK (ts >= 0)`` (23514). The
    other two kinds cannot come from a PostgreSQL source: the source's own primary key refuses
    a 10 kB key and a text column refuses NUL."""
    poison_at = (
        set(range(count // (2 * POISON), count, count // POISON)) if kind == "poison" else set()
    )
    rows: list[dict[str, Any]] = []
    clean: set[str] = set()
    poison: set[str] = set()
    for n in range(count):
        data = message(n)
        if n in poison_at:
            if len(poison) % 2 == 0:
                data["text"] = "too long for varchar(200) " * 12
            else:
                data["ts"] = -1
            poison.add(data["id"])
        else:
            clean.add(data["id"])
        rows.append(data)
    return rows, clean, poison


def fill_outbox(pg_url: str, rows: list[dict[str, Any]]) -> None:
    """The tables, the outbox (seed 001's queue name) with its trigger on ``chat``, then the
    rows by COPY: the trigger queues one change per row."""
    import psycopg

    from syncworker.connectors.postgres import outbox

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(OUTBOX_SCHEMA)
    asyncio.run(outbox.install(pg_url, QUEUE, ["chat"]))
    with psycopg.connect(pg_url) as conn:
        with conn.cursor().copy('COPY chat (id, "from", "to", text, ts) FROM STDIN') as copy:
            for data in rows:
                copy.write_row((data["id"], data["from"], data["to"], data["text"], data["ts"]))
        conn.execute(f"ANALYZE chat, {QUEUE}")


def outbox_left(pg_url: str, clean: set[str], poison: set[str]) -> list[str]:
    """What the queue must hold after the drain (``dead_letter: {store: source}``, one
    attempt): every clean row ``completed``, every poison row ``failed`` after one attempt
    with the refusal in ``last_error``."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT record_id, status, attempts, last_error FROM {QUEUE}"
        ).fetchall()
    problems = []
    done = {key for key, status, *_ in rows if status == "completed"}
    failed = {
        key
        for key, status, attempts, error in rows
        if status == "failed" and attempts == 1 and error
    }
    if done != clean:
        problems.append(f"outbox: {len(clean - done)} clean rows not completed")
    if failed != poison or len(rows) != len(clean) + len(poison):
        problems.append(f"outbox: {len(failed)} poison rows failed (1 attempt), of {len(poison)}")
    return problems


def source_config(source: str, redis_url: str, prefix: str) -> dict[str, Any]:
    if source == "redis_list":
        return {
            "type": "redis_list",
            "url": redis_url,
            "lists": {"in": f"{prefix}in"},
            "key_field": "id",
        }
    return {
        "type": "redis_stream",
        "url": redis_url,
        "streams": {"in": f"{prefix}in"},
        "group": "bench",
        "key_field": "id",
        "block": "10ms",
    }


def fill(source: str, redis_url: str, prefix: str, payloads: list[bytes]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for n, payload in enumerate(payloads):
            if source == "redis_list":
                pipe.lpush(f"{prefix}in", payload)
            else:
                pipe.xadd(f"{prefix}in", {"data": payload})
            if n % 5_000 == 4_999:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()


def redis_left(source: str, redis_url: str, prefix: str) -> int:
    """Messages still waiting or claimed in Redis after the run."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        if source == "redis_list":
            keys = [k for k in client.scan_iter(match=f"{prefix}*") if client.type(k) == b"list"]
            return sum(int(client.llen(k)) for k in keys)
        pending = client.xpending(f"{prefix}in", "bench")
        return int(pending["pending"])
    finally:
        client.close()


def remove_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def create_database(pg_dsn: str, name: str) -> str:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_dsn.rsplit('/', 1)[0]}/{name}"


def drop_database(pg_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_keys(pg_url: str) -> set[str]:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM messages")}


def jsonl_keys(root: Path) -> list[str]:
    return [
        orjson.loads(line)["id"]
        for path in sorted((root / "out").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


async def child(config: dict[str, Any]) -> dict[str, Any]:
    from syncworker.config import config_from_dict
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "error")
    parsed = config_from_dict(config, environ={})
    state = state_store_from_url(parsed.app.state)
    engine = Engine(parsed.build(state), state)
    cpu_started, started = cpu_s(), time.perf_counter()
    [run] = await engine.run_once()
    seconds = time.perf_counter() - started
    await state.open()
    letters = await state.dead_letters("bench", limit=10_000)
    await state.close()
    return {
        "status": run.status,
        "processed": run.processed,
        "dead_lettered": run.dead_lettered,
        "dead_letter_keys": [letter.key for letter in letters],
        "seconds": seconds,
        "cpu_s": cpu_s() - cpu_started,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_case(source: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One drain in a child process; returns its figures and what the check found."""
    tag = uuid.uuid4().hex[:10]
    prefix = f"bench:poison:{tag}:"
    database = f"{args.db_prefix}_{tag}"
    pg_url = create_database(args.pg_dsn, database)
    try:
        with tempfile.TemporaryDirectory(prefix="sw-poison-") as tmp:
            root = Path(tmp)
            pipeline: dict[str, Any]
            if source == "pg_outbox":
                rows, clean, poison = outbox_backlog(args.messages, kind)
                fill_outbox(pg_url, rows)
                pipeline = {
                    # seed 001's dead_letter: {store: source} (examples/postgres_to_algolia):
                    # a refused record stays in the queue. One attempt, so a poison row ends
                    # 'failed' within the drain as a dead letter does for Redis; with the
                    # seed's 5 attempts and 1 s backoff a drain longer than 1 s claims it
                    # again, and each retry is another refusal to isolate.
                    "source": {
                        "type": "pg_outbox",
                        "url": pg_url,
                        "queue_table": QUEUE,
                        "tables": ["chat"],
                        "max_retries": 1,
                    },
                    "sinks": [
                        {
                            "type": "postgres",
                            "url": pg_url,
                            "table": "messages",
                            "columns": OUTBOX_COLUMNS,
                        },
                        {"type": "jsonl", "path": str(root / "out")},
                    ],
                    "dead_letter": {"store": "source"},
                }
            else:
                payloads, clean, poison = backlog(args.messages, kind)
                fill(source, args.redis_url, prefix, payloads)
                pipeline = {
                    "source": source_config(source, args.redis_url, prefix),
                    "sinks": [
                        {"type": "postgres", "url": pg_url, "table": "messages"},
                        {"type": "jsonl", "path": str(root / "out")},
                    ],
                }
            pipeline.update(
                {
                    "batch": {"size": BATCH, "max_wait": "10ms", "max_in_flight": 2},
                    "retry": {"attempts": 3, "delay": "1s"},
                    "schedule": {"manual": True},
                }
            )
            config = {"state": f"sqlite:///{root}/state.db", "pipelines": {"bench": pipeline}}
            done = subprocess.run(
                [sys.executable, __file__, "--child", orjson.dumps(config).decode()],
                capture_output=True,
                timeout=args.limit_s,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{source} {kind}: child failed: {done.stderr.decode()[-2000:]}")
            result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
            # with dead_letter: {store: source} the poison stays in the outbox, not in dead
            # letters
            letters = set() if source == "pg_outbox" else poison
            problems = check(result, clean, poison, letters, pg_keys(pg_url), jsonl_keys(root))
            if source == "pg_outbox":
                problems += outbox_left(pg_url, clean, poison)
            else:
                left = redis_left(source, args.redis_url, prefix)
                if left:
                    problems.append(f"{left} message(s) left in Redis")
    finally:
        remove_keys(args.redis_url, prefix)
        drop_database(args.pg_dsn, database)
    dead = result.pop("dead_letter_keys")
    return {
        "source": source,
        "kind": kind,
        "messages": args.messages,
        "poison": len(poison),
        **result,
        "dead_letters": len(dead),
        "problems": problems,
    }


def check(
    result: dict[str, Any],
    clean: set[str],
    poison: set[str],
    letters: set[str],
    rows: set[str],
    lines: list[str],
) -> list[str]:
    problems = []
    if result["status"] != "success":
        problems.append(f"run status {result['status']}")
    if rows != clean:
        problems.append(f"PostgreSQL: {len(clean - rows)} missing, {len(rows - clean)} unexpected")
    if sorted(lines) != sorted(clean | poison):
        problems.append(f"JSONL: {len(lines)} lines for {len(clean | poison)} messages")
    if sorted(result["dead_letter_keys"]) != sorted(letters):
        problems.append(f"dead letters: {len(result['dead_letter_keys'])}, expected {len(letters)}")
    return problems


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = []
    for source in SOURCES:
        medians: dict[str, float] = {}
        for kind in KINDS:
            mine = [r for r in runs if r["source"] == source and r["kind"] == kind]
            if not mine:
                continue
            seconds = [r["seconds"] for r in mine]
            medians[kind] = statistics.median(seconds)
            summary.append(
                {
                    "case": f"{source} {kind}",
                    "source": source,
                    "kind": kind,
                    "messages": mine[0]["messages"],
                    "poison": mine[0]["poison"],
                    "runs": len(mine),
                    "seconds": medians[kind],
                    "seconds_min": min(seconds),
                    "seconds_max": max(seconds),
                    "msgs_per_s": mine[0]["messages"] / medians[kind],
                    "dead_letters": mine[0]["dead_letters"],
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                    "problems": sorted({p for r in mine for p in r["problems"]}),
                }
            )
        if len(medians) == 2:
            summary[-1]["ratio_to_clean"] = medians["poison"] / medians["clean"]
    return summary


def print_summary(summary: list[dict[str, Any]]) -> None:
    print("| case | messages | poison | seconds (median) | min-max | msgs/s | x clean | checks |")
    print("|---|---:|---:|---:|---|---:|---:|---|")
    for row in summary:
        ratio = f"{row['ratio_to_clean']:.2f}" if "ratio_to_clean" in row else "-"
        checks = "; ".join(row["problems"]) or "ok"
        print(
            f"| {row['case']} | {row['messages']:,} | {row['poison']} | {row['seconds']:.3f} | "
            f"{row['seconds_min']:.3f}-{row['seconds_max']:.3f} | {row['msgs_per_s']:,.0f} | "
            f"{ratio} | {checks} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per drain")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (median kept)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--db-prefix", default="sw_bench_poison", help="databases made here")
    parser.add_argument("--source", choices=SOURCES, action="append", help="default: all")
    parser.add_argument("--limit-s", type=float, default=300.0, help="longest one drain may take")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(orjson.dumps(asyncio.run(child(orjson.loads(args.child)))).decode())
        return 0
    sources = args.source or SOURCES
    runs = []
    for repeat in range(args.repeat):
        for source in sources:
            for kind in KINDS:  # interleaved: clean, poison, clean, poison, ...
                result = run_case(source, kind, args)
                runs.append(result)
                print(
                    f"run {repeat + 1}/{args.repeat} {source} {kind}: {result['seconds']:.3f} s"
                    + (f" PROBLEMS {result['problems']}" if result["problems"] else ""),
                    flush=True,
                )
    summary = summarize(runs)
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    missed = [
        row["case"]
        for row in summary
        if row["problems"] or row.get("ratio_to_clean", 0.0) > TARGET_RATIO
    ]
    if missed:
        print(f"target missed (<= {TARGET_RATIO}x clean, every check ok): {', '.join(missed)}")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
