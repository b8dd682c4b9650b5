"""`syncworker run` killed with SIGKILL mid-stream and restarted loses nothing.

100,000 messages wait in a SQLite queue; the worker is killed at random moments while it
writes (each kill lands after a random share of the work is done), restarted each time, and
at the end every message is in the SQLite sink exactly once by key and in the JSONL files at
least once, with no torn line. ``make chaos`` runs more rounds (SYNCWORKER_CHAOS_ROUNDS).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from syncworker.connectors.sqlite.queue import SqliteQueue
from tests.waiting import wait_for

MESSAGES = 100_000
KILLS = int(os.environ.get("SYNCWORKER_CHAOS_ROUNDS", "3"))
CONFIG = """\
state: "sqlite:///{root}/state.db"
shutdown_timeout: 10s
pipelines:
  crash:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id, lease: 60s}}
    sinks:
      - {{type: jsonl, path: "{root}/out"}}
      - {{type: sqlite, path: "{root}/sink.db", table: messages}}
    batch: {{size: 500, max_wait: 50ms, max_in_flight: 2}}
"""


def sink_count(root: Path) -> int:
    try:
        with sqlite3.connect(root / "sink.db", timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:  # the worker has not created the table yet
        return 0


def start(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "syncworker.cli", "--log-level", "warning", "run", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    with SqliteQueue(tmp_path / "queue.db") as queue:
        for stream in ("in", "out"):
            queue.enqueue(
                (
                    orjson.dumps({"id": f"{stream}-{n}", "text": "x" * 40})
                    for n in range(MESSAGES // 2)
                ),
                stream=stream,
            )
    rng = random.Random(int(os.environ.get("SYNCWORKER_CHAOS_SEED", time.time_ns())))
    thresholds = sorted(rng.sample(range(5_000, MESSAGES - 5_000), KILLS))
    log_path = tmp_path / "worker.log"
    for threshold in thresholds:
        worker = start(config, log_path)
        wait_for(
            lambda t=threshold, w=worker: sink_count(tmp_path) >= t or w.poll() is not None,
            f"{threshold} rows",
            timeout_s=120,
        )
        assert worker.poll() is None, log_path.read_text()[-2000:]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    worker = start(config, log_path)
    with SqliteQueue(tmp_path / "queue.db") as queue:
        wait_for(
            lambda: queue.backlog() == 0 and _queue_rows(tmp_path) == 0,
            "the queue to drain",
            timeout_s=180,
        )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, log_path.read_text()[-2000:]

    expected = {f"{s}-{n}" for s in ("in", "out") for n in range(MESSAGES // 2)}
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        keys = [row[0] for row in conn.execute("SELECT key FROM messages")]
    assert len(keys) == len(set(keys)) == MESSAGES
    assert set(keys) == expected

    seen: set[str] = set()
    lines = 0
    for path in sorted((tmp_path / "out").glob("*.jsonl")):
        content = path.read_bytes()
        assert content.endswith(b"\n"), f"{path.name} ends with a torn line"
        for line in content.splitlines():
            seen.add(orjson.loads(line)["id"])  # a torn line would not parse
            lines += 1
    assert seen == expected
    assert lines >= MESSAGES


def _queue_rows(root: Path) -> int:
    with sqlite3.connect(root / "queue.db", timeout=10) as conn:
        return int(conn.execute("SELECT count(*) FROM syncworker_queue").fetchone()[0])
