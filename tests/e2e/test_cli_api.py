"""CLI parity: status, sync, stop, start and dlq against `syncworker run --api` over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.waiting import wait_for, wait_until_serving

TOKEN = "cli-parity-token"
CONFIG = """\
state: "sqlite:///{root}/state.db"
api: {{listen: "127.0.0.1:{port}", token: "${{SYNCWORKER_API_TOKEN}}"}}
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id, poll_interval: 50ms}}
    sinks:
      - {{type: sqlite, path: "{root}/sink.db", table: messages, columns: {{text: text}}}}
    batch: {{size: 50, max_wait: 20ms}}
    retry: {{attempts: 1}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYNCWORKER_API_TOKEN": TOKEN}
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    port = free_port()
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path, port=port))
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        conn.execute(
            "CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT CHECK (length(text) <= 10))"
        )
    worker = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "--log-level", "warning", "run", str(config)],
        env={**os.environ, "SYNCWORKER_API_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, worker)  # /ready: the pipeline runs, not only the API
        yield config, url
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=60)
        assert worker.returncode == 0, errors.decode()[-2000:]


def test_cli_drives_a_running_engine(engine: tuple[Path, str]) -> None:
    config, url = engine
    messages = [orjson.dumps({"id": f"k{i}", "text": "ok"}).decode() for i in range(5)]
    messages.append(orjson.dumps({"id": "long", "text": "much too long"}).decode())
    cli("enqueue", "--config", str(config), *messages)

    def processed_all() -> dict[str, Any] | None:
        status: dict[str, Any] = orjson.loads(cli("status", "--api", url, "--json").stdout)
        return status if status["pipelines"]["chat"]["totals"]["processed"] == 6 else None

    status = wait_for(processed_all, "six records processed")
    chat = status["pipelines"]["chat"]
    assert status["source"] == "engine" and chat["totals"]["dead_lettered"] == 1
    assert "chat" in cli("status", "--api", url).stdout

    assert cli("stop", "chat", "--api", url).stdout.strip() == "chat: stopped"
    assert cli("start", "chat", "--api", url).stdout.strip() in {"chat: starting", "chat: running"}
    run = orjson.loads(cli("sync", "chat", "--api", url).stdout)
    assert run["pipeline"] == "chat" and run["status"] == "success"

    [letter] = orjson.loads(cli("dlq", "list", "--api", url, "--json").stdout)
    assert letter["record_key"] == "long"
    shown = orjson.loads(cli("dlq", "show", str(letter["id"]), "--api", url).stdout)
    assert shown["data"]["text"] == "much too long"
    assert "requeued 1" in cli("dlq", "requeue", "--all", "--api", url).stdout
    # the table still refuses it: it comes back as a new dead letter, which we purge

    def dead_again() -> list[dict[str, Any]] | None:
        letters: list[dict[str, Any]] = orjson.loads(
            cli("dlq", "list", "--api", url, "--json").stdout
        )
        fresh = letters and letters[0]["status"] == "dead" and letters[0]["id"] != letter["id"]
        return letters if fresh else None

    letters = wait_for(dead_again, "the requeued record dead-lettered again")
    assert letters[0]["attempts"] == 2
    assert "purged 1" in cli("dlq", "purge", "--all", "--yes", "--api", url).stdout
    assert orjson.loads(cli("dlq", "list", "--api", url, "--json").stdout) == []


def test_api_errors_are_one_line(engine: tuple[Path, str]) -> None:
    _, url = engine
    wrong = cli("status", "--api", url, "--token", "wrong", check=False)
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "error: api GET /status: 401: missing or wrong API token"
    unknown = cli("stop", "nope", "--api", url, check=False)
    assert "404: no pipeline named 'nope'" in unknown.stderr
    down = cli("status", "--api", "http://127.0.0.1:9", check=False)
    assert down.returncode == 1 and "ConnectError" in down.stderr


def test_without_an_engine_start_needs_the_api(tmp_path: Path) -> None:
    result = cli("start", "chat", "--state", f"sqlite:///{tmp_path}/s.db", check=False)
    assert result.returncode == 1 and "start needs --api URL" in result.stderr
    assert not (tmp_path / "s.db").exists()


def test_dlq_errors_over_the_api_match_the_state_store(engine: tuple[Path, str]) -> None:
    config, url = engine
    cli(
        "enqueue",
        "--config",
        str(config),
        orjson.dumps({"id": "l", "text": "far too long"}).decode(),
    )
    letters: list[dict[str, object]] = wait_for(
        lambda: orjson.loads(cli("dlq", "list", "--api", url, "--json").stdout), "a dead letter"
    )
    letter_id = str(letters[0]["id"])
    purge = cli("dlq", "purge", "999", "--api", url, check=False)
    assert purge.returncode == 1 and purge.stderr.strip() == "error: no dead letter with id 999"
    cli("stop", "chat", "--api", url)  # so the requeued letter stays requeued
    assert "requeued 1" in cli("dlq", "requeue", letter_id, "--api", url).stdout
    again = cli("dlq", "requeue", letter_id, "--api", url, check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: dead letter {letter_id} is already requeued"


def test_status_from_the_state_store_and_from_the_engine_agree(engine: tuple[Path, str]) -> None:
    config, url = engine
    cli(
        "enqueue",
        "--config",
        str(config),
        orjson.dumps({"id": "l", "text": "far too long"}).decode(),
    )
    cli("stop", "chat", "--api", url)  # nothing changes between the two answers
    cli("sync", "chat", "--config", str(config))
    shared = ("last_run", "dead_letters", "last_error")
    stored = orjson.loads(cli("status", "--config", str(config), "--json").stdout)
    live = orjson.loads(cli("status", "--api", url, "--json").stdout)
    assert stored["source"] == "state store" and live["source"] == "engine"
    assert set(stored["pipelines"]) == set(live["pipelines"]) == {"chat"}
    for key in shared:
        assert stored["pipelines"]["chat"][key] == live["pipelines"]["chat"][key], key
    assert stored["pipelines"]["chat"]["dead_letters"] == {"dead": 1}
    assert stored["pipelines"]["chat"]["last_run"]["status"] == "success"
    stored_row = _table_row(cli("status", "--config", str(config)).stdout, "chat")
    live_row = _table_row(cli("status", "--api", url).stdout, "chat")
    # the same cells; the last error may be folded at another width beside more columns
    assert live_row[: len(stored_row) - 1] == stored_row[:-1]
    assert stored_row[-1].startswith(live_row[len(stored_row) - 1])
    assert live_row[len(stored_row) :][:1] == ["stopped"]


def _table_row(table: str, name: str) -> list[str]:
    [row] = [line for line in table.splitlines() if line.startswith(f"│ {name} ")]
    return [cell.strip() for cell in row.strip("│").split("│")]


def test_dlq_show_over_the_api_prints_numbers_beyond_a_double_exactly(
    engine: tuple[Path, str],
) -> None:
    config, url = engine
    big, dec = "123456789012345678901234567890", "0.1000000000000000000000001"
    cli(
        "enqueue",
        "--config",
        str(config),
        f'{{"id": "x", "text": "much too long", "big": {big}, "dec": {dec}}}',
    )

    def dead() -> list[dict[str, Any]] | None:
        letters: list[dict[str, Any]] = orjson.loads(
            cli("dlq", "list", "--api", url, "--json").stdout
        )
        return letters or None

    [letter] = wait_for(dead, "the record dead-lettered")
    shown = cli("dlq", "show", str(letter["id"]), "--api", url).stdout.replace(" ", "")
    assert f'"big":{big}' in shown and f'"dec":{dec}' in shown, shown
