"""A redis-server of the test's own, on a unix socket, for tests whose key names are fixed.

The seed's list names (``whatsapp:in``...) cannot take a per-test prefix, so such a test
cannot share a database of the shared Redis with another run of itself: two suites on one
machine (two clones, a developer and CI, parallel helpers) would pop each other's messages
and FLUSHDB each other's data. A private server on a socket in a fresh directory has no port
to race for and nothing to flush; without persistence it costs a few milliseconds.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.waiting import wait_for

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextmanager
def private_redis() -> Iterator[str]:
    """Start a redis-server (no persistence) on a unix socket; yield its ``unix://`` URL."""
    # mkdtemp under /tmp: a socket path must stay under ~100 bytes, pytest's tmp_path may not.
    workdir = Path(tempfile.mkdtemp(prefix="sw-redis-"))
    socket_path = workdir / "redis.sock"
    args = [SERVER, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    args += ["--dir", str(workdir), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"unix://{socket_path}?db=0"
    client = redis.Redis.from_url(url)
    try:
        wait_for(client.ping, "the private redis-server", ignore=(redis.ConnectionError,))
        yield url
    finally:
        client.close()
        process.kill()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
