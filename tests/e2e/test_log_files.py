"""Seed 003's log files: `syncworker --log-dir DIR` (or SYNCWORKER_LOG_DIR) writes every
line to DIR/combined.log and errors to DIR/error.log, as JSON lines, besides the console."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.test_cli import cli
from tests.waiting import wait_for

TASKS = """\
import logging

import structlog

log = structlog.get_logger("jobtasks")


def speak(payload):
    log.info("handler_info", n=payload["n"])
    log.error("handler_error", n=payload["n"], password="hunter2")
    logging.getLogger("some.library").error("library error %s", payload["n"])
    log.debug("handler_debug", n=payload["n"])
"""

CONFIG = """\
state: "sqlite:///{root}/state.db"
jobs:
  backend: {{type: sqlite, path: "{root}/jobs.db"}}
  tasks:
    speak: {{handler: "jobtasks:speak"}}
  poll_interval: 100ms
  shutdown_grace: 1s
"""


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def events(path: Path) -> list[str]:
    return [line["event"] for line in lines(path)]


def test_run_writes_combined_and_error_logs(tmp_path: Path) -> None:
    (tmp_path / "jobtasks.py").write_text(TASKS)
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    cli("jobs", "enqueue", "speak", "--json", '{"n": 7}', "--config", str(config), cwd=tmp_path)
    logs = tmp_path / "logs"
    env = {**os.environ, "SYNCWORKER_LOG_DIR": str(logs)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "--log-level", "info", "run", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: "library error 7" in events(logs / "error.log"),
            "the handler's errors in error.log",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        console, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, console[-2000:]

    combined = lines(logs / "combined.log")
    errors = lines(logs / "error.log")
    names = [line["event"] for line in combined]
    assert {"engine_started", "worker_started", "handler_info", "handler_error"} <= set(names)
    assert "library error 7" in names and "engine_stopped" in names
    assert "handler_debug" not in names  # below the configured level
    assert [line["event"] for line in errors] == ["handler_error", "library error 7"]
    assert all(line["level"] == "error" for line in errors)
    error = next(line for line in combined if line["event"] == "handler_error")
    assert error["password"] == "***" and error["n"] == 7 and error["timestamp"]
    assert errors[0] == error  # the same line in both files
    assert "hunter2" not in (logs / "combined.log").read_text()
    # The console keeps its own format, with the same events.
    assert "handler_info" in console and "handler_error" in console
    assert not console.lstrip().startswith("{")


def test_a_log_dir_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("")
    result = cli("--log-dir", str(taken / "logs"), "validate", "x.yaml", check=False)
    assert result.returncode == 2
    assert "--log-dir / SYNCWORKER_LOG_DIR" in result.stderr
    assert "cannot write log files in" in result.stderr
