"""Connectors issue 14 left unmeasured, each beside a hand-written loop doing the same work.

Four groups of cases; every case runs in fresh child processes (one per worker) that connect
first, say "ready", and are then started together, so the timed window is the drain only:

- `stream`: 2 Redis streams (`events:in` / `events:out`, field `data`) read by a consumer
  group -> JSON Lines (fsync per batch). `syncworker redis_stream -> jsonl` beside a
  hand-written redis-py loop: per stream in turn, XREADGROUP COUNT 1000, the payloads
  appended to the stream's file and fsynced, then XACK of their ids.
- `webhook`: Redis lists -> a local HTTP receiver (Starlette on uvicorn, a process of its
  own, that keeps every body). `syncworker redis_list -> webhook` (the seed body: one POST per
  stream per batch) beside a hand-written loop: per list in turn, a pipeline of 1000 LMOVEs
  into a processing list, the payloads parsed, one httpx POST of the same seed body, DEL of
  the processing list.
- `algolia`: Redis lists -> the fake Algolia of `tests/fakes/algolia.py` (a process of its
  own). `syncworker redis_list -> algolia` beside the same LMOVE loop sending each 1000 as one
  `batch` call of addObject with the client the sink uses (`algoliasearch`'s SearchClient).
  The fake does real work per object (it parses every number exactly and keeps every
  request): its own CPU over the window (/proc/<pid>/stat) is reported and subtracted from
  the wall time, as the receiver's is for the webhook (there for reference only).
- `lists`: Redis lists -> JSON Lines, 1, 2 and 3 worker processes draining the same lists
  (each syncworker worker has its own worker id, processing lists and files), beside 1, 2
  and 3 processes of the hand-written LMOVE loop (each its own processing lists and files).

Every syncworker batch is 2,000 records claimed from two sources (1,000 from each), so each
write, POST or Algolia call holds 1,000 messages, as in the loops. Measured over the window:
wall time, the workers' CPU, the Redis server's CPU (`INFO cpu`) and the receiver's or fake's
CPU. Cases are interleaved (A, B, A, B, ...), each `--repeat` times, under the benchmark lock.

What arrived is checked after every run, not taken from the runtime's counters: each message
exactly once in the JSONL files / at the receiver / among the fake's objects (objectID = id,
in its stream's index), and nothing left in the lists, pending in the group or undelivered.
Anything missing fails the run (exit 1). Target (issue 14): each syncworker case >= 0.5x the
msgs/s of its hand-written loop in the same run (medians; Algolia net of the fake's CPU);
`--check` exits 1 when one is missed. Only keys under the run's own prefix are ever deleted.

    python bench/connectors.py --check                  # every case, 3 runs (~5 minutes)
    python bench/connectors.py --case webhook --case algolia-sw --repeat 5
    python bench/connectors.py --smoke --lock ''        # the suite's smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))
from pipeline_embedded import cpu_s, peak_rss_mb  # noqa: E402
from runstats import add_medians, median_range, number  # noqa: E402
from table_sync import bench_lock  # noqa: E402

PER_SOURCE = 1_000  # messages per write / POST / Algolia call, in syncworker and the loops
BATCH = 2 * PER_SOURCE  # a syncworker batch, shared fairly by the two lists or streams
STREAMS = ("in", "out")
TARGET_OF_LOOP = 0.5
CHILD_TIMEOUT_S = 600
APP_ID, API_KEY = "BENCHAPP", "bench-admin-key-0123"
TS0 = 1767225600
DEFAULT_MESSAGES = {"stream": 400_000, "webhook": 200_000, "algolia": 80_000, "lists": 400_000}
SMOKE_MESSAGES = 4_000


@dataclass(frozen=True, slots=True)
class Case:
    group: str
    label: str
    syncworker: bool
    workers: int = 1
    loop: str | None = None  # the hand-written case a syncworker case is held against


CASES = {
    "stream-sw": Case("stream", "syncworker redis_stream -> jsonl", True, loop="stream-loop"),
    "stream-loop": Case("stream", "hand-written XREADGROUP/XACK loop -> jsonl", False),
    "webhook-sw": Case("webhook", "syncworker redis_list -> webhook", True, loop="webhook-loop"),
    "webhook-loop": Case("webhook", "hand-written LMOVE + httpx loop -> webhook", False),
    "algolia-sw": Case(
        "algolia", "syncworker redis_list -> algolia (fake)", True, loop="algolia-loop"
    ),
    "algolia-loop": Case(
        "algolia", "hand-written LMOVE + algoliasearch loop -> algolia (fake)", False
    ),
    **{
        f"lists-sw-{n}": Case(
            "lists", f"syncworker redis_list -> jsonl, {n} worker(s)", True, n, f"lists-loop-{n}"
        )
        for n in (1, 2, 3)
    },
    **{
        f"lists-loop-{n}": Case(
            "lists", f"hand-written LMOVE loop -> jsonl, {n} process(es)", False, n
        )
        for n in (1, 2, 3)
    },
}
GROUPS = sorted({case.group for case in CASES.values()})


def stream_of(n: int) -> str:
    return STREAMS[n % 2]


def message(n: int) -> bytes:
    stream = stream_of(n)
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


# -- Redis: the run's own keys only -------------------------------------------------------


def source_keys(prefix: str, group: str) -> dict[str, str]:
    kind = "events" if group == "stream" else "whatsapp"
    return {stream: f"{prefix}{kind}:{stream}" for stream in STREAMS}


def delete_own_keys(url: str, prefix: str) -> None:
    """Deletes the keys under this run's prefix, and nothing else (never FLUSHDB)."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


