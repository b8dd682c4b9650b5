"""`syncworker run --once` under SIGTERM/SIGINT, through the real command: it stops claiming,
finishes or returns its in-flight batch, logs why, and exits 0 (it used to die with 143 and
no line). Nothing is lost: what was not written is still queued."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from syncworker.connectors.sqlite.queue import SqliteQueue

MESSAGES = 3_000
CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id}}
    sinks: [{{type: jsonl, path: "{root}/out", file: "out.jsonl"}}]
    batch: {{size: 1, max_wait: 1ms, max_in_flight: 1}}
"""


def written(root: Path) -> list[str]:
    path = root / "out" / "out.jsonl"
    if not path.exists():
        return []
    # Read while the worker appends: a last line without its newline is still being written.
    return [orjson.loads(line)["id"] for line in path.read_bytes().split(b"\n")[:-1]]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.timeout(120)
def test_run_once_stops_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    with SqliteQueue(tmp_path / "queue.db") as queue:
        queue.enqueue([{"id": f"m{n}"} for n in range(MESSAGES)], stream="in")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncworker.cli",
            "--log-format",
            "json",
            "run",
            "--once",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while len(written(tmp_path)) < 20:
            assert worker.poll() is None, "the run ended before the signal"
            assert time.monotonic() < deadline, "nothing written"
            time.sleep(0.02)
        worker.send_signal(signum)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    events = [orjson.loads(line) for line in output.splitlines() if line.startswith(b"{")]
    names = [e["event"] for e in events]
    assert worker.returncode == 0, output.decode()[-3000:]
    assert "signal_received" in names and "engine_stopped" in names
    done = written(tmp_path)
    with SqliteQueue(tmp_path / "queue.db") as queue:
        left = queue.backlog()
    assert len(done) < MESSAGES, "the signal came after the run ended: nothing to test"
    assert len(done) + left == MESSAGES and len(set(done)) == len(done)  # nothing lost
