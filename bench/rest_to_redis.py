"""Seed 002's sync: records per second from a fast local Zoho Creator (1,000 records a page)
into Redis, syncworker beside a hand-written loop like the seed's, in the same run; and the
discrepancy check of the synced records with planted differences.

Cases (each a fresh process, measured from spawn to exit with ``table_sync.measure``: wall
seconds, peak RSS of the process tree, its CPU, the host's busy CPU):

- ``syncworker``: ``syncworker run examples/zoho_to_redis/syncworker.yaml --once`` on a fresh
  state store (every event never read: each one's full read, ``SYNC_BATCH_SIZE`` 1,000);
- ``hand-loop``: the seed's loop (``syncWorker.js``): httpx and redis-py, the events listed,
  each event's registrations paged through with ``record_cursor``, one awaited ``SET`` per
  record, then the event's index set and meta hash;
- ``discrepancy-check``: after a syncworker sync, ``--diffs`` differences planted in Redis
  (40 % changed values, 30 % deleted keys, 30 % extra keys in the index sets), then
  ``syncworker discrepancy-check ... --json``; the keys it reports must be exactly those.

The fake (``tests/fakes/zoho_creator.py``) runs in a process of its own on ``--port``, with
``--records`` registrations over ``--events`` events, rate limit lifted. Interleaved: every
repetition runs every sync case (order rotated), each on a prefix of its own that is emptied
before the run; a run whose Redis does not hold exactly the records is incorrect.

Targets (issue 11): syncworker >= 3x the hand loop's records/s and >= 50,000 records/s; the
check of 200,000 records with 100 differences <= 2 s, exact. ``--check`` exits 1 when one is
missed or cannot be evaluated, or a run is incorrect.

Services from ``--redis-url`` and ``--redis-prefix``: every key written is under the prefix
(a fresh one per run of the benchmark unless given), and only keys under it are deleted.

    python bench/rest_to_redis.py                         # 200,000 records, 3 repetitions
    python bench/rest_to_redis.py --records 5000 --events 10 --repeat 1   # the smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))
from table_sync import bench_lock, measure, print_summary  # noqa: E402

EXAMPLE = REPO / "examples" / "zoho_to_redis" / "syncworker.yaml"
EVENTS_REPORT = "All_Events"
REGISTRATIONS = "All_Registrations"
PIPELINE = "zoho_registrations"
SYNC_CASES = ("syncworker", "hand-loop")


# -- the fake, in a process of its own ---------------------------------------------------------


def serve_fake(port: int, records: int, events: int) -> None:
    """Seed the fake and serve until SIGTERM; prints "ready" once it listens."""
    from tests.fakes.zoho_creator import ZohoCreatorServer

    async def run() -> None:
        zoho = ZohoCreatorServer()
        zoho.keep_requests = False
        zoho.port = port
        ids = [
            zoho.add(EVENTS_REPORT, {"Event_Name": f"Event {e}", "Modified_Time": _ago()})
            for e in range(events)
        ]
        for n in range(records):
            event = ids[n % events]
            zoho.add(REGISTRATIONS, _registration(event, n))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with zoho:
            print("ready", zoho.port, flush=True)
            await stop.wait()

    asyncio.run(run())


def _ago() -> str:
    from datetime import UTC, datetime, timedelta

    from tests.fakes.zoho_creator import zoho_time

    return zoho_time(datetime.now(UTC) - timedelta(hours=1))


def _registration(event_id: str, n: int) -> dict[str, Any]:
    """A registration shaped as Zoho sends one: ids and lookups as text, a few numbers."""
    return {
        "Event": {"ID": event_id, "display_value": f"Event {event_id}"},
        "Name": f"Guest {n}",
        "Email": f"guest{n}@example.com",
        "Phone": f"+84 90 {n:07d}",
        "Ticket": f"T-{n:08d}",
        "Seats": 1 + n % 4,
        "Price": "0.1",
        "Amount": 10.25,
        "Checked_In": n % 3 == 0,
    }


class Fake:
    def __init__(self, port: int, records: int, events: int, log: Path) -> None:
        self.log = log.open("w")
        options = ["--records", str(records), "--events", str(events)]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-fake", "--port", str(port), *options],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"the fake Zoho did not start: {line!r} (see {log})")
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


# -- the hand-written loop (the seed's) --------------------------------------------------------


async def hand_loop(url: str, redis_url: str, prefix: str) -> int:
    """The seed's sync: events, then each event's registrations page by page, one awaited
    SET per record, then the event's index set and meta. Returns the records written."""
    import httpx
    import redis.asyncio as aredis
    from tests.fakes.zoho_creator import ZohoCreatorServer

    defaults = ZohoCreatorServer()
    base = f"{url}/api/v2.1/{defaults.owner}/{defaults.app}/report"
    redis = aredis.Redis.from_url(redis_url)
    written = 0
    async with httpx.AsyncClient(timeout=60) as client:
        token = (
            await client.post(
                f"{url}/oauth/v2/token",
                data={
                    "grant_type": "refresh_token",
                    "client_id": defaults.client_id,
                    "client_secret": defaults.client_secret,
                    "refresh_token": defaults.refresh_token,
                },
            )
        ).json()["access_token"]
        headers = {"Authorization": f"Zoho-oauthtoken {token}"}
        events = await _pages(client, f"{base}/{EVENTS_REPORT}", headers, None)
        for event in events:
            event_id = event["ID"]
            criteria = f"(Event == {event_id})"
            records = await _pages(client, f"{base}/{REGISTRATIONS}", headers, criteria)
            ids = []
            for record in records:
                key = f"{prefix}registration:{event_id}:{record['ID']}"
                await redis.set(key, json.dumps(record))
                ids.append(record["ID"])
                written += 1
            if ids:
                await redis.sadd(f"{prefix}event:{event_id}:registrations", *ids)
            await redis.hset(
                f"{prefix}event:{event_id}:meta",
                mapping={"count": len(ids), "last_synced_at": time.time()},
            )
    await redis.aclose()
    return written


