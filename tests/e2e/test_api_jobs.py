"""The jobs endpoints over real HTTP: an engine running a jobs: section (SQLite and
PostgreSQL backends) and its control API; every figure checked against what was enqueued
and what ran, requeue bringing a dead job back, the Prometheus series, and 404 without a
jobs: section."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydantic
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from syncworker.api.server import ApiServer
from syncworker.config import parse_config
from syncworker.core import jsonvalue
from syncworker.core.engine import Engine
from syncworker.jobs.service import JobsService
from syncworker.state import state_store_from_url
from tests.e2e.conftest import TOKEN, RunningApi, api_client
from tests.e2e.test_api_schema import EXAMPLES, no_undocumented_server_error
from tests.integration.conftest import REDIS_URL, pg_url, redis_prefix  # noqa: F401 - fixtures
from tests.waiting import eventually, wait_for, wait_until_serving

HERE = "tests.e2e.test_api_jobs"
CONFIG = """\
state: "sqlite:///{root}/state.db"
jobs:
  backend: {backend}
  queues:
    default: {{concurrency: 3, timeout: 30s}}
    slow: {{concurrency: 1}}
  tasks:
    hello: {{handler: "{here}:hello"}}
    boom: {{handler: "{here}:boom", retries: 1, backoff: {{base: 50ms, jitter: 0}}}}
    flaky: {{handler: "{here}:flaky", retries: 0}}
    hold: {{handler: "{here}:hold", queue: slow}}
    greet: {{handler: "{here}:greet"}}
  poll_interval: 100ms
  shutdown_grace: 1s
"""
HOSTILE = "not yet <img src=x onerror=window.pwned=1>"  # shown as text, never run
EXACT = "0.1000000000000000000001"  # no double holds it: a float parse would lose digits


class Gate:
    """What the handlers of a test wait on or read (set by the fixture per test)."""

    release = asyncio.Event()
    flaky_fails = True


async def hello(payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload.get("n")}


def boom(payload: dict[str, Any]) -> None:
    raise RuntimeError("refused by the handler")


def flaky(payload: dict[str, Any]) -> str:
    if Gate.flaky_fails:
        raise ValueError(HOSTILE)
    return "ok now"


async def hold(payload: dict[str, Any]) -> None:
    await Gate.release.wait()


class Greeting(pydantic.BaseModel):
    name: str
    times: int = 1


def greet(payload: Greeting) -> str:
    return f"hello {payload.name}"


@dataclass
class JobsApi:
    engine: Engine
    client: httpx.AsyncClient
    url: str

    async def enqueue(self, task: str, payload: Any = None, **options: Any) -> str:
        body = {"task": task, **({"payload": payload} if payload is not None else {}), **options}
        headers = {"Content-Type": "application/json"}
        answer = await self.client.post("/jobs", content=orjson.dumps(body), headers=headers)
        assert answer.status_code == 200, answer.text
        job_id: str = answer.json()["id"]
        return job_id

    async def queues(self) -> dict[str, dict[str, Any]]:
        answer = await self.client.get("/metrics/queues")
        assert answer.status_code == 200, answer.text
        figures: dict[str, dict[str, Any]] = answer.json()
        return figures

    async def job(self, job_id: str) -> dict[str, Any]:
        answer = await self.client.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = jsonvalue.loads(answer.content)
        return body

    async def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = (await self.client.get("/metrics")).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("syncworker_jobs_")
        }


@contextlib.asynccontextmanager
async def running_jobs_api(root: Path, backend: str) -> AsyncIterator[JobsApi]:
    """An engine running CONFIG's jobs on ``backend`` (a YAML mapping), and its API."""
    Gate.release = asyncio.Event()
    Gate.flaky_fails = True
    config = parse_config(CONFIG.format(root=root, backend=backend, here=HERE))
    assert config.app.jobs is not None
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state, shutdown_timeout_s=5)
    service = JobsService.from_config(config.app.jobs)
    engine.services.append(service)
    server = ApiServer(engine, port=0, token=TOKEN)
    engine.services.append(server)
    await engine.start()
    try:
        await eventually(service.opened.is_set, "the jobs backend to open")
        async with api_client(server.url) as client:
            yield JobsApi(engine, client, server.url)
    finally:
        Gate.release.set()
        await engine.stop()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def jobs_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobsApi]:
    if request.param == "sqlite":
        backend = f'{{type: sqlite, path: "{tmp_path}/jobs.db"}}'
    elif request.param == "postgres":
        backend = f'{{type: postgres, url: "{request.getfixturevalue("pg_url")}"}}'
    else:
        prefix = request.getfixturevalue("redis_prefix")
        backend = f'{{type: redis, url: "{REDIS_URL}", prefix: "{prefix}jobs"}}'
    async with running_jobs_api(tmp_path, backend) as api:
        yield api


