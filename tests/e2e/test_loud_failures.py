"""A dependency that cannot be reached or refuses us, through the real `syncworker run`.

Each failed attempt logs one warning naming the pipeline, the connector and the (redacted)
reason within 5 s; a refusal (unknown role, missing database, wrong password) stops the
pipeline at once and `run` exits non-zero when no pipeline is left; an outage is retried,
and `run --once` gives up after its retry policy. No line ever shows a password.

Closed ports and the private Redis use this file's own port range (17150-17159).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from tests.integration.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.integration

PASSWORD = "pw-s3cret-never-shown"
CLOSED_PG_PORT = 17150
CLOSED_REDIS_PORT = 17151
REPORT_S = 5.0

CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {source}
    sinks:
      - {sink}
    retry: {{attempts: 2, delay: 200ms, max_delay: 200ms}}
    batch: {{size: 10, max_wait: 20ms}}
"""
QUEUE = '{type: sqlite_queue, path: "{root}/queue.db", key_field: id}'
JSONL = '{type: jsonl, path: "{root}/out"}'


def pg_url(user: str = "postgres", port: int = 5432, database: str = "postgres") -> str:
    host = PG_ADMIN_URL.split("@", 1)[1].split(":", 1)[0]
    return f"postgresql://{user}:{PASSWORD}@{host}:{port}/{database}"


class Worker:
    """`syncworker --log-format json run FILE`, its output read line by line as it comes."""

    def __init__(self, config: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncworker.cli", "--log-format", "json", "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.config = config

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.lines:
            try:
                found.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return found

    def wait_for(self, event: str, within_s: float) -> dict[str, object]:
        """The first log event named ``event``, seen within ``within_s`` seconds."""
        deadline = time.monotonic() + within_s
        for seen in self.events():
            if seen.get("event") == event:
                return seen
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            try:
                seen = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if seen.get("event") == event:
                return seen
        raise AssertionError(f"no {event!r} within {within_s} s:\n{self.output()}")

    def finish(self, timeout_s: float) -> int:
        code = self.process.wait(timeout=timeout_s)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        self._queue.put(None)  # kill() drains up to the end mark again
        return code

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        while self._queue.get(timeout=5) is not None:
            pass
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def run_worker(tmp_path: Path) -> Iterator[object]:
    workers: list[Worker] = []

    def start(source: str, sink: str, *flags: str, extra: str = "") -> Worker:
        path = tmp_path / "syncworker.yaml"
        path.write_text(
            CONFIG.format(
                root=tmp_path,
                source=source.replace("{root}", str(tmp_path)),
                sink=sink.replace("{root}", str(tmp_path)),
            )
            + extra
        )
        worker = Worker(path, *flags, str(path))
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


def postgres_sink(url: str) -> str:
    return f'{{type: postgres, url: "{url}", table: messages, connect_timeout: 2s}}'


def assert_names_the_failure(event: dict[str, object], connector: str) -> None:
    assert event["pipeline"] == "chat"
    assert event["connector"] == connector
    assert isinstance(event.get("error"), str) and event["error"]


def assert_no_password(worker: Worker) -> None:
    assert PASSWORD not in worker.output()


@pytest.mark.timeout(60)
def test_postgres_on_a_closed_port_warns_each_attempt_and_keeps_trying(run_worker) -> None:  # type: ignore[no-untyped-def]
    worker = run_worker(QUEUE, postgres_sink(pg_url(port=CLOSED_PG_PORT)))
    first = worker.wait_for("connect_failed", REPORT_S)
    assert_names_the_failure(first, "postgres")
    assert str(CLOSED_PG_PORT) in str(first["error"]) and first["attempt"] == 1
    assert worker.process.poll() is None  # an outage is retried, not given up
    worker.process.send_signal(signal.SIGTERM)
    assert worker.finish(30) == 0, worker.output()
    assert_no_password(worker)


@pytest.mark.timeout(60)
def test_run_once_gives_up_on_an_outage_after_its_retry_policy(run_worker) -> None:  # type: ignore[no-untyped-def]
    worker = run_worker(QUEUE, postgres_sink(pg_url(port=CLOSED_PG_PORT)), "--once")
    assert_names_the_failure(worker.wait_for("connect_failed", REPORT_S), "postgres")
    assert worker.finish(30) != 0, worker.output()
    attempts = [e for e in worker.events() if e.get("event") == "connect_failed"]
    assert [e["attempt"] for e in attempts] == [1, 2]  # retry: {attempts: 2}
    assert "cannot connect" in worker.output()
    assert_no_password(worker)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (pg_url(user="sw_no_such_role"), 'role "sw_no_such_role" does not exist'),
        (pg_url(database=f"sw_missing_{uuid.uuid4().hex[:8]}"), "does not exist"),
    ],
    ids=["unknown-role", "missing-database"],
)
@pytest.mark.timeout(60)
def test_a_refusing_postgres_stops_the_pipeline_and_run_exits(  # type: ignore[no-untyped-def]
    run_worker, url: str, reason: str
) -> None:
    worker = run_worker(QUEUE, postgres_sink(url))
    refused = worker.wait_for("connect_refused", REPORT_S)
    assert_names_the_failure(refused, "postgres")
    assert reason in str(refused["error"])
    assert worker.finish(30) != 0, worker.output()
    assert not [e for e in worker.events() if e.get("event") == "connect_failed"]  # no retry
    assert reason in worker.output().splitlines()[-1]  # the last line says why
    assert_no_password(worker)


