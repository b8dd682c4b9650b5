"""``jobs``: a sink that enqueues each record as a job on a queue backend (``queue/``).

A record becomes a job of a task named by the config: the first route whose ``match`` (an
AMQP topic pattern: ``*`` one word, ``#`` any number) fits the record's stream (for the amqp
source, its routing key), else the task named by the record's ``task_field``, else ``task``.
The payload is the record's data, stored as its exact JSON bytes. No task handler needs to be
registered here: jobs are enqueued by name, for the workers that have them.

A write is one ``enqueue_many`` round trip and returns once the backend stored every job
(committed), so a source acks only what is durably enqueued.

Redelivery: every job carries a unique key made of a digest (of the task, and of the payload
unless ``dedupe: key``) and the record key (or ``unique_key_field``): while the job is
delayed, queued or active, the same record written again (a message redelivered after a
broker restart, a retried batch) adds nothing. With ``dedupe: key_and_data`` (the default) a
new message under a held key with other data is a job of its own, never dropped; with
``dedupe: key`` it is dropped while the first job lives (one job per key at a time). Once a
job completed or died its key is free: a redelivery after that is a second job, so handlers
stay idempotent.

Deletes become jobs of ``delete_task`` (payload ``{"key": ..., "data": ...}``), queued after
the key's earlier jobs; without ``delete_task`` a delete is refused (dead-lettered). Refused
too, each alone with its reason while the rest is enqueued: a record no route or task names,
a payload that is not a JSON object (a source's wrapper of a malformed message: with the amqp
source's ``dead_letter: {store: source}`` it goes to the dead-letter exchange), a key too long
or with a NUL character to be a unique key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig, WriteResult
from syncworker.core.record import Record, key_text
from syncworker.errors import PermanentError
from syncworker.jobs.enqueue import Jobs
from syncworker.jobs.tasks import TaskRegistry
from syncworker.queue.base import NewJob, QueueBackend, check_new_job
from syncworker.queue.config import QueueBackendConfig, validate_backend

MAX_KEY_BYTES = 2_000
"""The longest unique key (UTF-8) a record may have: PostgreSQL's btree entries stop near
2,700 bytes, and every backend is held to the same limit."""

DIGEST_CHARS = 16
"""Hex characters of the digest in front of the key in a job's unique key."""

_WRAPPER_KEYS = frozenset({"wrapped", "reason", "raw"})


class Route(BaseModel):
    """Records whose stream matches ``match`` become jobs of ``task``."""

    model_config = {"extra": "forbid", "frozen": True}

    match: str = Field(
        description="Topic pattern on Record.stream (the amqp routing key): words split by "
        "'.', '*' one word, '#' zero or more, e.g. 'media.*' or 'notification.#'."
    )
    task: str = Field(min_length=1, description="Task name of the jobs.")
    queue: str | None = Field(None, description="Queue of the jobs (default: the sink's).")
    priority: int | None = Field(
        None, ge=-1000, le=1000, description="Priority, higher first (default: the sink's)."
    )

    def matches(self, stream: str) -> bool:
        return topic_matches(self.match, stream)


