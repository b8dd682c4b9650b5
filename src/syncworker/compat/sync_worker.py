"""Seed 000's Python API on syncworker: ``create_sync_worker()``, ``SyncWorker``, writers.

For code written against the hand-made worker: the same names, options and event payloads,
running the syncworker pipeline underneath (reliable Redis lists, lock with fencing,
rollback, dead letters). New code should use a config file or ``syncworker.core.Pipeline``.

    worker = create_sync_worker()          # everything from the seed's environment variables
    worker.on("sync_success", lambda e: print(e["processedCount"], e["inProcessed"]))
    worker.start()                          # inside a running asyncio loop
    await worker.manual_sync()
    print(worker.get_status())              # {isRunning, processId, config}
    await worker.stop()
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from syncworker.config import config_from_dict
from syncworker.core.engine import Engine
from syncworker.core.pipeline import Pipeline
from syncworker.state import state_store_from_url

PIPELINE = "whatsapp"
LISTS = {"in": "whatsapp:in", "out": "whatsapp:out"}
LOCK_KEY = "whatsapp:syncLock"
DAY_FILE = "messages_{stream}_{date}.jsonl"


@dataclass
class SyncWorkerConfig:
    """The seed's settings, in milliseconds as its variables are."""

    sync_interval: int = 60_000
    lock_expiry: int = 300_000
    batch_size: int = 100
    retry_attempts: int = 3
    retry_delay: int = 5_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SyncWorkerConfig:
        env = os.environ if environ is None else environ
        return cls(
            sync_interval=int(env.get("SYNC_INTERVAL_MS", 60_000)),
            lock_expiry=int(env.get("SYNC_LOCK_EXPIRY_MS", 300_000)),
            batch_size=int(env.get("SYNC_BATCH_SIZE", 100)),
            retry_attempts=int(env.get("SYNC_RETRY_ATTEMPTS", 3)),
            retry_delay=int(env.get("SYNC_RETRY_DELAY_MS", 5_000)),
        )

    def merged(self, overrides: Mapping[str, Any] | None) -> SyncWorkerConfig:
        """This config with the seed's camelCase (or snake_case) overrides applied."""
        names = {
            "syncInterval": "sync_interval",
            "lockExpiry": "lock_expiry",
            "batchSize": "batch_size",
            "retryAttempts": "retry_attempts",
            "retryDelay": "retry_delay",
        }
        values = dict(vars(self))
        for key, value in (overrides or {}).items():
            field = names.get(key, key)
            if field not in values:
                raise ValueError(
                    f"unknown sync worker option {key!r}; expected one of {', '.join(names)}"
                )
            values[field] = int(value)
        return SyncWorkerConfig(**values)

    def public(self) -> dict[str, int]:
        """As the seed reports it (``worker_started`` and ``get_status``)."""
        return {
            "syncInterval": self.sync_interval,
            "lockExpiry": self.lock_expiry,
            "batchSize": self.batch_size,
            "retryAttempts": self.retry_attempts,
            "retryDelay": self.retry_delay,
        }


class FileWriter:
    """JSON Lines, one file per day per queue: ``messages_{in|out}_YYYY-MM-DD.jsonl``."""

    def __init__(self, path: str) -> None:
        self.sink = {"type": "jsonl", "name": "file", "path": path, "file": DAY_FILE}


class WebhookWriter:
    """POSTs ``{messages, queueType, timestamp, count}``, 10 s timeout."""

    def __init__(self, url: str, timeout_ms: int = 10_000) -> None:
        self.sink = {"type": "webhook", "name": "webhook", "url": url, "timeout": f"{timeout_ms}ms"}


class PostgresWriter:
    """Upserts each message by key into ``table`` (created if missing)."""

    def __init__(self, url: str, table: str = "messages") -> None:
        self.sink = {"type": "postgres", "name": "postgres", "url": url, "table": table}


Writer = FileWriter | WebhookWriter | PostgresWriter


def writers_from_env(environ: Mapping[str, str] | None = None) -> list[Writer]:
    """The seed's writers, each present when its variable is set (files by default)."""
    env = os.environ if environ is None else environ
    writers: list[Writer] = [FileWriter(env.get("SYNC_FILE_PATH", "./data/sync"))]
    if env.get("SYNC_WEBHOOK_URL"):
        writers.append(WebhookWriter(env["SYNC_WEBHOOK_URL"]))
    postgres = env.get("POSTGRES_URL") or env.get("DATABASE_URL")
    if postgres:
        writers.append(PostgresWriter(postgres))
    return writers


def redis_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """REDIS_URL, or REDIS_HOST / REDIS_PORT / REDIS_PASSWORD as seed 003 names them."""
    env = os.environ if environ is None else environ
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    password = env.get("REDIS_PASSWORD")
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{env.get('REDIS_HOST', '127.0.0.1')}:{env.get('REDIS_PORT', '6379')}/0"


