"""The ``jobs`` sink under the conformance cases, on the SQLite and PostgreSQL queue backends.

What the sink "holds" is read back from the job rows through the backend itself: jobs in
enqueue order, each job setting its record key (the end of its unique key) to its payload and
each job of the delete task removing it, so the state is what the workers will have been
asked to do last for each key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from syncworker.connectors.jobs.sink import record_key_of
from syncworker.queue.base import QueueBackend
from syncworker.queue.config import build_backend
from tests.conformance.exact import parse_exact
from tests.conformance.harness import Service, SinkHarness
from tests.conformance.services import CLOSED_PORT
from tests.conformance.sources import PostgresService

TASK = "conformance.write"
DELETE_TASK = "conformance.delete"
EVERY_JOB = 100_000


class _JobsHarness(SinkHarness):
    """``deletes = "remove"``: a delete record is a job of ``delete_task``, queued after the
    key's jobs, and the state replays the jobs in order, so the key is gone from what the
    workers are asked to hold. ``rewrite = "idempotent"``: the same record again while its job
    lives adds no job (the unique key)."""

    type_name = "jobs"
    read_back = "the job rows, through the queue backend's list_jobs"

    def backend(self) -> dict[str, Any]:
        raise NotImplementedError

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "jobs",
            "backend": self.backend(),
            "task": TASK,
            "delete_task": DELETE_TASK,
            "queue": "conformance",
            **overrides,
        }

    async def state(self) -> dict[str, Any]:
        backend: QueueBackend = build_backend(self.config()["backend"], where="harness")
        await backend.open()
        try:
            jobs = await backend.list_jobs(limit=EVERY_JOB)
        finally:
            await backend.close()
        current: dict[str, Any] = {}
        for job in sorted(jobs, key=lambda job: int(job.id)):
            assert job.unique_key is not None, job
            key = record_key_of(job.unique_key)
            if job.task == DELETE_TASK:
                current.pop(key, None)
            else:
                current[key] = parse_exact(job.data)
        return current


class JobsSqliteHarness(_JobsHarness):
    reasons: ClassVar[dict[str, str]] = {
        "restart": "embedded: a SQLite queue file, no server to restart",
        "credentials": "a local file: nothing to log in with",
    }

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or str(self.ctx.tmp_path / "jobs.db")

    def backend(self) -> dict[str, Any]:
        return {"type": "sqlite", "path": self.target}


class JobsPostgresHarness(_JobsHarness):
    services = frozenset({"pg"})
    restart = "a private PostgreSQL cluster (pg_ctl stop -m fast, then start)"
    credentials = True

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.ctx.pg_url

    def backend(self) -> dict[str, Any]:
        return {"type": "postgres", "url": self.target, "schema": "conformance_jobs"}

    def private_service(self, password: str | None = None) -> Service:
        return PostgresService()

    async def secret_setup(self, secret: str) -> dict[str, Any]:
        # Trust authentication ignores the password: it only has to stay out of every line.
        url = self.target.replace("postgres@", f"postgres:{secret}@", 1)
        if secret not in url:
            url = self.target.replace("://", f"://root:{secret}@", 1)
        return self.config(backend={**self.backend(), "url": url})

    async def secret_failures(self, secret: str) -> list[BaseException]:
        url = f"postgresql://postgres:{secret}@127.0.0.1:{CLOSED_PORT}/nowhere"
        sink = self.build(backend={**self.backend(), "url": url})
        errors: list[BaseException] = []
        try:
            await sink.open()
        except Exception as exc:
            errors.append(exc)
        finally:
            await sink.close()
        return errors
