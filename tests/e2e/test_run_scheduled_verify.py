"""`syncworker run` starts the scheduled verify of a pipeline with a `verify:` section, and
/status shows its last result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_user_sync_example import cli, databases, sql  # noqa: F401
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

API_PORT = 17452  # of this suite's range

CONFIG = """\
state: "sqlite:///{root}/state.db"
api: {{listen: "127.0.0.1:{port}"}}
pipelines:
  users:
    source: {{type: pg_table, url: "{source}", table: users, where: "status = 'active'",
              poll_interval: 100ms}}
    sinks:
      - type: postgres
        url: "{chat}"
        table: users
        key_column: id
        columns: {{first_name: first_name, last_name: last_name}}
        version_column: source_updated_at
        version: updated_at
    verify: {{every: 1h, run_at_start: true, ignore_recent: 0s}}
"""


def status(port: int) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{port}/status", timeout=10).json()  # type: ignore[no-any-return]


def test_run_starts_the_scheduled_verify(databases: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    source, chat = databases
    config = tmp_path / "syncworker.yaml"
    config.write_text(CONFIG.format(root=tmp_path, port=API_PORT, source=source, chat=chat))
    for name in ("Ada", "Bob", "Cy"):
        sql(source, "INSERT INTO users (id, first_name) VALUES (%s, %s)", (str(uuid.uuid4()), name))
    env = dict(os.environ)
    cli(env, "pg", "install", "--config", str(config), "users")
    worker = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "run", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        verify = wait_for(
            lambda: (status(API_PORT)["pipelines"]["users"]["verify"] or {}).get("last"),
            "the first scheduled verify (run_at_start)",
            timeout_s=60,
            ignore=(httpx.HTTPError,),
        )
        assert verify["status"] == "consistent", verify
        assert (verify["source"]["rows"], verify["target"]["rows"]) == (3, 3)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr.decode()[-2000:]
