"""examples/messenger_worker runs as its README says, on the real Redis: jobs enqueued from
the CLI run on their queues, a payload that breaks the seed's job shape is refused at
enqueue, cron lists the seed's schedule and the API answers /health."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from tests.waiting import wait_for

EXAMPLE = Path(__file__).parents[2] / "examples" / "messenger_worker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_messenger_example_runs_its_jobs(tmp_path: Path, redis_prefix: str) -> None:
    work = tmp_path / "messenger_worker"
    shutil.copytree(EXAMPLE, work)
    port = free_port()
    env = {
        **os.environ,
        "JOBS_PREFIX": f"{redis_prefix}messenger",
        "PORT": str(port),
        "SYNCWORKER_STATE_DIR": str(tmp_path),
    }

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "syncworker.cli", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    image = orjson.dumps({"type": "image", "s3Key": "u1/a.jpg", "userId": "u1", "messageId": "m1"})
    push = orjson.dumps({"type": "push", "userId": "u1", "title": "hi", "body": "there"})
    image_id = cli("jobs", "enqueue", "process_image", "--json", image.decode()).stdout.strip()
    push_id = cli("jobs", "enqueue", "send_push", "--json", push.decode()).stdout.strip()
    refused = cli("jobs", "enqueue", "process_video", "--json", '{"type": "video"}', check=False)
    assert refused.returncode == 2
    assert "s3Key: Field required" in refused.stderr

    cron = orjson.loads(cli("jobs", "cron", "list", "--json").stdout)
    assert len(cron) == 10
    assert {entry["name"]: entry["schedule"] for entry in cron}["orphaned_media"] == "0 5 * * 0"

    engine = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "run", "syncworker.yaml"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def finished() -> bool:
            states = [
                orjson.loads(cli("jobs", "show", job_id).stdout)["state"]
                for job_id in (image_id, push_id)
            ]
            return states == ["completed", "completed"]

        wait_for(finished, "both jobs completed", timeout_s=60, interval_s=0.2)
        health = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5),
            "the API serving /health",
            ignore=(httpx.HTTPError,),
        )
        assert health.status_code == 200
    finally:
        engine.send_signal(signal.SIGTERM)
        output, _ = engine.communicate(timeout=60)
    assert engine.returncode == 0, output
    shown = orjson.loads(cli("jobs", "show", image_id).stdout)
    assert shown["queue"] == "media"
    assert shown["priority"] == 2
    assert shown["result"]["kind"] == "image"