def fill_redis(url: str, prefix: str, group: str, count: int) -> None:
    """Messages 0..count-1 on their stream's list (LPUSH) or stream (XADD data=...)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = source_keys(prefix, group)
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 10_000):
        chunk = range(start, min(count, start + 10_000))
        for stream, key in keys.items():
            payloads = [message(n) for n in chunk if stream_of(n) == stream]
            if group == "stream":
                for payload in payloads:
                    pipe.xadd(key, {"data": payload})
            elif payloads:
                pipe.lpush(key, *payloads)
        pipe.execute()
    client.close()


def left_in_redis(url: str, prefix: str, group: str) -> int:
    """Items still in any list under the prefix, or entries of the streams not acknowledged
    (pending) or never delivered (the group's lag)."""
    import redis

    client = redis.Redis.from_url(url)
    left = 0
    if group == "stream":
        for key in source_keys(prefix, group).values():
            for info in client.xinfo_groups(key):
                left += int(info["pending"]) + int(info.get("lag") or 0)
    else:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            if client.type(key) == b"list":
                left += int(client.llen(key))
    client.close()
    return left


def redis_cpu_s(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    info = client.info("cpu")
    client.close()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# -- the receiver and the fake, each a process of its own ---------------------------------

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def serve(kind: str) -> None:
    """Serve the webhook receiver or the fake Algolia on a free port until SIGTERM; prints
    "ready <port>" once it listens. GET /bench/summary lists what arrived (after the runs)."""

    async def run() -> None:
        server = _receiver() if kind == "webhook" else _fake_algolia()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            print("ready", server.port, flush=True)
            await stop.wait()

    asyncio.run(run())


def _receiver() -> Any:
    """A webhook receiver that answers 200 and keeps every body; the bodies are only parsed
    when the summary is asked for, so the window holds the HTTP work alone."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from tests.fakes.local_server import LocalServer

    bodies: list[bytes] = []

    async def hook(request: Request) -> Response:
        bodies.append(await request.body())
        return Response(b'{"ok":true}', media_type="application/json")

    async def summary(request: Request) -> Response:
        received = []
        for body in bodies:
            post = orjson.loads(body)
            received += [[post["queueType"], m.get("id")] for m in post["messages"]]
        return JSONResponse({"requests": len(bodies), "received": received})

    class Receiver(LocalServer):
        label = "bench webhook receiver"

        def build_app(self) -> Starlette:
            return Starlette(
                routes=[
                    Route("/hook", hook, methods=["POST"]),
                    Route("/bench/summary", summary, methods=["GET"]),
                ]
            )

    return Receiver()


def _fake_algolia() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from tests.fakes.algolia import AlgoliaServer

    class BenchAlgolia(AlgoliaServer):
        def build_app(self) -> Starlette:
            app = super().build_app()
            app.router.routes.append(Route("/bench/summary", self._summary, methods=["GET"]))
            return app

        async def _summary(self, request: Request) -> Response:
            objects = {
                name: [[object_id, obj.get("id")] for object_id, obj in index.objects.items()]
                for name, index in self.indexes.items()
            }
            return JSONResponse({"requests": len(self.calls()), "objects": objects})

    return BenchAlgolia(app_id=APP_ID, api_key=API_KEY)


class Server:
    """The receiver or the fake in a child process, for one run."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise SystemExit(f"the {kind} server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def summary(self) -> dict[str, Any]:
        import httpx

        headers = {"X-Algolia-Application-Id": APP_ID, "X-Algolia-API-Key": API_KEY}
        answer = httpx.get(f"{self.url}/bench/summary", headers=headers, timeout=120)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the children: syncworker ----------------------------------------------------------------


def config_text(spec: dict[str, Any]) -> str:
    """The pipeline as a user would write it, for this child's case and worker."""
    root, url, prefix, group = spec["root"], spec["url"], spec["prefix"], spec["group"]
    keys = source_keys(prefix, group)
    mapping = f'{{in: "{keys["in"]}", out: "{keys["out"]}"}}'
    if group == "stream":
        source = f'{{type: redis_stream, url: "{url}", group: bench, streams: {mapping}, ' + (
            "key_field: id}"
        )
    else:
        source = f'{{type: redis_list, url: "{url}", processing_prefix: "{prefix}tmp:", ' + (
            f"lists: {mapping}, key_field: id}}"
        )
    sinks = {
        "stream": f'{{type: jsonl, path: "{root}/out/w{spec["worker"]}"}}',
        "lists": f'{{type: jsonl, path: "{root}/out/w{spec["worker"]}"}}',
        "webhook": f'{{type: webhook, url: "{spec["server"]}/hook"}}',
        "algolia": (
            f'{{type: algolia, app_id: {APP_ID}, api_key: {API_KEY}, hosts: ["{spec["server"]}"], '
            "indexes: {in: {index: bench_in}, out: {index: bench_out}}}"
        ),
    }
    return (
        f'state: "sqlite:///{root}/state-w{spec["worker"]}.db"\n'
        "pipelines:\n  bench:\n"
        f"    source: {source}\n"
        f"    sinks: [{sinks[group]}]\n"
        f"    batch: {{size: {BATCH}, max_wait: 10ms}}\n"
        "    schedule: {manual: true}\n"
    )


# The child's window: set when the parent starts every child at once.
_WINDOW: dict[str, float] = {}


def wait_for_go() -> None:
    """Tell the parent this child is connected, then block until it starts every child at
    once; the start is taken on the host's monotonic clock (the same in every process)."""
    print("ready", flush=True)
    sys.stdin.readline()
    _WINDOW["cpu0"], _WINDOW["start"] = cpu_s(), time.monotonic()


async def child_syncworker(spec: dict[str, Any]) -> int:
    from syncworker.config import parse_config
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "warning")
    config = parse_config(config_text(spec))
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state)
    await state.open()
    await engine.pipeline("bench").open()
    await state.close()
    wait_for_go()
    [run] = await engine.run_once()
    if run.status != "success":
        raise SystemExit(f"run {run.status}: {run}")
    return int(run.processed)