class SyncWorker:
    """The seed's worker: moves ``whatsapp:in`` / ``whatsapp:out`` to every writer."""

    def __init__(
        self,
        redis: str | None = None,
        config: Mapping[str, Any] | None = None,
        writers: list[Writer] | None = None,
        *,
        state: str | None = None,
        key_field: str | None = "id",
    ) -> None:
        self.config = SyncWorkerConfig.from_env().merged(config)
        self.redis_url = redis or redis_url_from_env()
        self.writers = writers if writers is not None else writers_from_env()
        self._state_url = state or os.environ.get(
            "SYNC_STATE_URL", "sqlite:///.syncworker/state.db"
        )
        self._key_field = key_field
        self._handlers: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
        self._engine: Engine | None = None
        self._task: asyncio.Task[None] | None = None

    def on(self, event: str, handler: Callable[[dict[str, Any]], Any]) -> SyncWorker:
        """``sync_success`` {processedCount, duration, inProcessed, outProcessed},
        ``sync_error`` {error, stack}, ``worker_started`` {processId, config},
        ``worker_stopped`` {processId}."""
        if event not in _TRANSLATE:
            raise ValueError(f"unknown event {event!r}; expected one of {sorted(_TRANSLATE)}")
        self._handlers.append((event, handler))
        if self._engine is not None:
            self._subscribe(self._engine.pipeline(PIPELINE), event, handler)
        return self

    def start(self) -> asyncio.Task[None]:
        """Start syncing every ``syncInterval`` in the running loop (not awaited, as in the
        seed); returns the task that starts the engine."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._start(), name="sync-worker-start"
            )
        return self._task

    async def _start(self) -> None:
        engine = self._build()
        self._engine = engine
        await engine.start()

    async def stop(self) -> None:
        """Stop: the sync under way finishes (or rolls back), then everything is closed."""
        task, self._task = self._task, None
        if task is not None:
            await task
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.stop()

    def get_status(self) -> dict[str, Any]:
        pipeline = self._engine.pipeline(PIPELINE) if self._engine is not None else None
        return {
            "isRunning": bool(pipeline and pipeline.status()["running"]),
            "processId": os.getpid(),
            "config": self.config.public(),
        }

    async def manual_sync(self) -> dict[str, Any]:
        """Run a sync now (after the one under way, if any); returns the seed's
        ``sync_success`` payload for it."""
        await self.start()  # starts the worker if needed; waits until it has started
        assert self._engine is not None
        run = await self._engine.pipeline(PIPELINE).sync_now()
        return _success_payload(
            {
                "processed_count": run.processed,
                "duration_ms": run.duration_ms,
                "streams": run.streams,
            }
        )

    def _build(self) -> Engine:
        config = config_from_dict(self._config_dict(), environ={})
        state = state_store_from_url(config.app.state)
        engine = Engine(config.build(state), state)
        pipeline = engine.pipeline(PIPELINE)
        for event, handler in self._handlers:
            self._subscribe(pipeline, event, handler)
        return engine

    def _config_dict(self) -> dict[str, Any]:
        c = self.config
        source: dict[str, Any] = {"type": "redis_list", "url": self.redis_url, "lists": LISTS}
        if self._key_field:
            source["key_field"] = self._key_field
        return {
            "state": self._state_url,
            "pipelines": {
                PIPELINE: {
                    "source": source,
                    "sinks": [w.sink for w in self.writers],
                    "batch": {"size": c.batch_size, "max_wait": "1s"},
                    "schedule": {"every": f"{c.sync_interval}ms"},
                    "retry": {"attempts": c.retry_attempts, "delay": f"{c.retry_delay}ms"},
                    "lock": {"url": self.redis_url, "key": LOCK_KEY, "ttl": f"{c.lock_expiry}ms"},
                }
            },
        }

    def _subscribe(
        self, pipeline: Pipeline, event: str, handler: Callable[[dict[str, Any]], Any]
    ) -> None:
        translate = _TRANSLATE[event]
        pipeline.on(event, lambda payload: handler(translate(payload, self.config)))


def create_sync_worker(**options: Any) -> SyncWorker:
    """A worker configured from the seed's environment variables."""
    return SyncWorker(**options)


def _success_payload(event: dict[str, Any]) -> dict[str, Any]:
    streams = event.get("streams", {})
    return {
        "processedCount": event["processed_count"],
        "duration": event["duration_ms"],
        "inProcessed": streams.get("in", 0),
        "outProcessed": streams.get("out", 0),
    }


_TRANSLATE: dict[str, Callable[[dict[str, Any], SyncWorkerConfig], dict[str, Any]]] = {
    "sync_success": lambda e, _: _success_payload(e),
    "sync_error": lambda e, _: {"error": e["error"], "stack": e["stack"]},
    "worker_started": lambda e, c: {"processId": e["process_id"], "config": c.public()},
    "worker_stopped": lambda e, _: {"processId": e["process_id"]},
}
