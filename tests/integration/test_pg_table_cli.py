"""``syncworker pg install | status | uninstall`` for a ``pg_table`` source, from a config's
pipeline or from options, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from syncworker.cli.progress import snapshot_figures
from tests.conformance.harness import REPO, child_env
from tests.integration.pg_table_support import setup_users, sql, target_url

__all__ = ["target_url"]

pytestmark = pytest.mark.integration


def cli(*args: str, code: int = 0) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


async def test_install_status_and_uninstall_from_a_config_pipeline(
    pg_url: str, tmp_path: Path
) -> None:
    await sql(pg_url, "CREATE TABLE users (id uuid PRIMARY KEY, name text, updated_at timestamptz)")
    config = tmp_path / "sync.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            pipelines:
              users:
                source: {{type: pg_table, url: "{pg_url}", table: users,
                          trigger: user_changes_trigger, function: notify_user_changes}}
                sinks: [{{type: jsonl, path: "{tmp_path}"}}]
            """
        )
    )
    assert "CREATE OR REPLACE TRIGGER" in cli("pg", "install", "--config", str(config), "--print")
    for _ in range(2):  # running it again is harmless
        out = cli("pg", "install", "--config", str(config), "users")
        assert "trigger 'user_changes_trigger'" in out and "'notify_user_changes'" in out
    await sql(pg_url, "INSERT INTO users VALUES (gen_random_uuid(), 'Test', now())")
    found = orjson.loads(cli("pg", "status", "--config", str(config), "users", "--json"))
    assert (found["trigger"], found["function"], found["backlog"]) == (True, True, 1)
    human = cli("pg", "status", "--config", str(config), "users")
    assert "user_changes_trigger: present" in human and "1 change(s) waiting" in human
    assert "removed; the change log is kept" in cli("pg", "uninstall", "--config", str(config))
    missing = cli("pg", "status", "--config", str(config), code=1)
    assert (
        "user_changes_trigger: MISSING" in missing and "notify_user_changes(): MISSING" in missing
    )


async def test_install_from_options_and_errors_name_the_setting(pg_url: str) -> None:
    await sql(pg_url, "CREATE TABLE accounts (code text PRIMARY KEY, owner text)")
    target = ("--url", pg_url, "--table", "accounts")
    out = cli("pg", "install", *target, "--key", "code")
    assert "change log 'syncworker_accounts_changes'" in out
    await sql(pg_url, "UPDATE accounts SET owner = 'x'")  # no rows: nothing logged
    assert '"backlog": 0' in cli("pg", "status", *target, "--key", "code", "--json")
    refused = cli("pg", "install", *target, "--key", "nope", code=2)
    assert "no column 'nope'" in refused and "Traceback" not in refused
    assert "--table" in cli("pg", "status", "--url", pg_url, "--key", "code", code=2)
    removed = cli("pg", "uninstall", *target, "--key", "code", "--drop-log")
    assert "and its change log" in removed


def test_snapshot_figures_read_the_source_status() -> None:
    def status(**snapshot: object) -> dict[str, object]:
        return {"source_status": {"snapshot": snapshot}}

    assert snapshot_figures({"source_status": None}) is None
    assert snapshot_figures({}) is None
    # A never-analyzed table: the estimate is below what was read already.
    assert snapshot_figures(status(done=False, rows=40, rows_read=60, rows_estimate=2)) == (
        40,
        60,
        False,
    )
    assert snapshot_figures(status(done=False, rows=0, rows_read=0, rows_estimate=None)) == (
        0,
        None,
        False,
    )
    finished = status(done=True, rows=250, rows_read=250, rows_estimate=300, finished_at=100.0)
    assert snapshot_figures(finished, since=99.0) == (250, 250, True)
    assert snapshot_figures(finished, since=101.0) is None  # done before this run


def in_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout and stderr; its exit code and output."""
    primary, secondary = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        cwd=REPO,
        env={**child_env(), "COLUMNS": "120"},
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    return child.wait(timeout=120), output.decode(errors="replace")


async def test_run_once_draws_the_snapshot_progress_on_a_terminal(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    await setup_users(pg_url, target_url, rows=300)
    config = tmp_path / "sync.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            state: sqlite:///{tmp_path}/state.db
            pipelines:
              users:
                source: {{type: pg_table, url: "{pg_url}", table: users, snapshot_page_rows: 50}}
                sinks:
                  - {{type: postgres, url: "{target_url}", table: users, key_column: id,
                     columns: {{name: name, status: status, score: score}}}}
            """
        )
    )
    code, output = await asyncio.to_thread(in_terminal, "run", "--once", str(config))
    assert code == 0, output
    assert "users: snapshot" in output and "300/300" in output, output
    piped = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "syncworker.cli", "run", "--once", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0 and "snapshot" not in piped.stdout  # no bar when piped
