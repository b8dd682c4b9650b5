"""``syncworker pg install | status | uninstall`` for a ``pg_table`` source, from a config's
pipeline or from options, against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from tests.integration.pg_table_support import sql

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