# -- the children: the hand-written loops ----------------------------------------------------


def append_synced(path: Path, data: bytes) -> None:
    """What a careful loop does: one append, then fsync (as the jsonl sink does)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def out_dir(spec: dict[str, Any]) -> Path:
    out = Path(spec["root"]) / "out" / f"w{spec['worker']}"
    out.mkdir(parents=True)
    return out


def child_stream_loop(spec: dict[str, Any]) -> int:
    """Per stream in turn: XREADGROUP COUNT 1000, append + fsync, XACK; until all are dry."""
    import redis

    client = redis.Redis.from_url(spec["url"])
    out = out_dir(spec)
    live = source_keys(spec["prefix"], "stream")
    for key in live.values():
        try:
            client.xgroup_create(key, "bench", "0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    consumer = f"hand-{os.getpid()}"
    moved = 0
    wait_for_go()
    while live:
        for stream, key in list(live.items()):
            reply: Any = client.xreadgroup("bench", consumer, {key: ">"}, count=PER_SOURCE)
            entries = reply[0][1] if reply else []
            if len(entries) < PER_SOURCE:
                del live[stream]
            if entries:
                lines = b"".join(fields[b"data"] + b"\n" for _, fields in entries)
                append_synced(out / f"messages_{stream}_hand.jsonl", lines)
                client.xack(key, "bench", *(entry_id for entry_id, _ in entries))
                moved += len(entries)
    client.close()
    return moved


def lmove_batches(spec: dict[str, Any]) -> Iterator[tuple[str, list[bytes]]]:
    """Seed 000's loop: per list in turn, a pipeline of 1000 LMOVEs into a processing list of
    this process, the batch handed to the caller, then DEL of the processing list (once the
    caller asks for the next one: it has written the batch). A list is done when a batch
    comes back short. Connects (before the window) on the first next()."""
    import redis

    client = redis.Redis.from_url(spec["url"])
    client.ping()
    live = source_keys(spec["prefix"], spec["group"])
    yield "", []  # connected
    while live:
        for stream, source in list(live.items()):
            processing = f"{spec['prefix']}tmp:hand:{stream}:{os.getpid()}"
            pipe = client.pipeline(transaction=False)
            for _ in range(PER_SOURCE):
                pipe.lmove(source, processing, "RIGHT", "LEFT")
            items = [item for item in pipe.execute() if item is not None]
            if len(items) < PER_SOURCE:
                del live[stream]
            if items:
                yield stream, items
                client.delete(processing)
    client.close()


def child_lists_loop(spec: dict[str, Any]) -> int:
    out = out_dir(spec)
    batches = lmove_batches(spec)
    next(batches)
    moved = 0
    wait_for_go()
    for stream, items in batches:
        append_synced(out / f"messages_{stream}_hand.jsonl", b"".join(i + b"\n" for i in items))
        moved += len(items)
    return moved


def child_webhook_loop(spec: dict[str, Any]) -> int:
    """The LMOVE loop POSTing each list's batch as the seed body with httpx."""
    import httpx

    client = httpx.Client(headers={"Content-Type": "application/json"}, timeout=10)
    url = f"{spec['server']}/hook"
    batches = lmove_batches(spec)
    next(batches)
    moved = 0
    wait_for_go()
    for stream, items in batches:
        body = {
            "messages": [orjson.loads(item) for item in items],
            "queueType": stream,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "count": len(items),
        }
        client.post(url, content=orjson.dumps(body)).raise_for_status()
        moved += len(items)
    client.close()
    return moved