@pytest.mark.timeout(60)
def test_redis_down_warns_and_run_once_exits_non_zero(run_worker) -> None:  # type: ignore[no-untyped-def]
    source = (
        f'{{type: redis_list, url: "redis://:{PASSWORD}@127.0.0.1:{CLOSED_REDIS_PORT}/0", '
        'lists: {in: "sw:in"}, socket_timeout: 2s}'
    )
    worker = run_worker(source, JSONL, "--once")
    assert_names_the_failure(worker.wait_for("connect_failed", REPORT_S), "chat.source")
    assert worker.finish(30) != 0, worker.output()
    assert_no_password(worker)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server with a password, on a free port: a fixed one would be shared with
    another run of this suite on the same machine (its server answers the same password)."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen(
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--requirepass",
            "the-right-one",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password="the-right-one")
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the private redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.timeout(60)
def test_a_wrong_redis_password_stops_the_pipeline(run_worker, private_redis: str) -> None:  # type: ignore[no-untyped-def]
    url = f"redis://:{PASSWORD}@{private_redis}/0"
    source = f'{{type: redis_list, url: "{url}", lists: {{in: "sw:in"}}}}'
    worker = run_worker(source, JSONL)
    refused = worker.wait_for("connect_refused", REPORT_S)
    assert_names_the_failure(refused, "chat.source")
    assert "invalid" in str(refused["error"]).lower() or "WRONGPASS" in str(refused["error"])
    assert worker.finish(30) != 0, worker.output()
    assert not [e for e in worker.events() if e.get("event") == "connect_failed"]
    assert_no_password(worker)


@pytest.mark.timeout(60)
def test_a_wrong_password_for_the_lock_stops_the_pipeline(  # type: ignore[no-untyped-def]
    run_worker, private_redis: str, tmp_path: Path
) -> None:
    lock = f'    lock: {{url: "redis://:{PASSWORD}@{private_redis}/0", key: "sw:lock"}}\n'
    worker = run_worker(QUEUE, JSONL, "--once", extra=lock)
    failed = worker.wait_for("pipeline_failed", REPORT_S)
    assert_names_the_failure(failed, "lock")
    assert worker.finish(30) != 0, worker.output()
    assert not [e for e in worker.events() if e.get("event") == "lock_unavailable"]
    assert_no_password(worker)
