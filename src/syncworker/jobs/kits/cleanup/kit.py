"""The clean-up kit: seed 003's cleanup jobs against its tables (see docs/cleanup.md).

Handlers: one per job type (``kit:cleanup.stories`` ...) taking ``CleanupOptions``, and
``run`` taking the seed's ``{type, data?}`` (``CleanupJob``) and dispatching on its type.
Every result is ``{"type", "dry_run", counts...}``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import psycopg
import structlog

from syncworker.connectors.postgres.client import (
    ConnectSettings,
    Pool,
    create_pool,
    dependency_error,
    describe_url,
    open_pool,
)
from syncworker.errors import ConnectionClosed, PermanentError
from syncworker.jobs.context import JobContext
from syncworker.jobs.kits.base import Kit
from syncworker.jobs.kits.cleanup import database, orphans, prekeys, rows
from syncworker.jobs.kits.cleanup.config import CleanupKitConfig
from syncworker.jobs.kits.cleanup.models import CleanupJob, CleanupOptions
from syncworker.jobs.kits.cleanup.sweep import Run
from syncworker.jobs.kits.storage.base import Storage
from syncworker.jobs.kits.storage.config import build_storage

log = structlog.get_logger("syncworker.jobs.kits.cleanup")

Job = Callable[[Run], Awaitable[None]]


class CleanupKit(Kit):
    name = "cleanup"

    def __init__(self, config: CleanupKitConfig) -> None:
        self.config = config
        url = config.database.get_secret_value()
        self.label = f"cleanup {describe_url(url)!r}"
        self.settings = ConnectSettings(
            url=url,
            connect_timeout_s=config.connect_timeout,
            statement_timeout_s=config.statement_timeout,
            application_name="syncworker-cleanup",
        )
        self.storage: Storage | None = (
            build_storage(config.storage) if config.storage is not None else None
        )
        self._pool: Pool | None = None
        self._jobs: dict[str, Job] = {
            "stories": rows.stories,
            "sessions": rows.sessions,
            "messages": rows.messages,
            "temp_files": rows.temp_files,
            "websockets": rows.websockets,
            "prekeys": prekeys.prekeys,
            "orphaned_media": partial(orphans.orphaned_media, settings=self.settings),
            "maintenance": partial(database.maintenance, settings=self.settings),
            "user_stats": database.user_stats,
            "health": database.health,
        }

    async def open(self) -> None:
        pool = create_pool(
            self.settings, min_size=1, max_size=self.config.pool_size, name="cleanup"
        )
        await open_pool(pool, self.config.connect_timeout, self.label)
        self._pool = pool
        if self.storage is not None:
            await self.storage.open()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        if self.storage is not None:
            await self.storage.close()

    def handlers(self) -> Mapping[str, Callable[..., Awaitable[Any]]]:
        named: dict[str, Callable[..., Awaitable[Any]]] = {
            kind: self._named(kind) for kind in self._jobs
        }
        return {**named, "run": self.run}

    async def run(self, job: CleanupJob, ctx: JobContext | None = None) -> dict[str, Any]:
        """The seed's cleanup job: ``job.type`` picks the clean-up."""
        return await self.execute(job.type, job.dry_run, ctx)

    def _named(self, kind: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        """The handler of ``kit:cleanup.{kind}``: a plain function (not a partial) so the
        task registry reads its payload model from the annotation."""

        async def handler(job: CleanupOptions, ctx: JobContext | None = None) -> dict[str, Any]:
            if job.type is not None and job.type != kind:
                raise PermanentError(f"kit:cleanup.{kind} got a job of type {job.type!r}")
            return await self.execute(kind, job.dry_run, ctx)

        handler.__name__ = handler.__qualname__ = kind
        return handler

    async def execute(
        self, kind: str, dry_run: bool = False, ctx: JobContext | None = None
    ) -> dict[str, Any]:
        """Runs one clean-up (also the Python entry point: ``await kit.execute("stories")``)
        and returns its counts. Database failures are raised as syncworker's classes (an
        outage is retried, a missing table or grant is the configuration's)."""
        job = self._jobs.get(kind)
        if job is None:
            raise PermanentError(
                f"unknown clean-up type {kind!r}; expected one of: " + ", ".join(self._jobs)
            )
        if self._pool is None:
            raise ConnectionClosed(f"{self.label}: the kit is not open")
        run = Run(kind, self.config, self._pool, self.storage, dry_run, ctx)
        started = time.monotonic()
        try:
            await job(run)
        except psycopg.Error as exc:
            mapped = dependency_error(exc, f"{self.label}: {kind}")
            if mapped is None:
                raise
            raise mapped from None
        result = run.result()
        log.info(
            "cleanup_finished",
            **result,
            duration_s=round(time.monotonic() - started, 3),
        )
        return result
