"""The seed's curl commands, as examples/zoho_to_redis/README.md lists them, run unchanged
(the port aside: the test's own) with curl against ``syncworker run`` on the example's
config, a fake Zoho Creator and the real Redis, without an API token (localhost only)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from tests.conformance.harness import PYTHON, child_env
from tests.fakes.zoho_creator import ZohoCreatorServer
from tests.integration import zoho_redis_support as support
from tests.integration.zoho_redis_support import (
    EVENTS,
    EXAMPLE,
    environ,
    seed_events,
    seed_registrations,
)
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(180)

h3_prefix = support.h3_prefix  # fixtures
rclient = support.rclient

PORT = 17301
SEED_EVENT = "4433256000013547003"  # the event id of the seed's force-sync example
README = EXAMPLE.with_name("README.md")


def seed_commands() -> list[str]:
    """The curl lines of the README's "The seed's commands" block."""
    text = README.read_text()
    block = text.split("## The seed's commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("curl")]


async def curl(command: str) -> tuple[int, Any]:
    """Run one README command with the test's port; its status code and JSON body."""
    line = command.replace("localhost:3000", f"localhost:{PORT}")
    args = [*re.findall(r'"[^"]*"|\S+', line)]
    args = [a.strip('"') for a in args]
    args[1:1] = ["-sS", "-w", "\n%{http_code}"]
    done = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body)


async def _answers() -> bool:
    try:
        code, body = await curl("curl http://localhost:3000/api/sync-worker/status")
    except (AssertionError, json.JSONDecodeError):
        return False
    return code == 200 and body["last_sync_time"] is not None


async def test_the_seed_commands_run_unchanged(
    tmp_path: Path, h3_prefix: str, rclient: aredis.Redis
) -> None:
    commands = seed_commands()
    assert len(commands) == 5 and all("localhost:3000/api/sync-worker/" in c for c in commands)
    async with ZohoCreatorServer() as zoho:
        events = seed_events(zoho, 4)
        zoho.add(EVENTS, {"ID": SEED_EVENT, "Event_Name": "The seed's event"})
        events.append(SEED_EVENT)
        seed_registrations(zoho, events, 150)
        env = environ(
            zoho,
            h3_prefix,
            tmp_path / "state.db",
            SYNC_API_LISTEN=f"127.0.0.1:{PORT}",
            ENABLE_AUTO_SYNC="true",
            SYNC_INTERVAL_MS="3600000",
            LOG_LEVEL="INFO",
            REDIS_LOG_LEVEL="WARN",
        )
        env.pop("SYNCWORKER_API_TOKEN", None)
        log = (tmp_path / "engine.log").open("wb")
        engine = subprocess.Popen(  # noqa: ASYNC220 - started once, waited in a thread
            [PYTHON, "-m", "syncworker.cli", "run", str(EXAMPLE)],
            env={**{k: v for k, v in child_env().items() if k != "SYNCWORKER_API_TOKEN"}, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            await eventually(_answers, "the engine's first sync", timeout_s=60)
            answers = {}
            for command in commands:
                code, body = await curl(command)
                assert code == 200, (command, body)
                answers[command.rsplit("/", 1)[1]] = body
            assert answers["start"]["success"] is True
            status = answers["status"]
            assert status["is_running"] is True
            assert set(status["stats"]) >= {
                "total_syncs",
                "successful_syncs",
                "failed_syncs",
                "records_added",
                "records_updated",
                "records_removed",
                "last_sync_duration",
            }
            assert status["stats"]["records_added"] == 150
            forced = answers[SEED_EVENT]["results"]["zoho_registrations"]
            assert forced["mode"] == "force" and forced["key"] == SEED_EVENT
            assert forced["processed"] == 30
            check = answers["discrepancy-check"]
            assert check["success"] is True and check["total_discrepancies"] == 0
            assert answers["full-sync"]["results"]["zoho_registrations"]["processed"] == 150

            # A registration lost from Redis is found by id, and repaired.
            [lost] = [k async for k in rclient.scan_iter(match=f"{h3_prefix}registration:*")][:1]
            await rclient.delete(lost)
            code, found = await curl("curl http://localhost:3000/api/sync-worker/discrepancy-check")
            assert code == 200 and found["missing"] == 1
            repair = 'curl "http://localhost:3000/api/sync-worker/discrepancy-check?repair=true"'
            code, repaired = await curl(repair)
            assert code == 200
            assert repaired["results"]["zoho_registrations"]["repair"]["remaining"] == 0
            assert await rclient.exists(lost)
            for command in (
                "curl -X POST http://localhost:3000/api/sync-worker/incremental-sync",
                "curl -X POST http://localhost:3000/api/sync-worker/stop",
            ):
                code, body = await curl(command)
                assert code == 200 and body["success"] is True, body
        finally:
            engine.send_signal(signal.SIGTERM)
            returncode = await asyncio.to_thread(engine.wait, 30)
            log.close()
    output = (tmp_path / "engine.log").read_text()
    assert returncode == 0, output[-3000:]
    assert "redis_group_finished" not in output  # REDIS_LOG_LEVEL=WARN: the sink's info goes
    assert "sync_finished" in output  # LOG_LEVEL=INFO: the rest is logged


async def test_the_python_example_runs_with_the_seed_method_names(
    tmp_path: Path, h3_prefix: str, rclient: aredis.Redis
) -> None:
    async with ZohoCreatorServer() as zoho:
        events = seed_events(zoho, 3)
        seed_registrations(zoho, events, 30)
        env = {**child_env(), **environ(zoho, h3_prefix, tmp_path / "state.db")}
        done = await asyncio.to_thread(
            subprocess.run,
            [PYTHON, str(EXAMPLE.with_name("worker.py"))],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "full sync: success 30 records, 0 removed" in done.stdout
    assert "'records_added': 30" in done.stdout and "'differences': 0" in done.stdout
    assert await rclient.scard(f"{h3_prefix}events:synced") == 3
