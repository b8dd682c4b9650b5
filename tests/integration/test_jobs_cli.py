"""The ``jobs:`` section as a user runs it: `syncworker run` works the jobs, the `syncworker
jobs` commands enqueue, inspect and requeue them, on each real backend."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.e2e.test_cli import cli
from tests.integration.conftest import REDIS_URL
from tests.waiting import wait_for

TASKS = """\
async def hello(payload, ctx):
    await ctx.progress({"step": 1})
    return {"echo": payload}


def boom(payload):
    raise RuntimeError("refused by the handler")
"""

CONFIG = """\
state: "sqlite:///{root}/state.db"
jobs:
  backend: {backend}
  queues:
    default: {{concurrency: 2, timeout: 30s}}
  tasks:
    hello: {{handler: "jobtasks:hello"}}
    boom: {{handler: "jobtasks:boom", retries: 1, backoff: {{base: 50ms, jitter: 0}}}}
  cron:
    nightly: {{schedule: "0 2 * * *", task: hello, timezone: Europe/Paris}}
  poll_interval: 200ms
  shutdown_grace: 2s
"""


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "sqlite":
        backend = f'{{type: sqlite, path: "{tmp_path}/jobs.db"}}'
    elif request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        backend = f'{{type: postgres, url: "{url}"}}'
    else:
        prefix = request.getfixturevalue("redis_prefix")
        backend = f'{{type: redis, url: "{REDIS_URL}", prefix: "{prefix}jobs"}}'
    (tmp_path / "jobtasks.py").write_text(TASKS)
    path = tmp_path / "syncworker.yaml"
    path.write_text(CONFIG.format(root=tmp_path, backend=backend))
    return path


def jobs(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cli("jobs", *args, "--config", str(config), check=check, cwd=config.parent)


def counts(config: Path) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = orjson.loads(jobs(config, "counts", "--json").stdout)
    return result


def test_run_works_the_jobs_and_the_cli_inspects_and_requeues(config: Path) -> None:
    assert "2 task(s), 1 cron entries" in cli("validate", str(config)).stdout
    hello_id = jobs(config, "enqueue", "hello", "--json", '{"n": 1.50}').stdout.strip()
    boom_id = jobs(config, "enqueue", "boom", "--json", "{}").stdout.strip()
    assert counts(config)["default"]["queued"] == 2

    engine = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "run", str(config)],
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: (done := counts(config)["default"])["completed"] == 1 and done["dead"] == 1,
            "hello completed and boom dead",
            timeout_s=60,
            interval_s=0.2,
        )
    finally:
        engine.send_signal(signal.SIGTERM)
        output, _ = engine.communicate(timeout=60)
    assert engine.returncode == 0, output
    assert "worker_stopped" in output

    hello = orjson.loads(jobs(config, "show", hello_id).stdout)
    assert hello["state"] == "completed"
    assert hello["result"] == {"echo": {"n": 1.50}}
    assert hello["progress"] == {"step": 1}
    boom = orjson.loads(jobs(config, "show", boom_id).stdout)
    assert (boom["state"], boom["attempts"]) == ("dead", 2)
    assert boom["error"] == "RuntimeError: refused by the handler"
    assert "jobtasks.py" in boom["stack"]

    dead = orjson.loads(jobs(config, "list", "--state", "dead", "--json").stdout)
    assert [job["id"] for job in dead] == [boom_id]
    assert jobs(config, "requeue", "--all-dead").stdout.strip() == "requeued 1 job(s)"
    assert counts(config)["default"] == {
        "delayed": 0,
        "queued": 1,
        "active": 0,
        "completed": 1,
        "dead": 0,
    }

    cron = orjson.loads(jobs(config, "cron", "list", "--json").stdout)
    assert [(entry["name"], entry["timezone"]) for entry in cron] == [("nightly", "Europe/Paris")]
    assert "T02:00:00+01:00" in cron[0]["next_run"]  # 02:00 in Paris, winter time


def test_refusals_are_one_line_naming_the_file(config: Path) -> None:
    unknown = jobs(config, "enqueue", "nope", check=False)
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[-1] == (
        f"config error: {config}: unknown task 'nope' (registered: boom, hello)"
    )
    missing = jobs(config, "show", "999999", check=False)
    assert missing.returncode == 1
    assert "no job with id '999999'" in missing.stderr
    bad_json = jobs(config, "enqueue", "hello", "--json", "{oops", check=False)
    assert bad_json.returncode == 2
    assert "--json" in bad_json.stderr
