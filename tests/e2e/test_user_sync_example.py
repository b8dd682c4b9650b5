"""Seed 004's example, `examples/user_sync/`, run as its README says: two fresh databases
(myusta_backend's and myusta_chatapp's shapes), `syncworker pg install`, `syncworker run`,
changes arriving, errors in sync_errors with the seed's monitoring queries, `syncworker
verify`, and the final statistics when it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.integration.conftest import PG_ADMIN_URL
from tests.integration.test_sync_errors import ERROR_SUMMARY, RECENT_ERRORS, UNRESOLVED
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "user_sync"
CONFIG = EXAMPLE / "syncworker.yaml"
API_PORT = 17451  # of this test's range


def sql(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Fresh source and chat databases with the example's schemas; dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    names = [f"sw_test_backend_{suffix}", f"sw_test_chat_{suffix}"]
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    source, chat = (f"{base}/{name}" for name in names)
    try:
        sql(source, (EXAMPLE / "schema" / "myusta_backend.sql").read_text())
        sql(chat, (EXAMPLE / "schema" / "myusta_chatapp.sql").read_text())
        yield source, chat
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def chat_users(chat: str) -> dict[str, tuple[Any, ...]]:
    rows = sql(chat, "SELECT id::text, first_name, full_name, source_system FROM users")
    return {row[0]: row[1:] for row in rows}


def test_the_user_sync_example_runs_as_documented(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    source, chat = databases
    env = {
        **os.environ,
        "SOURCE_DATABASE_URL": source,
        "CHAT_DATABASE_URL": chat,
        "SYNC_STATE_PATH": str(tmp_path / "state.db"),
        "SYNC_API_LISTEN": f"127.0.0.1:{API_PORT}",
        "SYNC_INTERVAL_MINUTES": "1",
        "SYNC_WINDOW_MULTIPLIER": "3",
    }
    ada, bob, gone = (str(uuid.uuid4()) for _ in range(3))
    sql(
        source,
        "INSERT INTO users (id, first_name, last_name, status) VALUES "
        "(%s, 'Ada', 'Lovelace', 'active'), (%s, 'Bob', NULL, 'active'), "
        "(%s, 'Old', 'Account', 'inactive')",
        (ada, bob, gone),
    )
    # The seed's "verify data quality (phone numbers)": the chat database refuses a bad one.
    sql(chat, "ALTER TABLE users ADD CONSTRAINT phone_digits CHECK (phone ~ '^[+0-9 ]*$')")
    cli(env, "pg", "install", "--config", str(CONFIG), "users")
    triggers = sql(source, "SELECT tgname FROM pg_trigger WHERE tgname = 'user_changes_trigger'")
    assert triggers == [("user_changes_trigger",)]
    assert sql(source, "SELECT proname FROM pg_proc WHERE proname = 'notify_user_changes'")

    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "syncworker.cli", "--log-format", "json", "run", str(CONFIG)],
            env=env,
            stdout=log,
            stderr=subprocess.PIPE,
        )
    try:
        # The initial snapshot: active users only, with the constant and the computed field.
        wait_for(lambda: len(chat_users(chat)) == 2, "the snapshot of the active users")
        assert chat_users(chat) == {
            ada: ("Ada", "Ada Lovelace", "myusta_backend"),
            bob: ("Bob", "Bob", "myusta_backend"),
        }
        # Real time: an update, a user who stops being active, a bad phone number.
        bad = str(uuid.uuid4())
        sql(source, "UPDATE users SET first_name = 'Augusta Ada' WHERE id = %s", (ada,))
        sql(source, "UPDATE users SET status = 'suspended' WHERE id = %s", (bob,))
        sql(
            source,
            "INSERT INTO users (id, first_name, phone) VALUES (%s, 'Bad', 'call me')",
            (bad,),
        )
        wait_for(
            lambda: chat_users(chat) == {ada: ("Augusta Ada", "Augusta Ada Lovelace",
                                               "myusta_backend")},
            "the update and the deactivation in the chat database",
        )  # fmt: skip
        health = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{API_PORT}/status", timeout=10).json(),
            "the control API",
            ignore=(httpx.HTTPError,),
        )
        checks = {c["name"]: c for c in health["pipelines"]["users"]["health"]["checks"]}
        assert checks["realtime"]["detail"] == "listener connected"
        assert checks["snapshot"]["detail"] == "snapshot done (2 rows)"
        versions = sql(chat, "SELECT source_updated_at, synced_at FROM users WHERE id = %s", (ada,))
        [(source_version,)] = sql(source, "SELECT updated_at FROM users WHERE id = %s", (ada,))
        assert versions[0][0] == source_version and versions[0][1] is not None

        # The refused record is in sync_errors, and the seed's three queries work as written.
        def refused() -> list[dict[str, Any]]:
            with psycopg.connect(chat, autocommit=True) as conn:
                cursor = conn.execute(UNRESOLVED)
                names = [c.name for c in cursor.description or []]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        [error] = wait_for(refused, "the refused record in sync_errors")
        assert (error["error_type"], error["record_key"]) == ("dead_letter", bad)
        assert "phone_digits" in error["error_message"]
        assert error["pipeline"] == "users" and error["resolved"] is False
        assert len(sql(chat, RECENT_ERRORS)) == 1
        assert [row[:2] for row in sql(chat, ERROR_SUMMARY)] == [("dead_letter", 1)]

        # `npm run verify`: exact, not counts only; the refused user is the one difference
        # (changed a moment ago: --ignore-recent 0, or verify would leave it for in flight).
        verify = cli(
            env, "verify", "users", "--config", str(CONFIG), "--json", "--ignore-recent", "0",
            check=False,
        )  # fmt: skip
        assert verify.returncode == 1, verify.stderr
        report = orjson.loads(verify.stdout)
        assert report["status"] == "inconsistent"
        assert report["missing"]["keys"] == [bad]
        assert (report["extra"]["count"], report["different"]["count"]) == (0, 0)
        assert (report["source"]["rows"], report["target"]["rows"]) == (2, 1)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert "Final statistics" in stderr.decode()
    events = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line[:1] == b"{"]
    events += [orjson.loads(line) for line in stderr.splitlines() if line[:1] == b"{"]
    [final] = [e for e in events if e["event"] == "final_statistics"]
    assert final["pipeline"] == "users" and final["dead_lettered"] == 1
    assert final["synced"] >= 4  # 2 snapshot rows, the update, the delete
