"""Tasks: a handler's pydantic annotation is its payload model."""

from __future__ import annotations

import pydantic
import pytest

from syncworker.jobs import Jobs, TaskRegistry
from syncworker.jobs.tasks import Task
from syncworker.queue.memory import MemoryQueueBackend


class Push(pydantic.BaseModel):
    user_id: str
    title: str


async def send_push(job: Push, ctx: object) -> str:
    return job.title


def untyped(payload: object) -> None:
    return None


def test_the_first_parameters_model_is_the_tasks_model() -> None:
    assert Task(name="push", fn=send_push).model is Push
    assert Task(name="plain", fn=untyped).model is None


async def test_a_payload_the_model_refuses_is_refused_at_enqueue() -> None:
    registry = TaskRegistry()
    registry.add(Task(name="push", fn=send_push))
    jobs = Jobs(MemoryQueueBackend(), registry)
    with pytest.raises(ValueError, match="user_id: Field required"):
        await jobs.enqueue("push", {"title": "hi"})
    assert await jobs.enqueue("push", {"user_id": "u1", "title": "hi"})
    assert Task(name="push", fn=send_push).parse({"user_id": "u1", "title": "hi"}) == Push(
        user_id="u1", title="hi"
    )
