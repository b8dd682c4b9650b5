"""Redis restarted under a running pipeline: it resumes by itself.

A private redis-server on a free port (the shared one is not ours to restart). With
persistence (AOF, fsync always) a clean shutdown keeps queued and claimed messages: nothing
is lost. Without persistence (`--save "" --appendonly no`) whatever Redis held at the restart
is gone, as the example README says; what is sent afterwards still all arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from syncworker.config import config_from_dict
from syncworker.core.engine import Engine
from syncworker.state import state_store_from_url
from tests.waiting import NotYet, eventually, wait_for

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    def __init__(self, workdir: Path, persistent: bool) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.workdir = workdir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        self.process = subprocess.Popen(
            [
                SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            wait_for(client.ping, f"redis-server on {self.port}", ignore=(redis.ConnectionError,))
        finally:
            client.close()

    def shutdown(self) -> None:
        """`SHUTDOWN` as an operator would: Redis writes what it keeps, then exits."""
        client = redis.Redis.from_url(self.url)
        # The server closes the connection as it exits.
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=not self.persistent)
        client.close()
        assert self.process is not None
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(params=[True, False], ids=["aof", "no-persistence"])
def private_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, persistent=request.param)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def push(url: str, start: int, count: int) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for n in range(start, start + count):
        pipe.lpush("q:in", orjson.dumps({"id": f"m{n}"}))
    pipe.execute()
    client.close()


def written(out: Path) -> set[str]:
    """The ids in the JSONL files. Read while the sink appends: a last line without its
    newline is still being written, so only complete lines count."""
    return {
        orjson.loads(line)["id"]
        for path in out.glob("*.jsonl")
        for line in path.read_bytes().split(b"\n")[:-1]
    }


def _failures(engine: Engine) -> int:
    return int(engine.pipeline("q").status()["circuit"]["consecutive_failures"])


@pytest.mark.timeout(180)
async def test_pipeline_resumes_after_a_redis_restart(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = config_from_dict(
        {
            "state": f"sqlite:///{tmp_path}/state.db",
            "pipelines": {
                "q": {
                    "source": {
                        "type": "redis_list",
                        "url": private_redis.url,
                        "lists": {"in": "q:in"},
                        "key_field": "id",
                        "heartbeat_ttl": "1s",
                        "recovery_interval": "500ms",
                        "poll_interval": "50ms",
                    },
                    "sinks": [{"type": "jsonl", "path": str(out)}],
                    "batch": {"size": 200, "max_wait": "20ms"},
                    "breaker": {"delay": "100ms", "max_delay": "500ms"},
                    "retry": {"attempts": 2, "delay": "50ms"},
                }
            },
        },
        environ={},
    )
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state)
    await engine.start()
    try:
        await asyncio.to_thread(push, private_redis.url, 0, 20_000)
        # some written, some still queued
        await eventually(lambda: len(written(out)) >= 2_000, "2,000 messages written")
        await asyncio.to_thread(private_redis.shutdown)
        await eventually(lambda: _failures(engine) > 0, "the pipeline to see Redis gone")
        await asyncio.to_thread(private_redis.start)
        await asyncio.to_thread(push, private_redis.url, 20_000, 1_000)  # after the restart
        expected_after = {f"m{n}" for n in range(20_000, 21_000)}
        expected_all = {f"m{n}" for n in range(21_000)}
        target = expected_all if private_redis.persistent else expected_after
        with contextlib.suppress(NotYet):  # the assertions below say what is missing
            await eventually(lambda: target <= written(out), "every message", timeout_s=60)
        status = engine.pipeline("q").status()
    finally:
        await engine.stop()
    assert target <= written(out), f"missing {len(target - written(out))}; status {status}"
    assert all(path.read_bytes().endswith(b"\n") for path in out.glob("*.jsonl"))  # none torn
    assert status["state"] == "running"
    if private_redis.persistent:
        assert written(out) == expected_all  # nothing lost, nothing invented