async def child_algolia_loop(spec: dict[str, Any]) -> int:
    """The LMOVE loop sending each list's batch as one `batch` call of addObject, with the
    async SearchClient the sink uses. redis-py's blocking client is called from the coroutine:
    nothing else runs in this event loop, one step waits for the other as in the other loops."""
    from algoliasearch.http.hosts import Host, HostsCollection
    from algoliasearch.search.client import SearchClient
    from algoliasearch.search.config import SearchConfig

    config = SearchConfig(APP_ID, API_KEY)
    port = int(spec["server"].rsplit(":", 1)[1])
    config.hosts = HostsCollection([Host("127.0.0.1", scheme="http", port=port)])
    client = SearchClient.create_with_config(config=config)
    batches = lmove_batches(spec)
    next(batches)
    moved = 0
    wait_for_go()
    for stream, items in batches:
        requests = [
            {"action": "addObject", "body": {**obj, "objectID": obj["id"]}}
            for obj in map(orjson.loads, items)
        ]
        await client.batch(f"bench_{stream}", {"requests": requests})
        moved += len(items)
    await client.close()
    return moved


def child_main(spec: dict[str, Any]) -> None:
    case = CASES[spec["case"]]
    if case.syncworker:
        records = asyncio.run(child_syncworker(spec))
    elif case.group == "stream":
        records = child_stream_loop(spec)
    elif case.group == "lists":
        records = child_lists_loop(spec)
    elif case.group == "webhook":
        records = child_webhook_loop(spec)
    else:
        records = asyncio.run(child_algolia_loop(spec))
    end = time.monotonic()
    figures = {
        "records": records,
        "start": _WINDOW["start"],
        "end": end,
        "cpu_s": cpu_s() - _WINDOW["cpu0"],
        "rss": peak_rss_mb(),
    }
    print(json.dumps(figures), flush=True)


