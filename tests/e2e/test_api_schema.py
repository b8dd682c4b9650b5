"""schemathesis against the served /openapi.json: no 5xx, every response matches the schema.

The engine runs as `syncworker run` in its own process, as in production, and schemathesis
calls it over HTTP. (A separate process, not a thread: CPython 3.11.7 can raise a spurious
"AST constructor recursion depth mismatch" when two threads build ASTs at once, gh-106905.)
Examples per operation are bounded (SCHEMATHESIS_EXAMPLES, default 25) so the suite stays
fast; raise it for a deeper run.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from syncworker.connectors.sqlite.queue import SqliteQueue
from tests.e2e.conftest import CONFIG, TOKEN
from tests.waiting import wait_until_serving

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
# /shutdown would end the engine half-way through the run; it has its own test.
SKIPPED_OPERATIONS = {"POST /shutdown"}


@dataclass
class Served:
    url: str


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        conn.execute(
            "CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT CHECK (length(text) <= 20))"
        )
    config = tmp_path / "syncworker.yaml"
    config.write_text(
        CONFIG.format(root=tmp_path) + f'api: {{listen: "127.0.0.1:{port}", token: "{TOKEN}"}}\n'
    )
    with SqliteQueue(tmp_path / "queue.db") as queue:  # some records and a dead letter
        queue.enqueue([{"id": "a", "text": "ok"}, {"id": "b", "text": "x" * 50}], stream="in")
    worker = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "--log-level", "warning", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, worker)  # /ready: the pipeline runs, not only the API
        yield Served(url)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=60)
        assert worker.returncode == 0, errors.decode()[-2000:]


def test_every_operation_conforms_to_the_schema(served: Served) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", headers=headers)
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SKIPPED_OPERATIONS:
            continue
        tested += 1
        try:
            _exercise(operation, served.url, headers)
        except Exception as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {exc}"[:2000])
    assert tested >= 20
    assert not failures, "\n\n".join(failures)


def no_undocumented_server_error(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    """No 5xx, except a 501 the operation documents: "this pipeline cannot do that" is a
    deliberate answer of the API (a full sync without a scannable source, say)."""
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code >= 500 and str(response.status_code) not in documented:
        raise AssertionError(
            f"{case.operation.label}: server error {response.status_code}: {response.text[:300]}"
        )


def _exercise(operation, base_url: str, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(
            base_url=base_url,
            headers=headers,
            timeout=30,
            excluded_checks=[not_a_server_error],
            additional_checks=[no_undocumented_server_error],
        )

    check()