async def _pages(client: Any, url: str, headers: dict[str, str], criteria: str | None) -> list:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"max_records": 1000, **({"criteria": criteria} if criteria else {})}
        extra = {"record_cursor": cursor} if cursor else {}
        answer = await client.get(url, params=params, headers={**headers, **extra})
        if answer.status_code == 400 and answer.json().get("code") == 3100:
            return out
        answer.raise_for_status()
        out.extend(answer.json()["data"])
        cursor = answer.headers.get("record_cursor")
        if not cursor:
            return out


# -- runs --------------------------------------------------------------------------------------


def held(redis_url: str, prefix: str) -> tuple[int, int]:
    """(record keys, index members) under ``prefix``."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = sum(1 for _ in client.scan_iter(match=f"{prefix}registration:*", count=5000))
    members = sum(client.scard(k) for k in client.scan_iter(match=f"{prefix}event:*:registrations"))
    client.close()
    return keys, members


def drop(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        batch.append(key)
        if len(batch) >= 2000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)
    client.close()


def sync_env(fake: Fake, redis_url: str, prefix: str, state: Path) -> dict[str, str]:
    from tests.fakes.zoho_creator import ZohoCreatorServer

    d = ZohoCreatorServer()
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SYNC_STATE_PATH": str(state),
        "ZOHO_CREATOR_URL": fake.url,
        "ZOHO_ACCOUNTS_URL": fake.url,
        "ZOHO_OWNER": d.owner,
        "ZOHO_APP": d.app,
        "ZOHO_CLIENT_ID": d.client_id,
        "ZOHO_CLIENT_SECRET": d.client_secret,
        "ZOHO_REFRESH_TOKEN": d.refresh_token,
        "ZOHO_REQUESTS_PER_MINUTE": "0",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "SYNC_BATCH_SIZE": "1000",
        "ENABLE_AUTO_SYNC": "false",
        "LOG_LEVEL": "WARNING",
    }


def syncworker_bin() -> str:
    local = Path(sys.executable).with_name("syncworker")
    return str(local) if local.exists() else "syncworker"


def run_sync(case: str, fake: Fake, a: argparse.Namespace, work: Path, rep: int) -> dict[str, Any]:
    prefix = f"{a.redis_prefix}{case}:"
    drop(a.redis_url, prefix)
    state = work / f"{case}-{rep}.db"
    env = sync_env(fake, a.redis_url, prefix, state)
    if case == "syncworker":
        command = [syncworker_bin(), "run", str(EXAMPLE), "--once"]
    else:
        command = [sys.executable, __file__, "--hand-loop", fake.url, "--redis-url", a.redis_url]
        command += ["--redis-prefix", prefix]
    figures = measure(command, work / f"{case}-{rep}.log", env)
    keys, members = held(a.redis_url, prefix)
    problem = None
    if figures["rc"] != 0:
        problem = f"exit {figures['rc']} (see {figures['log']})"
    elif (keys, members) != (a.records, a.records):
        problem = f"Redis holds {keys:,} keys and {members:,} index members of {a.records:,}"
    return {"case": case, "rep": rep, **figures, "correct": problem is None, "problem": problem}


def plant(redis_url: str, prefix: str, diffs: int, seed: int = 11) -> dict[str, list[str]]:
    """``diffs`` differences in Redis: 40 % values changed, 30 % keys deleted, 30 % extra."""
    import redis

    client = redis.Redis.from_url(redis_url)
    rng = random.Random(seed)
    index_keys = sorted(client.scan_iter(match=f"{prefix}event:*:registrations"))
    changed_n, missing_n = diffs * 40 // 100, diffs * 30 // 100
    extra_n = diffs - changed_n - missing_n
    picks: list[tuple[bytes, str]] = []
    for index in rng.sample(index_keys, min(len(index_keys), changed_n + missing_n)):
        member = rng.choice(sorted(client.smembers(index))).decode()
        picks.append((index, member))
    while len(picks) < changed_n + missing_n:
        index = rng.choice(index_keys)
        member = rng.choice(sorted(client.smembers(index))).decode()
        if (index, member) not in picks:
            picks.append((index, member))
    planted: dict[str, list[str]] = {"different": [], "missing": [], "extra": []}
    for n, (index, member) in enumerate(picks):
        event = index.decode()[len(prefix) :].split(":")[1]
        key = f"{prefix}registration:{event}:{member}"
        if n < changed_n:
            value = json.loads(client.get(key))
            value["Name"] = f"changed {n}"
            client.set(key, json.dumps(value))
            planted["different"].append(member)
        else:
            client.delete(key)
            planted["missing"].append(member)
    for n in range(extra_n):
        index = rng.choice(index_keys)
        event = index.decode()[len(prefix) :].split(":")[1]
        member = f"9{n:018d}"
        client.set(f"{prefix}registration:{event}:{member}", json.dumps({"ID": member}))
        client.sadd(index, member)
        planted["extra"].append(member)
    client.close()
    return {k: sorted(v) for k, v in planted.items()}


def run_check(fake: Fake, a: argparse.Namespace, work: Path, rep: int) -> dict[str, Any]:
    """A syncworker sync (untimed), the planted differences, the timed check."""
    prefix = f"{a.redis_prefix}check:"
    drop(a.redis_url, prefix)
    env = sync_env(fake, a.redis_url, prefix, work / f"check-{rep}.db")
    sync = subprocess.run(
        [syncworker_bin(), "run", str(EXAMPLE), "--once"], env=env, capture_output=True
    )
    if sync.returncode != 0:
        return {
            "case": "discrepancy-check",
            "rep": rep,
            "rc": sync.returncode,
            "wall_s": None,
            "correct": False,
            "problem": "the sync before the check failed",
        }
    planted = plant(a.redis_url, prefix, a.diffs)
    command = [syncworker_bin(), "discrepancy-check", PIPELINE, "--config", str(EXAMPLE)]
    command += ["--json"]
    figures = measure(command, work / f"check-{rep}.log", env)
    text = Path(figures["log"]).read_text()
    try:
        body = json.loads(text[text.index("\n{") + 1 if not text.startswith("{") else 0 :])
    except ValueError:
        return {
            "case": "discrepancy-check",
            "rep": rep,
            **figures,
            "correct": False,
            "problem": f"no JSON report (see {figures['log']})",
        }
    found = {
        kind: sorted(str(k) for g in body["groups"] for k in g[kind]["keys"])
        for kind in ("missing", "extra", "different")
    }
    problem = None if found == planted else f"found {_counts(found)}, planted {_counts(planted)}"
    if figures["rc"] != 1:
        problem = problem or f"exit {figures['rc']}, expected 1 (differences)"
    return {
        "case": "discrepancy-check",
        "rep": rep,
        **figures,
        "correct": problem is None,
        "problem": problem,
    }


def _counts(keys: dict[str, list[str]]) -> dict[str, int]:
    return {k: len(v) for k, v in keys.items()}


# -- summary -----------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], records: int) -> list[dict[str, Any]]:
    rows = []
    for case in dict.fromkeys(r["case"] for r in runs):
        mine = [r for r in runs if r["case"] == case]
        timed = [r for r in mine if r.get("wall_s") is not None and r["correct"]]
        walls = [r["wall_s"] for r in timed]
        median = statistics.median(walls) if walls else None
        rows.append(
            {
                "case": case,
                "rows": records,
                "runs": len(mine),
                "seconds": median,
                "seconds_min": min(walls) if walls else None,
                "seconds_max": max(walls) if walls else None,
                "rows_per_s": records / median if median else None,
                "peak_rss_mb": max(r["rss_mb"] for r in timed) if timed else None,
                "cpu_s": statistics.median(r["cpu_s"] for r in timed) if timed else None,
                "host_busy_s": statistics.median(r["host_busy_s"] for r in timed)
                if timed
                else None,
                "correct": sum(1 for r in mine if r["correct"]),
                "problems": [f"rep {r['rep']}: {r['problem']}" for r in mine if r["problem"]],
                "all_runs": mine,
                "status": "ran",
            }
        )
    return rows


def evaluate(
    rows: list[dict[str, Any]], a: argparse.Namespace
) -> list[tuple[str, bool | None, str]]:
    by = {r["case"]: r for r in rows}
    sw, hand, check = by.get("syncworker"), by.get("hand-loop"), by.get("discrepancy-check")
    out: list[tuple[str, bool | None, str]] = []
    if sw and hand and sw["rows_per_s"] and hand["rows_per_s"]:
        ratio = sw["rows_per_s"] / hand["rows_per_s"]
        out.append((">= 3x the hand loop", ratio >= 3, f"{ratio:.1f}x"))
    else:
        out.append((">= 3x the hand loop", None, "a case did not run"))
    if sw and sw["rows_per_s"]:
        out.append(
            (
                ">= 50,000 records/s",
                sw["rows_per_s"] >= 50_000,
                f"{sw['rows_per_s']:,.0f} records/s",
            )
        )
    else:
        out.append((">= 50,000 records/s", None, "syncworker did not run"))
    if check and check["seconds"] is not None:
        scale = f"{a.records:,} records, {a.diffs} differences"
        out.append(
            (
                "discrepancy check <= 2 s",
                check["seconds"] <= 2.0,
                f"{check['seconds']:.2f} s ({scale})",
            )
        )
    else:
        out.append(("discrepancy check <= 2 s", None, "the check did not run"))
    for r in rows:
        out.append(
            (
                f"{r['case']} exact",
                r["correct"] == r["runs"] and r["runs"] > 0,
                f"{r['correct']}/{r['runs']} runs",
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--diffs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=17350)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-prefix", default=None, help="default: bench:rest:<random>:")
    parser.add_argument("--lock", default=os.environ.get("SYNCWORKER_BENCH_LOCK", ""))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-check-case", action="store_true", help="skip the check case")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hand-loop", metavar="URL", default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.serve_fake:
        serve_fake(a.port, a.records, a.events)
        return 0
    if a.hand_loop:
        written = asyncio.run(hand_loop(a.hand_loop, a.redis_url, a.redis_prefix or ""))
        print("written", written)
        return 0
    a.redis_prefix = a.redis_prefix or f"bench:rest:{uuid.uuid4().hex[:8]}:"
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sw-rest-redis-") as tmp, bench_lock(a.lock):
        work = Path(tmp)
        fake = Fake(a.port, a.records, a.events, work / "fake.log")
        try:
            for rep in range(1, a.repeat + 1):
                order = SYNC_CASES[rep % 2 :] + SYNC_CASES[: rep % 2]
                for case in order:
                    runs.append(run_sync(case, fake, a, work, rep))
                    print(f"  rep {rep} {case}: {runs[-1]['wall_s']:.2f} s", flush=True)
                if not a.no_check_case:
                    runs.append(run_check(fake, a, work, rep))
                    print(f"  rep {rep} check: {runs[-1].get('wall_s') or 0:.2f} s", flush=True)
        finally:
            fake.stop()
            for case in (*SYNC_CASES, "check"):
                drop(a.redis_url, f"{a.redis_prefix}{case}:")
    rows = summarize(runs, a.records)
    verdicts = evaluate(rows, a)
    print(f"rest_to_redis: {a.records:,} records over {a.events} events, {a.repeat} repetitions")
    print_summary(rows, verdicts, rows_label="records", correct_label="exact")
    if a.json is not None:
        a.json.write_text(json.dumps({"rows": rows, "verdicts": verdicts}, indent=2, default=str))
    if a.check and (any(met is not True for _, met, _ in verdicts)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