# -- one run ------------------------------------------------------------------------------


def start_children(
    name: str, root: Path, args: argparse.Namespace, server: str | None
) -> list[subprocess.Popen[str]]:
    case = CASES[name]
    children: list[subprocess.Popen[str]] = []
    for worker in range(case.workers):
        spec = {
            "case": name,
            "group": case.group,
            "root": str(root),
            "worker": worker,
            "url": args.redis_url,
            "prefix": args.redis_prefix,
            "server": server,
        }
        children.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
        )
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"{name}: a child did not start ({line!r}); see its stderr above")
    return children


def collect(name: str, children: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    found = []
    for child in children:
        out, _ = child.communicate(timeout=CHILD_TIMEOUT_S)
        if child.returncode != 0:
            raise SystemExit(f"{name}: a child exited {child.returncode}; see its stderr above")
        found.append(json.loads(out.strip().splitlines()[-1]))
    return found


def timed_drain(
    name: str, root: Path, args: argparse.Namespace, server: Server | None
) -> dict[str, Any]:
    """Start the case's children together; their figures and the servers' CPU over it."""
    children = start_children(name, root, args, server.url if server else None)
    redis0 = redis_cpu_s(args.redis_url)
    server0 = server.cpu_s() if server else 0.0
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    figures = collect(name, children)
    return {
        "seconds": max(f["end"] for f in figures) - min(f["start"] for f in figures),
        "records": sum(f["records"] for f in figures),
        "worker_cpu_s": sum(f["cpu_s"] for f in figures),
        "redis_cpu_s": redis_cpu_s(args.redis_url) - redis0,
        "server_cpu_s": server.cpu_s() - server0 if server else None,
        "peak_rss_mb": max(f["rss"] for f in figures),
        "records_per_worker": [f["records"] for f in figures],
    }


def jsonl_received(out: Path) -> list[tuple[str, Any]]:
    """(stream of the file, id) for every line of every worker's files."""
    received = []
    for path in sorted(out.glob("w*/*.jsonl")):
        stream = path.name.split("_")[1]  # messages_{stream}_{date or hand}.jsonl
        with path.open("rb") as handle:
            received += [(stream, orjson.loads(line).get("id")) for line in handle]
    return received


def server_received(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    if "received" in summary:  # the webhook receiver: [queueType, id] per message
        return [(stream, message_id) for stream, message_id in summary["received"]]
    received = []  # the fake Algolia: [objectID, id] per object of index bench_<stream>
    for index, objects in summary["objects"].items():
        stream = index.removeprefix("bench_")
        received += [(stream, oid if oid == mid else f"{oid}!={mid}") for oid, mid in objects]
    return received


def tally(received: list[tuple[str, Any]], count: int) -> dict[str, int]:
    """Messages that arrived (in their stream, under their id), repeats and strays."""
    seen = Counter(received)
    expected = {(stream_of(n), f"{stream_of(n)}-{n}") for n in range(count)}
    arrived = sum(1 for item in expected if item in seen)
    repeats = sum(n - 1 for item, n in seen.items() if item in expected)
    strays = sum(n for item, n in seen.items() if item not in expected)
    return {"arrived": arrived, "repeats": repeats, "strays": strays}


def run_case(name: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    case = CASES[name]
    delete_own_keys(args.redis_url, args.redis_prefix)
    fill_redis(args.redis_url, args.redis_prefix, case.group, count)
    server = Server(case.group) if case.group in ("webhook", "algolia") else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-connectors-") as tmp:
            figures = timed_drain(name, Path(tmp), args, server)
            if server is None:
                received = jsonl_received(Path(tmp) / "out")
            else:
                received = server_received(server.summary())
        left = left_in_redis(args.redis_url, args.redis_prefix, case.group)
    finally:
        if server is not None:
            server.stop()
        delete_own_keys(args.redis_url, args.redis_prefix)
    return run_figures(name, count, figures, tally(received, count), left)


def per_msg_us(seconds: float | None, count: int) -> float | None:
    return None if seconds is None else seconds / count * 1e6


def run_figures(
    name: str, count: int, figures: dict[str, Any], got: dict[str, int], left: int
) -> dict[str, Any]:
    problems = []
    if got["arrived"] != count:
        problems.append(f"{count - got['arrived']} of {count} messages missing at the target")
    if got["repeats"] or got["strays"]:
        problems.append(f"{got['repeats']} repeats, {got['strays']} strays at the target")
    if left:
        problems.append(f"{left} items left in Redis (lists, pending or undelivered)")
    if figures["records"] != count:
        problems.append(f"the workers counted {figures['records']} records, not {count}")
    seconds, server_cpu = figures["seconds"], figures["server_cpu_s"]
    # The receiver's or fake's CPU is on the critical path (each call waits for its answer):
    # taken off the wall time, what is left is the worker's side of the exchange.
    net_seconds = None if server_cpu is None else max(seconds - server_cpu, 1e-9)
    return {
        "case": name,
        "label": CASES[name].label,
        "messages": count,
        "workers": CASES[name].workers,
        "seconds": seconds,
        "msgs_per_s": count / seconds,
        "net_msgs_per_s": None if net_seconds is None else count / net_seconds,
        "worker_cpu_us_per_msg": per_msg_us(figures["worker_cpu_s"], count),
        "redis_cpu_us_per_msg": per_msg_us(figures["redis_cpu_s"], count),
        "server_cpu_us_per_msg": per_msg_us(server_cpu, count),
        "peak_rss_mb": figures["peak_rss_mb"],
        "runtime_records": figures["records"],
        "records_per_worker": figures["records_per_worker"],
        **got,
        "missing": count - got["arrived"],
        "left_in_redis": left,
        "problems": problems,
    }


# -- summary ------------------------------------------------------------------------------

MEDIAN_KEYS = (
    "msgs_per_s",
    "net_msgs_per_s",
    "seconds",
    "worker_cpu_us_per_msg",
    "redis_cpu_us_per_msg",
    "server_cpu_us_per_msg",
    "peak_rss_mb",
)
COUNT_KEYS = ("arrived", "missing", "repeats", "strays", "left_in_redis")


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: medians with min-max over the runs; counts summed, so nothing missing hides
    behind a median."""
    summary = []
    for name in dict.fromkeys(r["case"] for r in runs):
        mine = [r for r in runs if r["case"] == name]
        row: dict[str, Any] = {
            "case": name,
            "label": mine[0]["label"],
            "runs": len(mine),
            "messages": mine[0]["messages"],
            "workers": mine[0]["workers"],
        }
        for key in COUNT_KEYS:
            row[key] = sum(r[key] for r in mine)
        row["problems"] = [p for r in mine for p in r["problems"]]
        add_medians(row, mine, MEDIAN_KEYS)
        row["all_runs"] = mine
        summary.append(row)
    return summary


def _of_loop(row: dict[str, Any], by: dict[str, Any], key: str) -> str:
    loop = CASES[row["case"]].loop
    if loop is None or loop not in by or row[key] is None:
        return "-"
    return f"{row[key] / by[loop][key]:.2f}x"


def print_summary(summary: list[dict[str, Any]]) -> None:
    by = {r["case"]: r for r in summary}
    print(
        "| case | runs | msgs | msgs/s (min-max) | s (min-max) | of its loop "
        "| msgs/s net of server CPU | of its loop (net) | workers' CPU us/msg "
        "| Redis CPU us/msg | receiver/fake CPU us/msg | peak RSS MB | arrived |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        arrived = f"{r['arrived']:,} of {r['runs'] * r['messages']:,}"
        if r["repeats"] or r["strays"]:
            arrived += f" (+{r['repeats']} repeats, {r['strays']} strays)"
        print(
            f"| {r['label']} | {r['runs']} | {r['messages']:,} "
            f"| {median_range(r, 'msgs_per_s', ',.0f')} "
            f"| {median_range(r, 'seconds', '.2f')} | {_of_loop(r, by, 'msgs_per_s')} "
            f"| {median_range(r, 'net_msgs_per_s', ',.0f')} | {_of_loop(r, by, 'net_msgs_per_s')} "
            f"| {number(r['worker_cpu_us_per_msg'], '.2f')} "
            f"| {number(r['redis_cpu_us_per_msg'], '.2f')} "
            f"| {number(r['server_cpu_us_per_msg'], '.2f')} "
            f"| {median_range(r, 'peak_rss_mb', '.0f')} | {arrived} |"
        )


def targets(summary: list[dict[str, Any]], wanted: list[str]) -> list[tuple[str, bool]]:
    """(target, held): each syncworker case run >= TARGET_OF_LOOP x its loop (Algolia: net of
    the fake's CPU), and everything arrived."""
    by = {r["case"]: r for r in summary}
    found = []
    for name in wanted:
        case = CASES[name]
        if case.loop is None:
            continue
        key = "net_msgs_per_s" if case.group == "algolia" else "msgs_per_s"
        what = f"{case.label} >= {TARGET_OF_LOOP:g}x {CASES[case.loop].label}"
        if key == "net_msgs_per_s":
            what += " (net of the fake's CPU)"
        if name not in by or case.loop not in by:
            found.append((f"{what}: not evaluated (run both cases)", False))
            continue
        mine, loop = by[name][key], by[case.loop][key]
        ratio = mine / loop
        found.append(
            (f"{what}: {ratio:.2f}x ({mine:,.0f} vs {loop:,.0f} msgs/s)", ratio >= TARGET_OF_LOOP)
        )
    problems = [f"{r['case']}: {p}" for r in summary for p in r["problems"]]
    found.append(
        (
            "every message arrived once, nothing left: " + ("; ".join(problems) or "yes"),
            not problems,
        )
    )
    return found


def print_scaling(summary: list[dict[str, Any]]) -> None:
    by = {r["case"]: r for r in summary}
    for kind in ("sw", "loop"):
        one = by.get(f"lists-{kind}-1")
        for n in (2, 3):
            many = by.get(f"lists-{kind}-{n}")
            if one and many:
                print(
                    f"  lists-{kind}: {n} processes {many['msgs_per_s']:,.0f} msgs/s = "
                    f"{many['msgs_per_s'] / one['msgs_per_s']:.2f}x one"
                )


def selected(choices: list[str] | None) -> list[str]:
    """Case names for --case values (a case or a group), in the order of CASES."""
    if not choices:
        return list(CASES)
    return [n for n, c in CASES.items() if n in choices or c.group in choices]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, help=f"messages per run (default per group: {DEFAULT_MESSAGES})"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians kept)")
    parser.add_argument(
        "--case", action="append", choices=[*CASES, *GROUPS], help="a case or group; default all"
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_MESSAGES:,} messages, 1 run (the suite)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--redis-prefix", help="prefix of every key made (default swbench:conn:<random>:)"
    )
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=["webhook", "algolia"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.redis_prefix = args.redis_prefix or f"swbench:conn:{uuid.uuid4().hex[:8]}:"
    if args.smoke:
        args.messages = args.messages or SMOKE_MESSAGES
        args.repeat = 1
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return 0
    if args.serve:
        serve(args.serve)
        return 0
    wanted = selected(args.case)
    runs = []
    try:
        for repeat in range(args.repeat):
            for name in wanted:  # interleaved
                count = args.messages or DEFAULT_MESSAGES[CASES[name].group]
                with bench_lock(args.lock):
                    run = run_case(name, count, args)
                runs.append(run)
                print(
                    f"run {repeat + 1}/{args.repeat} {name}: {run['msgs_per_s']:,.0f} msgs/s, "
                    f"{run['missing']} missing" + "".join(f"; {p}" for p in run["problems"]),
                    flush=True,
                )
    finally:
        delete_own_keys(args.redis_url, args.redis_prefix)
    summary = summarize(runs)
    print_summary(summary)
    print(f"(batches of {BATCH:,} records from two sources, {PER_SOURCE:,} per write or call)")
    print_scaling(summary)
    held = targets(summary, wanted)
    for target, ok in held:
        print(f"  {'held' if ok else 'MISSED'}: {target}")
    if args.json:
        args.json.write_text(json.dumps({"rows": summary, "targets": held}, indent=2))
    incomplete = any(r["problems"] for r in summary)
    return 1 if incomplete or (args.check and not all(ok for _, ok in held)) else 0


if __name__ == "__main__":
    sys.exit(main())
