"""``syncworker demo``: the embedded pipeline end to end, with no service at all.

It writes a workspace (a config file, a SQLite queue, a target SQLite table), queues sample
chat messages on two streams ``in`` and ``out``, as seed 000's Redis lists would hold them,
including a few payloads that are not JSON (wrapped, as the seed does) and one message the
target table refuses (dead-lettered with its error), then runs the pipeline once with a
progress bar and prints what happened.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncworker.config import load_config
from syncworker.connectors.sqlite.queue import SqliteQueue
from syncworker.core.engine import Engine
from syncworker.core.pipeline import Pipeline
from syncworker.state import state_store_from_url

PIPELINE = "chat"
TEXT_LIMIT = 2000
CONFIG = """\
# The demo pipeline: a SQLite queue to JSONL day files and a SQLite table.
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id}}
    sinks:
      - {{type: jsonl, path: "{root}/out", file: "messages_{{stream}}_{{date}}.jsonl"}}
      - type: sqlite
        path: "{root}/messages.db"
        table: messages
        columns: {{stream: $stream, sender: from, recipient: to, text: text, sent_at: ts,
                   raw: raw}}
    batch: {{size: 500, max_wait: 100ms}}
    retry: {{attempts: 2, delay: 10ms}}
    schedule: {{manual: true}}
"""
# The target table has its own rule, as production tables do: texts are at most 2,000
# characters. One demo message breaks it, and is dead-lettered instead of blocking the rest.
TABLE = f"""
CREATE TABLE IF NOT EXISTS messages (
    key TEXT PRIMARY KEY, stream TEXT, sender TEXT, recipient TEXT,
    text TEXT CHECK (text IS NULL OR length(text) <= {TEXT_LIMIT}), sent_at REAL, raw TEXT
)"""
NOT_JSON = [
    b"PING gateway-7",
    b"<xml>delivery receipt</xml>",
    b"\xff\xfe broken bytes",
    b"status=ok;id=42",
    b"{truncated json",
]
WORDS = [
    "hello",
    "are",
    "you",
    "coming",
    "tonight",
    "the",
    "order",
    "shipped",
    "thanks",
    "see",
    "you",
    "at",
    "nine",
    "call",
    "me",
    "when",
    "you",
    "land",
    "sure",
    "thing",
    "on",
    "my",
    "way",
]


def sample_messages(count: int, seed: int = 7) -> dict[str, list[bytes]]:
    """``count`` messages split over streams ``in`` and ``out``, JSON encoded, plus a few
    that are not JSON and one whose text is longer than the target table allows."""
    rng = random.Random(seed)
    streams: dict[str, list[bytes]] = {"in": [], "out": []}
    base_ts = 1_767_225_600.0
    for n in range(count - len(NOT_JSON)):
        stream = "in" if n % 2 == 0 else "out"
        text = " ".join(rng.choices(WORDS, k=rng.randint(3, 14)))
        if n == count // 3:
            text = "spam " * (TEXT_LIMIT // 4)
        message = {
            "id": f"{stream}-{n:06d}",
            "from": f"+4470000{rng.randint(1000, 9999)}",
            "to": f"+4471111{rng.randint(1000, 9999)}",
            "text": text,
            "ts": base_ts + n,
        }
        streams[stream].append(orjson.dumps(message))
    for index, raw in enumerate(NOT_JSON):
        streams["in" if index % 2 == 0 else "out"].append(raw)
    return streams


def prepare(root: Path, count: int) -> Path:
    """A fresh workspace; returns the config file's path."""
    for name in ("queue.db", "state.db", "messages.db", "out"):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        for path in (target, *target.parent.glob(f"{name}-*")):
            if path.is_file():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "syncworker.yaml"
    config_path.write_text(CONFIG.format(root=root.resolve()))
    with sqlite3.connect(root / "messages.db") as conn:
        conn.execute(TABLE)
    with SqliteQueue(root / "queue.db") as queue:
        for stream, payloads in sample_messages(count).items():
            queue.enqueue(payloads, stream=stream)
    return config_path


async def run_demo(root: Path, count: int, *, progress: bool = True) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=160)
    config_path = prepare(root, count)
    console.print(f"[bold]syncworker demo[/]: {count:,} messages queued in {root / 'queue.db'}")
    config = load_config(config_path)
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state)
    pipeline = engine.pipeline(PIPELINE)
    started = time.monotonic()
    watcher = asyncio.create_task(_show_progress(pipeline, count, progress), name="demo-progress")
    try:
        [run] = await engine.run_once()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    elapsed_s = time.monotonic() - started
    await state.open()
    try:
        dead = Counter(d.stream for d in await state.dead_letters(PIPELINE, limit=count))
        letters = await state.dead_letters(PIPELINE, limit=3)
    finally:
        await state.close()
    _summary(console, root, config_path, run.streams, dead, elapsed_s)
    for letter in letters:
        console.print(
            f"dead letter {letter.id}: key {letter.key} ({letter.stream}): {letter.error}"
        )
    return 0 if run.status == "success" else 1


async def _show_progress(pipeline: Pipeline, total: int, enabled: bool) -> None:
    columns = (TextColumn("syncing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not enabled, transient=True) as bar:
        task = bar.add_task("sync", total=total)
        while True:
            await asyncio.sleep(0.1)
            backlog = await _backlog(pipeline)
            if backlog is not None:
                bar.update(task, completed=total - backlog)


async def _backlog(pipeline: Pipeline) -> int | None:
    try:
        return await pipeline.backlog()
    except Exception:  # the source is not open yet or already closed
        return None


def _summary(
    console: Console,
    root: Path,
    config_path: Path,
    streams: dict[str, int],
    dead: Counter[str],
    elapsed_s: float,
) -> None:
    table = Table(
        "stream", "processed", "dead-lettered", "duration", "records/s", title="demo summary"
    )
    for stream in sorted(streams):
        table.add_row(
            stream,
            f"{streams[stream]:,}",
            str(dead.get(stream, 0)),
            f"{elapsed_s:.2f} s",
            f"{streams[stream] / elapsed_s:,.0f}",
        )
    total = sum(streams.values())
    table.add_row(
        "all",
        f"{total:,}",
        str(sum(dead.values())),
        f"{elapsed_s:.2f} s",
        f"{total / elapsed_s:,.0f}",
        style="bold",
    )
    console.print(table)
    console.print(f"JSONL files:   {root / 'out'}")
    console.print(f"SQLite table:  {root / 'messages.db'} (table messages)")
    console.print(f"config:        {config_path}")
    console.print(f"dead letters:  syncworker dlq list --config {config_path}")