class JobsSinkConfig(ConnectorConfig):
    """Settings of the ``jobs`` sink."""

    type: Literal["jobs"] = Field(
        "jobs", description="Connector type: enqueue each record as a job."
    )
    backend: QueueBackendConfig = Field(
        description="The queue backend, by type: sqlite (path, table), postgres (url, schema, "
        "pool_size), redis (url, prefix) or memory (this process only); the same settings as "
        "jobs.backend."
    )
    routes: list[Route] = Field(
        default_factory=list,
        description="[{match, task, queue, priority}, ...]: the first route whose pattern "
        "matches the record's stream names its task.",
    )
    task_field: str | None = Field(
        None, description="Field of record.data naming the task when no route matches."
    )
    task: str | None = Field(
        None, description="Task of records no route or task_field names (none: refused)."
    )
    delete_task: str | None = Field(
        None,
        description="Task of delete records (payload {key, data}); none: deletes are refused.",
    )
    queue: str = Field("default", min_length=1, description="Queue of the jobs.")
    priority: int = Field(0, ge=-1000, le=1000, description="Priority, higher first.")
    retries: int = Field(
        3,
        ge=0,
        le=100,
        description="Runs after the first failed one, as a task's retries in the jobs: "
        "section (the job row carries them: the worker reads them there).",
    )
    timeout: DurationS | None = Field(
        None,
        gt=0,
        description="A job's time limit, e.g. 30s or 5m (none: the task's, else its queue's).",
    )
    unique_key_field: str | None = Field(
        None,
        description="Field of record.data identifying a message for deduplication (default: "
        "the record key, e.g. the amqp message_id).",
    )
    dedupe: Literal["key_and_data", "key"] = Field(
        "key_and_data",
        description="key_and_data: the same key with the same data adds nothing while its job "
        "lives (a redelivery), other data is a new job; key: one live job per key, later "
        "records under it are dropped until it finished.",
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        return validate_backend(value)

    @model_validator(mode="after")
    def _some_task(self) -> JobsSinkConfig:
        if not (self.routes or self.task_field or self.task):
            raise ValueError("set task, task_field or routes: which task each record becomes")
        return self


@dataclass(frozen=True, slots=True)
class _Target:
    task: str
    queue: str
    priority: int


class JobsSink:
    """Enqueues records as jobs (see the module docstring), one round trip per write.

    Raises what the backend raises when it is unavailable (``ConnectionFailed`` /
    ``ConnectorError``: the runtime retries, then rolls the batch back); refused records are
    reported in the ``WriteResult`` with their reason.
    """

    config_model: ClassVar[type[JobsSinkConfig]] = JobsSinkConfig

    def __init__(
        self,
        config: JobsSinkConfig | dict[str, Any],
        *,
        name: str,
        backend: QueueBackend | None = None,
    ) -> None:
        if not isinstance(config, JobsSinkConfig):
            config = JobsSinkConfig.model_validate(config)
        self.name = name
        self.config = config
        self.backend = backend if backend is not None else config.backend.build()
        self._jobs = Jobs(self.backend, TaskRegistry())
        self._label = f"jobs sink {name!r} ({config.backend.type})"
        self._opened = False

    async def open(self) -> None:
        """Open the backend (creating its tables). Idempotent. Raises ``ConnectionFailed``."""
        if not self._opened:
            await self.backend.open()
            self._opened = True

    async def close(self) -> None:
        """Close the backend. Never raises for a sink that was not opened."""
        if self._opened:
            self._opened = False
            await self.backend.close()

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        """Enqueue ``records`` in one round trip (see the class docstring)."""
        failed: dict[int, BaseException] = {}
        jobs: list[NewJob] = []
        for index, record in enumerate(records):
            try:
                jobs.append(self._job(record))
            except (ValueError, TypeError, RecursionError) as exc:
                failed[index] = PermanentError(f"{self._label}: record {_short(record.key)}: {exc}")
        if jobs:
            await self._jobs.enqueue_many(jobs)
        return WriteResult(failed=failed) if failed else None

    def _job(self, record: Record) -> NewJob:
        target = self._target(record)
        if record.op == "delete":
            payload: Any = {"key": record.key, "data": record.data}
        else:
            payload = record.data
            if not isinstance(payload, dict):
                raise ValueError(f"a job's payload must be a JSON object, got {_kind(payload)}")
            if payload.keys() >= _WRAPPER_KEYS and payload.get("wrapped") is True:
                raise ValueError(
                    f"not a JSON object message ({payload.get('reason')}): no job made of it"
                )
        data = jsonvalue.dumps(payload)
        job = NewJob(
            task=target.task,
            payload=data,
            queue=target.queue,
            priority=target.priority,
            unique_key=self._unique_key(record, target, data),
            max_attempts=self.config.retries + 1,
            timeout_s=self.config.timeout,
        )
        check_new_job(job)
        return job

    def _target(self, record: Record) -> _Target:
        config = self.config
        if record.op == "delete":
            if config.delete_task is None:
                raise ValueError("a delete record, and no delete_task is set")
            return _Target(config.delete_task, config.queue, config.priority)
        for route in config.routes:
            if route.matches(record.stream):
                queue = route.queue or config.queue
                priority = config.priority if route.priority is None else route.priority
                return _Target(route.task, queue, priority)
        if config.task_field is not None:
            named = record.data.get(config.task_field) if isinstance(record.data, dict) else None
            if isinstance(named, str) and named:
                return _Target(named, config.queue, config.priority)
        if config.task is None:
            raise ValueError(f"no route matches stream {record.stream!r} and no task is set")
        return _Target(config.task, config.queue, config.priority)

    def _unique_key(self, record: Record, target: _Target, data: bytes) -> str:
        key: str | None = record.key
        field = self.config.unique_key_field
        if field is not None and isinstance(record.data, dict):
            key = key_text(record.data.get(field)) or record.key
        assert key is not None
        if "\x00" in key:
            raise ValueError("its key contains a NUL character: it cannot be a unique key")
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise ValueError(f"its key is longer than {MAX_KEY_BYTES} bytes")
        digest = hashlib.sha256(target.task.encode())
        if self.config.dedupe == "key_and_data":
            digest.update(b"\x00" + data)
        return f"{digest.hexdigest()[:DIGEST_CHARS]}:{key}"


def record_key_of(unique_key: str) -> str:
    """The record key inside a job's unique key (made by this sink)."""
    return unique_key[DIGEST_CHARS + 1 :]


def topic_matches(pattern: str, stream: str) -> bool:
    """AMQP topic matching: words split by '.', '*' is one word, '#' zero or more."""
    want, have = pattern.split("."), stream.split(".")
    # reach[j]: the words of the pattern so far can match the first j words of the stream.
    reach = [True] + [False] * len(have)
    for word in want:
        if word == "#":
            for j in range(1, len(have) + 1):
                reach[j] = reach[j] or reach[j - 1]
            continue
        for j in range(len(have), 0, -1):
            reach[j] = reach[j - 1] and (word == "*" or word == have[j - 1])
        reach[0] = False
    return reach[len(have)]


def _kind(value: Any) -> str:
    return "a JSON array" if isinstance(value, list) else f"a {type(value).__name__}"


def _short(key: str) -> str:
    return repr(key if len(key) <= 80 else key[:77] + "...")
