"""The queue backend a config names: ``{type: sqlite|postgres|redis|memory, ...}``.

One discriminated union for every place that takes a backend (``jobs.backend``, the
``job_queue`` source, the ``jobs`` sink), so each reads and documents it the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from syncworker.errors import ConfigError
from syncworker.queue.base import QueueBackend
from syncworker.queue.memory import MemoryQueueConfig
from syncworker.queue.postgres import PostgresQueueConfig
from syncworker.queue.redis import RedisQueueConfig
from syncworker.queue.sqlite import SqliteQueueConfig

QueueBackendConfig = SqliteQueueConfig | PostgresQueueConfig | RedisQueueConfig | MemoryQueueConfig
"""A backend's settings, chosen by ``type``."""

_BY_TYPE: dict[str, type[BaseModel]] = {
    "sqlite": SqliteQueueConfig,
    "postgres": PostgresQueueConfig,
    "redis": RedisQueueConfig,
    "memory": MemoryQueueConfig,
}
BACKEND_TYPES = tuple(_BY_TYPE)


def backend_config(settings: dict[str, Any], *, where: str = "jobs.backend") -> Any:
    """The validated settings of ``settings``; ``ConfigError`` naming ``where`` otherwise."""
    kind = settings.get("type") if isinstance(settings, dict) else None
    if not isinstance(kind, str) or kind not in _BY_TYPE:
        raise ConfigError(f"{where}.type: expected one of {', '.join(BACKEND_TYPES)}, got {kind!r}")
    try:
        return _BY_TYPE[kind].model_validate(settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "type"
        raise ConfigError(f"{where}.{field}: {error['msg']}") from None


def build_backend(settings: dict[str, Any], *, where: str = "jobs.backend") -> QueueBackend:
    """The backend ``settings`` describe, not opened yet."""
    backend: QueueBackend = backend_config(settings, where=where).build()
    return backend