def _get(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_queue_figures_jobs_and_series_follow_what_ran(jobs_api: JobsApi) -> None:
    api = jobs_api
    hello_ids = [await api.enqueue("hello", {"n": n}) for n in range(3)]
    boom_id = await api.enqueue("boom", {"password": "hunter2", "what": "x"})
    held = await api.enqueue("hold")
    later = await api.enqueue("hello", {"n": 9}, delay_s=3600, priority=5, unique_key="u1")
    assert await api.enqueue("hello", {"n": 10}, delay_s=60, unique_key="u1") == later

    async def settled() -> bool:
        q = await api.queues()
        return (
            q["default"]["completed"] == 3
            and q["default"]["dead"] == 1
            and (q["slow"]["active"] == 1)
        )

    await eventually(settled, "3 hello completed, boom dead, hold running")
    figures = await api.queues()
    assert figures["default"] == {
        "waiting": 0,
        "active": 0,
        "delayed": 1,  # the unique-key job, enqueued once
        "completed": 3,
        "failed": 2,  # boom's two attempts
        "dead": 1,
        "running": 0,
        "concurrency": 3,
        "completed_since_start": 3,
        "retried_since_start": 1,
        "dead_since_start": 1,
    }
    assert figures["slow"]["running"] == 1 and figures["slow"]["concurrency"] == 1
    assert figures["slow"]["active"] == 1 and figures["slow"]["completed"] == 0

    listed = (await api.client.get("/jobs", params={"queue": "default"})).json()["items"]
    assert [j["id"] for j in listed] == [later, boom_id, *reversed(hello_ids)]  # newest first
    assert all("stack" not in j for j in listed)
    assert listed[0]["state"] == "delayed" and listed[0]["priority"] == 5
    assert listed[0]["unique_key"] == "u1" and listed[0]["payload"] == {"n": 9}
    done = next(j for j in listed if j["id"] == hello_ids[1])
    assert done["state"] == "completed" and done["result"] == {"echo": 1}
    dead = (await api.client.get("/jobs", params={"state": "dead"})).json()["items"]
    assert [j["id"] for j in dead] == [boom_id]
    assert dead[0]["error"] == "RuntimeError: refused by the handler"
    assert dead[0]["payload"] == {"password": "***", "what": "x"}  # redacted as elsewhere
    assert dead[0]["attempts"] == 2 and dead[0]["max_attempts"] == 2
    limited = (await api.client.get("/jobs", params={"limit": 2})).json()["items"]
    assert len(limited) == 2
    active = (await api.client.get("/jobs", params={"state": "active"})).json()["items"]
    assert [j["id"] for j in active] == [held] and active[0]["worker"]

    whole = await api.job(boom_id)
    assert whole["state"] == "dead" and "RuntimeError: refused by the handler" in whole["stack"]
    assert "in boom" in whole["stack"]

    samples = await eventually(lambda: _series_ready(api), "the counts to reach the scrape")
    depth = "syncworker_jobs_queue_depth"
    assert _get(samples, depth, queue="default", state="completed") == 3
    assert _get(samples, depth, queue="default", state="dead") == 1
    assert _get(samples, depth, queue="default", state="delayed") == 1
    assert _get(samples, depth, queue="slow", state="active") == 1
    assert _get(samples, depth, queue="default", state="queued") == 0
    assert _get(samples, "syncworker_jobs_completed_total", queue="default", task="hello") == 3
    assert _get(samples, "syncworker_jobs_retried_total", queue="default", task="boom") == 1
    assert _get(samples, "syncworker_jobs_dead_total", queue="default", task="boom") == 1
    assert _get(samples, "syncworker_jobs_failed_attempts_total", queue="default", task="boom") == 2
    assert _get(samples, "syncworker_jobs_lease_lost_total", queue="default", task="hello") == 0
    hist = "syncworker_jobs_duration_seconds"
    assert _get(samples, f"{hist}_count", queue="default", task="hello") == 3
    assert _get(samples, f"{hist}_bucket", queue="default", task="boom", le="+Inf") == 2
    assert _get(samples, f"{hist}_bucket", queue="default", task="hello", le="1800.0") == 3
    assert _get(samples, "syncworker_jobs_running", queue="slow") == 1
    assert _get(samples, "syncworker_jobs_running", queue="default") == 0
    assert _get(samples, "syncworker_jobs_concurrency", queue="default") == 3
    assert _get(samples, "syncworker_jobs_backend_open") == 1

    Gate.release.set()
    await eventually(lambda: _state(api, held, "completed"), "the held job to complete")


async def _series_ready(api: JobsApi) -> dict[Any, float] | None:
    samples = await api.samples()
    ready = _get(samples, "syncworker_jobs_queue_depth", queue="default", state="completed") == 3
    return samples if ready else None


async def _state(api: JobsApi, job_id: str, state: str) -> bool:
    return bool((await api.job(job_id))["state"] == state)


async def test_requeue_brings_dead_jobs_back(jobs_api: JobsApi) -> None:
    api = jobs_api
    first = await api.enqueue("flaky", {"n": 1})
    second = await api.enqueue("flaky", {"n": 2})
    done = await api.enqueue("hello", {"n": 3})
    for job_id in (first, second):
        await eventually(lambda job_id=job_id: _state(api, job_id, "dead"), "flaky to die")
    await eventually(lambda: _state(api, done, "completed"), "hello to complete")

    refused = await api.client.post(f"/jobs/{done}/requeue")
    assert refused.status_code == 409
    assert refused.json()["error"] == f"job {done!r} is completed: only dead jobs requeue"
    Gate.flaky_fails = False
    back = await api.client.post(f"/jobs/{first}/requeue")
    assert back.status_code == 200 and back.json() == {"id": first, "state": "queued"}
    await eventually(lambda: _state(api, first, "completed"), "the requeued job to complete")
    again = await api.job(first)
    assert again["result"] == "ok now" and again["attempts"] == 1
    assert (await api.job(second))["state"] == "dead"  # only the one asked for

    Gate.flaky_fails = True
    third = await api.enqueue("flaky", {"n": 4})
    await eventually(lambda: _state(api, third, "dead"), "the third flaky job to die")
    Gate.flaky_fails = False
    other = await api.client.post("/jobs/requeue", params={"queue": "slow"})
    assert other.json() == {"queue": "slow", "requeued": 0}
    everything = await api.client.post("/jobs/requeue", params={"queue": "default"})
    assert everything.status_code == 200
    assert everything.json() == {"queue": "default", "requeued": 2}
    for job_id in (second, third):
        await eventually(lambda job_id=job_id: _state(api, job_id, "completed"), "requeued")

    async def counted() -> dict[str, Any] | None:
        default = (await api.queues())["default"]
        return default if default["completed"] == 4 else None

    figures = await eventually(counted, "the counts to catch up")
    assert figures["dead"] == 0 and figures["waiting"] == 0
    assert figures["dead_since_start"] == 3 and figures["failed"] == 3


async def test_enqueue_refusals_and_unknown_jobs(jobs_api: JobsApi) -> None:
    api = jobs_api
    unknown = await api.client.post("/jobs", json={"task": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["error"].startswith("unknown task 'nope'")
    assert unknown.json()["detail"] == {"tasks": ["boom", "flaky", "greet", "hello", "hold"]}
    refused = await api.client.post("/jobs", json={"task": "greet", "payload": {"times": 2}})
    assert refused.status_code == 422
    assert refused.json()["error"] == "task 'greet': invalid payload: name: Field required"
    extra = await api.client.post("/jobs", json={"task": "hello", "colour": "red"})
    assert extra.status_code == 422 and extra.json()["error"] == "invalid request"
    bad_priority = await api.client.post("/jobs", json={"task": "hello", "priority": 5000})
    assert bad_priority.status_code == 422
    missing = await api.client.get("/jobs/424242")
    assert missing.status_code == 404 and missing.json()["error"] == "no job with id '424242'"
    for odd in ("not-an-id", "²", "default:x"):
        answer = await api.client.get(f"/jobs/{odd}")
        assert answer.status_code == 404, (odd, answer.text)
    assert (await api.client.post("/jobs/424242/requeue")).status_code == 404

    greeted = await api.enqueue("greet", {"name": "Ana", "exact": orjson.Fragment(EXACT)})
    await eventually(lambda: _state(api, greeted, "completed"), "greet to run")
    job = await api.job(greeted)
    assert job["result"] == "hello Ana" and job["payload"]["exact"] == Decimal(EXACT)
    assert job["stack"] is None and job["error"] is None


async def test_jobs_endpoints_need_the_token(jobs_api: JobsApi) -> None:
    async with httpx.AsyncClient(base_url=jobs_api.url) as anonymous:
        for method, path in [
            ("GET", "/metrics/queues"),
            ("GET", "/jobs"),
            ("GET", "/jobs/1"),
            ("POST", "/jobs"),
            ("POST", "/jobs/1/requeue"),
            ("POST", "/jobs/requeue?queue=default"),
        ]:
            answer = await anonymous.request(method, path)
            assert answer.status_code == 401, (method, path)
    assert (await jobs_api.client.get("/jobs")).json() == {"items": []}


async def test_without_a_jobs_section_the_jobs_endpoints_are_404(api: RunningApi) -> None:
    for method, path in [
        ("GET", "/metrics/queues"),
        ("GET", "/jobs"),
        ("GET", "/jobs/1"),
        ("POST", "/jobs/1/requeue"),
        ("POST", "/jobs/requeue?queue=default"),
    ]:
        answer = await api.client.request(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json() == {
            "error": "no job queue here: the config has no jobs: section",
            "detail": None,
        }
    posted = await api.client.post("/jobs", json={"task": "hello"})
    assert posted.status_code == 404
    text = (await api.client.get("/metrics")).text
    assert "syncworker_jobs_" not in text  # no series at all, not zeros


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_jobs_operations_conform_to_the_schema(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """schemathesis on the jobs operations of a `syncworker run` with a jobs: section (the
    suite's schema test runs a config without one, where they only answer 404)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    if kind == "sqlite":
        backend = f'{{type: sqlite, path: "{tmp_path}/jobs.db"}}'
    else:
        backend = f'{{type: postgres, url: "{request.getfixturevalue("pg_url")}"}}'
    config = tmp_path / "syncworker.yaml"
    config.write_text(
        CONFIG.format(root=tmp_path, backend=backend, here=HERE)
        + f'api: {{listen: "127.0.0.1:{port}", token: "{TOKEN}"}}\n'
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "--log-level", "warning", "run", str(config)],
        cwd=Path(__file__).parents[2],  # the repository: the handlers are this module's
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_until_serving(url, worker, path="/health")
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:

            def opened() -> bool:
                return client.get("/metrics/queues").status_code == 200

            wait_for(opened, "the jobs backend to open")
            for task in ("hello", "boom", "hold"):  # jobs in several states to list
                assert client.post("/jobs", json={"task": task}).status_code == 200
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=headers)
        failures: list[str] = []
        tested = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if not operation.path.startswith(("/jobs", "/metrics/queues")):
                continue
            tested += 1
            try:
                _exercise(operation, url, headers)
            except Exception as exc:
                failures.append(f"{operation.label}: {type(exc).__name__}: {exc}"[:2000])
        assert tested == 6
        assert not failures, "\n\n".join(failures)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=60)
    assert worker.returncode == 0, errors.decode()[-2000:]


def _exercise(operation, base_url: str, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    # POST /jobs answers a schema-valid body 422 when its task is not one of the config's or
    # the task's model refuses the payload (documented): the schema cannot know the tasks.
    excluded = [not_a_server_error]
    if operation.label == "POST /jobs":
        excluded.append(positive_data_acceptance)

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
            excluded_checks=excluded,
            additional_checks=[no_undocumented_server_error],
        )

    check()
