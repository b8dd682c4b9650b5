"""``Jobs``: enqueueing by task name, with the task's defaults and payload model."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from syncworker.errors import ConfigError
from syncworker.jobs.tasks import Task, TaskRegistry
from syncworker.queue.base import NewJob, QueueBackend, check_new_job

JobSpec = NewJob | tuple[str, Any] | tuple[str, Any, dict[str, Any]]
"""What ``enqueue_many`` takes: a ready ``NewJob`` (used as given, its payload checked when
its task has a model), ``(task, payload)`` or ``(task, payload, options)`` with the keyword
options of ``enqueue``."""


class Jobs:
    """Enqueues jobs of the registry's tasks on ``backend``."""

    def __init__(
        self,
        backend: QueueBackend,
        registry: TaskRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self._clock = clock

    async def enqueue(
        self,
        task: str,
        payload: Any = None,
        *,
        delay_s: float | None = None,
        run_at: float | datetime | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        conn: Any = None,
    ) -> str:
        """Enqueue one job of ``task``; returns its id (the existing job's id when
        ``unique_key`` is held). ``ValueError`` for a payload the task's model refuses,
        ``ConfigError`` for an unknown task or a ``conn`` the backend cannot use."""
        job = self.new_job(
            task,
            payload,
            delay_s=delay_s,
            run_at=run_at,
            priority=priority,
            unique_key=unique_key,
            queue=queue,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
        )
        return (await self._store([job], conn))[0]

    async def enqueue_many(self, jobs: Sequence[JobSpec], *, conn: Any = None) -> list[str]:
        """Enqueue many jobs in one backend round trip; ids in order. Every job is checked
        before any is stored."""
        built = [self._spec(spec) for spec in jobs]
        return await self._store(built, conn)

    def new_job(
        self,
        task: str,
        payload: Any = None,
        *,
        delay_s: float | None = None,
        run_at: float | datetime | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> NewJob:
        """The ``NewJob`` ``enqueue`` would store (the task's defaults applied, the payload
        validated)."""
        found = self._task(task)
        if delay_s is not None and run_at is not None:
            raise ValueError("give delay_s or run_at, not both")
        when: float | None
        if isinstance(run_at, datetime):
            if run_at.tzinfo is None:
                raise ValueError("run_at must be an aware datetime (with a time zone)")
            when = run_at.timestamp()
        else:
            when = run_at
        if delay_s is not None:
            when = self._clock() + delay_s
        job = NewJob(
            task=task,
            payload=found.validate({} if payload is None else payload),
            queue=queue or found.queue,
            priority=found.priority if priority is None else priority,
            run_at=when,
            unique_key=unique_key,
            max_attempts=found.max_attempts if max_attempts is None else max_attempts,
            timeout_s=found.timeout_s if timeout_s is None else timeout_s,
        )
        check_new_job(job)
        return job

    def _spec(self, spec: JobSpec) -> NewJob:
        if isinstance(spec, NewJob):
            task = self.registry.get(spec.task)
            if task is not None and task.model is not None:
                spec.payload = task.validate(spec.payload)
            check_new_job(spec)
            return spec
        if len(spec) == 2:
            return self.new_job(spec[0], spec[1])
        name, payload, options = spec
        return self.new_job(name, payload, **options)

    def _task(self, name: str) -> Task:
        task = self.registry.get(name)
        if task is None:
            known = ", ".join(self.registry.names()) or "none"
            raise ConfigError(f"unknown task {name!r} (registered: {known})")
        return task

    async def _store(self, jobs: list[NewJob], conn: Any) -> list[str]:
        if conn is None:
            return await self.backend.enqueue_many(jobs)
        if not _takes_conn(self.backend):
            raise ConfigError(
                f"transactional enqueue (conn=) needs the postgres queue backend; "
                f"{self.backend.kind} ({type(self.backend).__name__}) does not take a connection"
            )
        enqueue: Any = self.backend.enqueue_many
        result: list[str] = await enqueue(jobs, conn=conn)
        return result


def _takes_conn(backend: QueueBackend) -> bool:
    try:
        return "conn" in inspect.signature(backend.enqueue_many).parameters
    except (TypeError, ValueError):
        return False
