"""`dlq show` keeps one meaningful stack per dead letter (issue 9 point 13): a record isolated
from a batch of 64 used to carry one chained block per bisection level (six), each attempt's
error chained to the previous one. Both the sqlite and the postgres sink are used."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import psycopg
import pytest

from tests.integration.conftest import pg_url  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id}}
    sinks:
      - {{type: sqlite, path: "{root}/sink.db", table: messages, columns: {{text: text}}}}
      - {{type: postgres, url: "{pg_url}", table: messages, columns: {{text: text}}}}
    batch: {{size: 64, max_wait: 20ms}}
    retry: {{attempts: 2, delay: 10ms}}
"""


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_dlq_show_has_one_stack_for_one_record(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path, pg_url=pg_url))
    table = "CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT CHECK (length(text) < 20))"
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        conn.execute(table)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(table)
    lines = [
        orjson.dumps({"id": f"m{i}", "text": "far too long for the table" if i == 41 else "hi"})
        for i in range(64)
    ]
    cli("enqueue", "--config", str(config), stdin=b"\n".join(lines).decode() + "\n")
    cli("run", "--once", str(config))

    (letter,) = orjson.loads(cli("dlq", "list", "--config", str(config), "--json").stdout)
    shown = orjson.loads(cli("dlq", "show", str(letter["id"]), "--config", str(config)).stdout)
    stack = shown["stack"]
    assert letter["record_key"] == "m41"
    assert letter["where"] == "sink:sqlite,sink:postgres"  # one letter, both sinks' reasons
    # One traceback per sink that refused it, nothing chained from earlier attempts.
    assert stack.count("Traceback (most recent call last)") == 2, stack
    assert "During handling of the above exception" not in stack
    assert "The above exception was the direct cause" not in stack
    assert "CHECK constraint failed" in stack and "CheckViolation" in stack
