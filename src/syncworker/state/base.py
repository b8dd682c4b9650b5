"""What the state store keeps: checkpoints, the run log, the error log and dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

DeadLetterStatus = Literal["dead", "requeued", "replaying"]


@dataclass(slots=True)
class DeadLetter:
    """A record no sink would take (or a processor rejected), kept with its error.

    ``status``: ``dead`` (waiting for a person), ``requeued`` (to be written again by its
    pipeline), ``replaying`` (claimed by the pipeline; back to ``requeued`` if that run dies).
    """

    pipeline: str
    stream: str
    key: str
    op: str
    data: dict[str, Any]
    error: str
    error_type: str
    sink: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    stack: str | None = None
    id: int | None = None
    status: DeadLetterStatus = "dead"
    attempts: int = 1
    created_at: float | None = None
    updated_at: float | None = None

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """JSON-ready for the CLI and the API; ``full`` adds the record and the stack. The key
        is ``record_key``, a name log and output redaction leaves alone."""
        item: dict[str, Any] = {
            "id": self.id,
            "pipeline": self.pipeline,
            "stream": self.stream,
            "record_key": self.key,
            "op": self.op,
            "status": self.status,
            "where": self.sink,
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": self.created_at,
        }
        if full:
            item.update(data=self.data, meta=self.meta, stack=self.stack)
        return item


@dataclass(slots=True)
class RunRecord:
    """One sync run of one pipeline."""

    pipeline: str
    mode: str
    started_at: float
    finished_at: float
    status: Literal["success", "partial", "error", "skipped"]
    processed: int = 0
    written: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    streams: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    id: int | None = None
    # Time the run waited out the circuit breaker's pause (retries after failures).
    paused_ms: float = 0.0
    # Upserts the sinks said created / replaced a record, and records removed at the end of
    # a group's full read (seed 002's records_added/updated/removed); the force run's key;
    # the id the run had while it ran (the API's 409 names it).
    added: int = 0
    updated: int = 0
    removed: int = 0
    key: str | None = None
    sync_id: str | None = None

    @property
    def duration_ms(self) -> float:
        """The run's work: wall time less the circuit breaker's pauses (``paused_ms``)."""
        return max(0.0, (self.finished_at - self.started_at) * 1000.0 - self.paused_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "mode": self.mode,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": round(self.duration_ms, 3),
            "paused_ms": round(self.paused_ms, 3),
            "processed": self.processed,
            "written": self.written,
            "dead_lettered": self.dead_lettered,
            "filtered": self.filtered,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "key": self.key,
            "sync_id": self.sync_id,
            "streams": self.streams,
            "error": self.error,
        }


@dataclass(slots=True)
class ErrorRecord:
    """One logged failure: a whole-batch failure, a dead-lettered record, a failed run."""

    type: str
    pipeline: str
    message: str
    record_key: str | None = None
    stack: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    created_at: float | None = None
    resolved: bool = False


class StateStore(Protocol):
    """Where pipelines keep what must outlive the process. Every method is safe to call from
    several processes at once (the engine and the CLI)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def get_checkpoint(self, pipeline: str, name: str) -> str | None: ...
    async def set_checkpoint(self, pipeline: str, name: str, value: str) -> None: ...

    async def record_run(self, run: RunRecord) -> int: ...
    async def runs(self, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]: ...

    async def record_error(self, error: ErrorRecord) -> int: ...
    async def errors(
        self, pipeline: str | None = None, *, unresolved_only: bool = False, limit: int = 50
    ) -> list[ErrorRecord]: ...
    async def resolve_errors(self, ids: list[int]) -> int: ...

    async def add_dead_letters(self, letters: list[DeadLetter]) -> list[int]: ...
    async def dead_letters(
        self,
        pipeline: str | None = None,
        status: DeadLetterStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeadLetter]: ...
    async def dead_letter(self, letter_id: int) -> DeadLetter | None: ...
    async def count_dead_letters(self, pipeline: str | None = None) -> dict[str, int]: ...
    async def requeue_dead_letters(
        self, ids: list[int] | None = None, pipeline: str | None = None
    ) -> int: ...
    async def claim_requeued(self, pipeline: str, limit: int) -> list[DeadLetter]: ...
    async def release_requeued(self, ids: list[int]) -> None: ...
    async def delete_dead_letters(self, ids: list[int]) -> int: ...
    async def purge_dead_letters(
        self, ids: list[int] | None = None, pipeline: str | None = None
    ) -> int: ...
