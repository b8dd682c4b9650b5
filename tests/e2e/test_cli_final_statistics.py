"""`syncworker run` prints each pipeline's final statistics when it stops (seed 004)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id}}
    sinks: [{{type: jsonl, path: "{root}/out"}}]
    batch: {{size: 50, max_wait: 20ms}}
    schedule: {{every: 1h}}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_once_prints_the_final_statistics(tmp_path: Path) -> None:
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    records = [orjson.dumps({"id": f"k{i}", "text": "t"}).decode() for i in range(7)]
    enqueued = cli("enqueue", "--config", str(config), *records)
    assert enqueued.returncode == 0, enqueued.stderr
    result = cli("--log-format", "json", "run", "--once", str(config))
    assert result.returncode == 0, result.stderr
    assert "Final statistics" in result.stderr
    [row] = [line for line in result.stderr.splitlines() if "│ chat" in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:5] == ["chat", "7", "7", "0", "0"]  # synced, processed, errors, dead letters
    assert cells[7] == "success"
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events += [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    [final] = [e for e in events if e["event"] == "final_statistics"]
    assert (final["pipeline"], final["synced"], final["errors"]) == ("chat", 7, 0)
