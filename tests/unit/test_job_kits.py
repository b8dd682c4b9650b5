"""``kit:FAMILY.NAME`` handlers: how a task finds its kit, and how the jobs service opens the
kits before the first job and closes them after the last."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pydantic
import pytest
from tests.waiting import eventually

from syncworker.config import config_from_dict
from syncworker.errors import ConfigError
from syncworker.jobs.config import build_jobs, build_registry
from syncworker.jobs.context import JobContext
from syncworker.jobs.kits.base import Kit
from syncworker.jobs.service import JobsService
from syncworker.queue.base import JobState


class Shout(pydantic.BaseModel):
    text: str


class LoudKit(Kit):
    """Opens only on its second try, like a database that comes up late."""

    name = "media"

    def __init__(self) -> None:
        self.events: list[str] = []

    async def open(self) -> None:
        self.events.append("open")
        if self.events.count("open") == 1:
            raise ConnectionError("database not up yet")

    async def close(self) -> None:
        self.events.append("close")

    def handlers(self) -> Mapping[str, Callable[..., Awaitable[Any]]]:
        return {"shout": self.shout}

    async def shout(self, job: Shout, ctx: JobContext | None = None) -> str:
        self.events.append("run")
        return job.text.upper()


def jobs_config(handler: str) -> Any:
    raw = {
        "jobs": {
            "backend": {"type": "memory"},
            "tasks": {"shout": {"handler": handler}},
        }
    }
    config = config_from_dict(raw)
    assert config.app.jobs is not None
    return config.app.jobs


def test_a_kit_handler_is_bound_with_its_payload_model() -> None:
    kit = LoudKit()
    registry = build_registry(jobs_config("kit:media.shout"), {"media": kit})
    task = registry.get("shout")
    assert task.model is Shout
    with pytest.raises(ValueError, match="text"):
        task.validate({"wrong": 1})


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        ("kit:media.whisper", "the media kit has no handler 'whisper'; it has: shout"),
        ("kit:cleanup.stories", "the 'cleanup' kit is not configured; add jobs.kits.cleanup"),
    ],
)
def test_an_unknown_kit_handler_is_refused_by_name(handler: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_registry(jobs_config(handler), {"media": LoudKit()})
    assert expected in str(caught.value)
    assert caught.value.path == "jobs.tasks.shout.handler"


def test_a_malformed_kit_handler_is_refused_in_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        jobs_config("kit:media")
    assert "expected 'kit:FAMILY.NAME'" in str(caught.value)


async def test_the_service_opens_a_kit_before_its_jobs_and_closes_it_after() -> None:
    kit = LoudKit()
    service = JobsService(build_jobs(jobs_config("kit:media.shout"), kits={"media": kit}))
    await service.start()
    await asyncio.wait_for(service.opened.wait(), 30)
    job_id = await service.jobs.enqueue("shout", {"text": "hi"})

    async def completed() -> Any:
        job = await service.backend.get(job_id)
        return job if job is not None and job.state is JobState.COMPLETED else None

    job = await eventually(completed, "the kit's job completed")
    await service.stop()
    assert job.result == "HI"
    # The first open failed (retried with backoff), the job ran only once the kit was open.
    assert kit.events == ["open", "open", "run", "close"]
