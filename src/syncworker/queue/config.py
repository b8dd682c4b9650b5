"""The queue backend a config names: ``{type: sqlite|postgres|redis|memory, ...}``.

One set of models for every place that takes a backend (``jobs.backend``, the ``job_queue``
source, the ``jobs`` sink), so each reads and documents it the same way. The models import
no driver: a config naming PostgreSQL validates without psycopg installed, and ``build``
imports the backend (and its extra) only when it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator

from syncworker.errors import ConfigError
from syncworker.observe.logging import redact_url
from syncworker.queue.base import QueueBackend

DEFAULT_SQLITE_TABLE = "syncworker_jobs"
MAX_PG_IDENTIFIER_BYTES = 63
PG_CHANNEL_SUFFIX = "_jobs"
"""The LISTEN channel is ``<schema>_jobs``: it must fit PostgreSQL's identifier limit too."""


class _Backend(BaseModel):
    model_config = {"extra": "forbid", "frozen": True, "populate_by_name": True}


class SqliteQueueConfig(_Backend):
    """A job table in a SQLite file: the embedded default, no server."""

    type: Literal["sqlite"] = Field("sqlite", description="Queue backend: a SQLite file.")
    path: Path = Field(description="SQLite database file holding the job table.")
    table: str = Field(DEFAULT_SQLITE_TABLE, description="Job table name; created if missing.")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"expected letters, digits and '_', got {value!r}")
        return value

    def build(self) -> QueueBackend:
        from syncworker.queue.sqlite import SqliteQueueBackend

        return SqliteQueueBackend(self.path, table=self.table)


class PostgresQueueConfig(_Backend):
    """Jobs in PostgreSQL tables of one schema (needs the ``postgres`` extra)."""

    type: Literal["postgres"] = Field("postgres", description="Queue backend: PostgreSQL.")
    url: str = Field(description="postgresql://user:password@host:5432/dbname")
    schema_name: str = Field(
        "syncworker", alias="schema", description="Schema holding the jobs and cron tables."
    )
    pool_size: int = Field(4, ge=1, le=100, description="Connections in the pool.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if "://" not in value or parts.scheme.lower() not in {"postgresql", "postgres"}:
            raise ValueError(f"expected a postgresql:// URL, got {redact_url(value)!r}")
        return value

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        limit = MAX_PG_IDENTIFIER_BYTES - len(PG_CHANNEL_SUFFIX)
        if not value or "\x00" in value or len(value.encode()) > limit:
            raise ValueError(f"expected a schema name of 1 to {limit} bytes, got {value!r}")
        return value

    def build(self) -> QueueBackend:
        from syncworker.queue.postgres import PostgresQueueBackend

        return PostgresQueueBackend(self.url, schema=self.schema_name, pool_size=self.pool_size)


class RedisQueueConfig(_Backend):
    """Jobs in Redis, one hash-tagged key set per queue (needs the ``redis`` extra)."""

    type: Literal["redis"] = Field("redis", description="Queue backend: Redis.")
    url: str = Field(description="redis://[user:password@]host:port/db")
    prefix: str = Field("syncworker:jobs", min_length=1, description="prefix of every key")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if urlsplit(value).scheme.lower() not in {"redis", "rediss", "unix"}:
            raise ValueError(
                f"expected a redis://, rediss:// or unix:// url, got {redact_url(value)!r}"
            )
        return value

    def build(self) -> QueueBackend:
        from syncworker.queue.redis import RedisQueueBackend

        return RedisQueueBackend(self.url, prefix=self.prefix)


class MemoryQueueConfig(_Backend):
    """An in-process queue, lost when the process exits: tests, demos, embedded use."""

    type: Literal["memory"] = Field("memory", description="Queue backend: this process.")

    def build(self) -> QueueBackend:
        from syncworker.queue.memory import MemoryQueueBackend

        return MemoryQueueBackend()


QueueBackendConfig = SqliteQueueConfig | PostgresQueueConfig | RedisQueueConfig | MemoryQueueConfig
"""A backend's settings, chosen by ``type``."""

_BY_TYPE: dict[str, type[_Backend]] = {
    "sqlite": SqliteQueueConfig,
    "postgres": PostgresQueueConfig,
    "redis": RedisQueueConfig,
    "memory": MemoryQueueConfig,
}
BACKEND_TYPES = tuple(_BY_TYPE)


def backend_config(settings: Any, *, where: str = "jobs.backend") -> Any:
    """The validated settings of ``settings``; ``ConfigError`` naming ``where`` otherwise."""
    try:
        return validate_backend(settings)
    except ValueError as exc:
        raise ConfigError(f"{where}.{exc}") from None


def validate_backend(settings: Any) -> Any:
    """The model for ``settings`` (for a pydantic ``mode="before"`` validator too), or
    ``ValueError('field: what was expected')``."""
    if isinstance(settings, _Backend):
        return settings
    kind = settings.get("type") if isinstance(settings, dict) else None
    if not isinstance(kind, str) or kind not in _BY_TYPE:
        raise ValueError(f"type: expected one of {', '.join(BACKEND_TYPES)}, got {kind!r}")
    try:
        return _BY_TYPE[kind].model_validate(settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "type"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{field}: {message}") from None


def build_backend(settings: Any, *, where: str = "jobs.backend") -> QueueBackend:
    """The backend ``settings`` describe, not opened yet."""
    backend: QueueBackend = backend_config(settings, where=where).build()
    return backend
