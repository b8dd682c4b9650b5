"""The API refuses before it reads: token, Host, Origin and body size, over real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from syncworker.api.guard import MAX_BODY_BYTES
from tests.e2e.conftest import TOKEN, start_api

WORKER_CONFIG = """\
state: "sqlite:///{root}/state.db"
api: {{listen: "127.0.0.1:0", token: "${{SYNCWORKER_API_TOKEN:-}}"}}
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", poll_interval: 50ms}}
    sinks: [{{type: jsonl, path: "{root}/out"}}]
"""

BIG_BODY_BYTES = 200 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    has_token: bool
    log: Path

    def peak_rss_bytes(self) -> int:
        """The worker's high-water resident memory (VmHWM): what a spike reached."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(params=["token", "no token"])
def worker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Worker]:
    config = tmp_path / "syncworker.yaml"
    config.write_text(WORKER_CONFIG.format(root=tmp_path))
    env = {**os.environ, "SYNCWORKER_API_TOKEN": TOKEN if request.param == "token" else ""}
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "syncworker.cli", "--log-format", "json", "run", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        url = _listening_url(process, log)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield Worker(process, host, int(port), has_token=request.param == "token", log=log)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]


def _listening_url(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_bytes().splitlines():
            if b'"api_listening"' in line:
                return str(orjson.loads(line)["url"])
        time.sleep(0.05)
    raise AssertionError(f"the worker never logged api_listening: {log.read_text()[-3000:]}")


def _post_big(worker: Worker, headers: list[str], *, chunked: bool) -> tuple[int, bytes]:
    """POST a 200 MB body whole, as a client that does not wait would; the answer."""
    with socket.create_connection((worker.host, worker.port), timeout=30) as sock:
        head = ["POST /pipelines/chat/sync HTTP/1.1", f"Host: {worker.host}:{worker.port}"]
        head += headers
        head.append(
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG_BODY_BYTES}"
        )
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        frame = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n" if chunked else CHUNK
        for _ in range(BIG_BODY_BYTES // len(CHUNK)):
            sock.sendall(frame)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return _read_response(sock)


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or _closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0].split(b":")[1]) if lengths else 0
    while len(body) < length:
        body += sock.recv(65536) or _closed()
    return status, body


def _closed() -> bytes:
    raise AssertionError("the server closed the connection before answering")


def test_a_200_mb_post_leaves_memory_bounded(worker: Worker) -> None:
    before = psutil.Process(worker.process.pid).memory_info().rss
    authorized = [f"Authorization: Bearer {TOKEN}", "Content-Type: application/json"]
    unauthenticated = _post_big(worker, ["Content-Type: application/json"], chunked=False)
    by_length = _post_big(worker, authorized, chunked=False)
    by_chunks = _post_big(worker, authorized, chunked=True)
    growth = worker.peak_rss_bytes() - before
    assert growth < 40 * 1024 * 1024, f"the worker grew by {growth / 2**20:.0f} MiB"
    too_large = {
        "error": f"request body too large: at most {MAX_BODY_BYTES} bytes",
        "detail": {"max_body_bytes": MAX_BODY_BYTES},
    }
    assert by_length == (413, orjson.dumps(too_large))
    assert by_chunks == (413, orjson.dumps(too_large))
    status, body = unauthenticated
    if worker.has_token:
        assert (status, orjson.loads(body)["error"]) == (401, "missing or wrong API token")
    else:
        assert (status, body) == (413, orjson.dumps(too_large))
    # the worker still answers
    assert httpx.get(f"http://{worker.host}:{worker.port}/health").status_code == 200


def test_a_refused_request_is_answered_before_its_body_is_sent(worker: Worker) -> None:
    # Expect: 100-continue: a server that reads the body first says "100 Continue"; one
    # that refuses from the headers answers at once and the client never sends the body.
    with socket.create_connection((worker.host, worker.port), timeout=30) as sock:
        head = [
            "POST /pipelines/chat/sync HTTP/1.1",
            f"Host: {worker.host}:{worker.port}",
            f"Content-Length: {BIG_BODY_BYTES}",
            "Expect: 100-continue",
        ]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        status, _ = _read_response(sock)
    assert status == (401 if worker.has_token else 413)
    assert worker.process.poll() is None


def test_the_listening_line_says_whether_a_token_is_required(worker: Worker) -> None:
    [line] = [
        orjson.loads(line)
        for line in worker.log.read_bytes().splitlines()
        if b'"api_listening"' in line
    ]
    assert line["token_required"] is worker.has_token
    assert "***" not in orjson.dumps(line).decode()


@pytest.fixture
async def open_api(tmp_path: Path) -> AsyncIterator[str]:
    engine, server = await start_api(tmp_path, token=None)
    try:
        yield server.url
    finally:
        await engine.stop()


async def test_without_a_token_foreign_hosts_are_refused(open_api: str) -> None:
    async with httpx.AsyncClient(base_url=open_api) as client:
        for path in ("/dead-letters", "/status", "/health", "/"):
            rebound = await client.get(path, headers={"Host": "attacker.example"})
            assert rebound.status_code == 400, path
            body = rebound.json()
            assert body["error"].startswith("refused Host header 'attacker.example'")
            assert "127.0.0.1" in body["detail"]["allowed_hosts"]
        port = open_api.rsplit(":", 1)[1]
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"LOCALHOST.:{port}",
            f"[::1]:{port}",
        ):
            answer = await client.get("/dead-letters", headers={"Host": host})
            assert answer.status_code == 200, host


async def test_without_a_token_cross_site_requests_are_refused(open_api: str) -> None:
    port = open_api.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=open_api) as client:
        for origin in ("https://evil.example", "null", f"http://localhost:{int(port) + 1}"):
            answer = await client.post("/shutdown", headers={"Origin": origin})
            assert answer.status_code == 403, origin
            assert answer.json()["error"].startswith(f"refused Origin {origin!r}")
        same_site = await client.get("/status", headers={"Origin": f"http://127.0.0.1:{port}"})
        assert same_site.status_code == 200
        # a form post: the browser's simple cross-site request, body and all
        form = await client.post(
            "/pipelines/chat/stop",
            content=b"a=1",
            headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
        )
        assert form.status_code == 403
        status = (await client.get("/status")).json()
        assert status["stopping"] is False
        assert status["pipelines"]["chat"]["state"] == "running"


async def test_with_a_token_any_host_name_is_served(tmp_path: Path) -> None:
    engine, server = await start_api(tmp_path, token=TOKEN)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            headers = {"Authorization": f"Bearer {TOKEN}", "Host": "syncworker.internal:8080"}
            assert (await client.get("/status", headers=headers)).status_code == 200
    finally:
        await engine.stop()


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
async def test_a_blank_token_is_no_token(tmp_path: Path, blank: str) -> None:
    engine, server = await start_api(tmp_path, token=blank, host="0.0.0.0")
    try:
        assert server.token is None and server.host == "127.0.0.1"
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/status")).status_code == 200
            foreign = await client.get("/status", headers={"Host": "attacker.example"})
            assert foreign.status_code == 400
    finally:
        await engine.stop()


async def test_the_token_is_checked_before_a_small_body_too(tmp_path: Path) -> None:
    engine, server = await start_api(tmp_path, token=TOKEN)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            answer = await client.post("/pipelines/chat/sync", content=b"{nope")
            assert answer.status_code == 401
            assert answer.json() == {"error": "missing or wrong API token", "detail": None}
            assert answer.headers["www-authenticate"] == "Bearer"
    finally:
        await engine.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
