"""The ``jobs:`` section: what it accepts, how it refuses, what it builds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.waiting import eventually

from syncworker.config import config_from_dict
from syncworker.errors import ConfigError
from syncworker.jobs.config import build_jobs, worker_queues
from syncworker.jobs.service import JobsService
from syncworker.queue.base import JobState
from syncworker.queue.config import build_backend

CALLS: list[Any] = []


def record(payload: Any) -> str:
    CALLS.append(payload)
    return "done"


def jobs_section(**extra: Any) -> dict[str, Any]:
    return {"jobs": {"backend": {"type": "memory"}, **extra}}


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    return str(caught.value)


def test_a_config_with_only_jobs_is_valid() -> None:
    config = config_from_dict(jobs_section())
    assert config.pipelines == {}
    assert config.app.jobs is not None and config.app.jobs.backend.type == "memory"


def test_a_config_with_neither_section_is_refused() -> None:
    assert refusal({}) == "<config>: expected a 'pipelines' section, a 'jobs' section or both"


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ({"type": "mysql"}, "type: expected one of sqlite, postgres, redis, memory, got 'mysql'"),
        ({"type": "redis"}, "url: Field required"),
        ({"type": "postgres", "url": "mysql://u:secret@h/db"}, "expected a postgresql:// URL"),
        ({"type": "sqlite", "path": "j.db", "tabel": "x"}, "tabel: Extra inputs"),
        ({"type": "sqlite", "path": "j.db", "table": "no-dash"}, "table: expected letters"),
    ],
)
def test_a_wrong_backend_names_the_setting(backend: dict[str, Any], expected: str) -> None:
    message = refusal({"jobs": {"backend": backend}})
    assert message.startswith("<config>: jobs.backend"), message
    assert expected in message
    assert "secret" not in message


def test_cron_of_an_unknown_task_is_refused() -> None:
    message = refusal(jobs_section(cron={"c": {"schedule": "@hourly", "task": "nope"}}))
    assert "no task named 'nope'" in message


def test_a_handler_that_cannot_be_imported_names_its_task() -> None:
    config = config_from_dict(jobs_section(tasks={"t": {"handler": "no_such_module_x:run"}}))
    assert config.app.jobs is not None
    with pytest.raises(ConfigError) as caught:
        build_jobs(config.app.jobs)
    assert caught.value.path == "jobs.tasks.t.handler"
    assert "cannot import no_such_module_x" in caught.value.reason


def test_a_queue_named_only_by_a_task_is_worked_too() -> None:
    config = config_from_dict(
        jobs_section(
            queues={"media": {"concurrency": 2, "timeout": "5m"}},
            tasks={"push": {"handler": f"{__name__}:record", "queue": "notification"}},
        )
    )
    assert config.app.jobs is not None
    queues = worker_queues(config.app.jobs)
    assert {name: q.concurrency for name, q in queues.items()} == {"media": 2, "notification": 1}
    assert queues["media"].timeout_s == 300


def test_build_backend_refuses_with_the_place_given() -> None:
    with pytest.raises(ConfigError) as caught:
        build_backend({"type": "redis", "url": "http://x"}, where="pipelines.p.sinks[0].backend")
    assert str(caught.value).startswith("pipelines.p.sinks[0].backend.url: expected a redis://")


async def test_the_service_runs_the_worker_and_cron_then_stops(tmp_path: Path) -> None:
    CALLS.clear()
    config = config_from_dict(
        {
            "jobs": {
                "backend": {"type": "sqlite", "path": str(tmp_path / "jobs.db")},
                "tasks": {"rec": {"handler": f"{__name__}:record"}},
                "cron": {"often": {"schedule": "* * * * *", "task": "rec"}},
                "poll_interval": "50ms",
            }
        }
    )
    assert config.app.jobs is not None
    service = JobsService.from_config(config.app.jobs)
    await service.start()
    await asyncio.wait_for(service.opened.wait(), 30)
    job_id = await service.jobs.enqueue("rec", {"n": 1})

    async def completed() -> Any:
        found = await service.backend.get(job_id)
        return found if found is not None and found.state is JobState.COMPLETED else None

    job = await eventually(completed, "the job completed")
    assert job.result == "done"
    status = service.status()
    assert status["backend_open"] is True
    assert status["queues"]["default"]["completed"] == 1
    assert [entry["name"] for entry in status["cron"]] == ["often"]
    assert (await service.counts())["default"]["completed"] == 1
    await service.stop()
    assert CALLS == [{"n": 1}]
