"""The contracts between the runtime and connectors.

A connector only says how to connect, claim, write, acknowledge and close for its technology.
Batching, retries, bisection, dead-lettering, the circuit breaker, max-in-flight and shutdown
belong to the pipeline loop (``core/pipeline.py``) and are never re-implemented here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import structlog
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from syncworker.core.fields import enabled_flag, refuse_bool_for_number
from syncworker.core.record import Batch, Record
from syncworker.observe.logging import redact_url
from syncworker.state.base import ErrorRecord, StateStore

log = structlog.get_logger(__name__)

RunMode = Literal["incremental", "full", "force"]
"""The mode of a sync run (``core.pipeline.SyncMode``): ``force`` reads one key or group now
(``SourceContext.force_key``), bypassing the source's staleness checks."""


@runtime_checkable
class Source(Protocol):
    """Where records come from.

    Lifecycle: ``open`` once, then any number of ``claim``/``wait`` calls, each claimed batch
    finished by exactly one ``ack`` or ``nack``, then ``close``. Calls are not concurrent except
    that ``ack``/``nack`` of one batch may run while the next ``claim`` is awaited.
    """

    name: str

    async def open(self) -> None:
        """Connect and recover work abandoned by dead workers.

        Raises ``ConnectionFailed`` when the dependency is unreachable; the runtime retries with
        backoff.
        """

    async def claim(self, limit: int) -> Batch | None:
        """Claim at most ``limit`` records that are available now, without waiting for more.

        Claimed records are invisible to other consumers until acked or nacked, and recoverable
        by another worker if this one dies (lease, processing list, unacked delivery).
        Returns ``None`` (or an empty batch) when nothing is available. A payload the source
        cannot decode never fails the claim and is never dropped: it is delivered wrapped
        (``core.record.wrap``), or, by a source that keeps failures (pg_outbox), marked
        failed alone with its reason while the rest is delivered. Raises ``ConnectorError``
        when the dependency fails; nothing is claimed then.
        """

    async def wait(self, timeout_s: float) -> None:
        """Return when records may be available, or after ``timeout_s`` seconds at most.

        Sources with push notifications (LISTEN/NOTIFY, blocking pops) return early; others
        sleep for their poll interval. Must never raise on timeout.
        """

    async def ack(self, batch: Batch) -> None:
        """Every sink wrote (or dead-lettered) ``batch``: forget it for good.

        Called once per batch. Raising ``ConnectorError`` makes the runtime retry the ack;
        the records may be delivered again, which idempotent sinks absorb.
        """

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Return ``batch`` to the source (rollback) so it is claimed again, in order.

        ``error`` is why: the whole-batch failure (a sink or the network down), or ``None``
        when the batch is only handed back (shutdown, lock lost) and no attempt failed. A
        source that counts attempts counts only the former. Must not lose a record: if it
        fails, the records come back through the source's crash recovery instead.
        """

    async def close(self) -> None:
        """Release connections. Unfinished batches are left to crash recovery."""


@runtime_checkable
class Countable(Protocol):
    """Optional: a source that can tell its backlog (for status, metrics and progress bars)."""

    async def backlog(self) -> int:
        """How many records are waiting to be claimed now."""


@runtime_checkable
class MergesBatches(Protocol):
    """Optional: a source whose claims, taken together to fill one batch, are better settled
    as one (pg_outbox: one ack transaction instead of one per claim, and a row changed
    between two claims becomes one record with its newest state)."""

    def merge(self, batches: list[Batch]) -> Batch:
        """One batch standing for all of ``batches`` (given in claim order): acking or
        nacking it settles every one of them. Called before any record is delivered."""


@runtime_checkable
class KeepsFailures(Protocol):
    """Optional: a source that keeps refused records itself (``dead_letter: {store: source}``),
    retrying them on its own schedule and marking them failed in the source, where its users
    look (pg_outbox: ``status = 'failed'`` with ``last_error``), instead of the state store."""

    async def ack_except(self, batch: Batch, failures: dict[int, str]) -> None:
        """Ack ``batch`` except the records at the indexes of ``failures``, which failed one
        attempt with the given (already redacted) error. One call settles the whole batch."""


@dataclass(slots=True)
class SourceContext:
    """What the pipeline lends a source that asks for it (``UsesContext``): checkpoints that
    outlive the process, the error log, and the mode of the run under way.

    ``mode`` and ``run`` are set by the pipeline when a run starts (``run`` counts runs, so
    a source tells two ``full`` runs in a row apart); a source reads them in ``claim``.
    ``force_key`` is the key or group a ``force`` run asks for (``None`` in other modes).
    Without a state store (a source used on its own) checkpoints live in memory and errors
    are only logged.
    """

    pipeline: str
    state: StateStore | None = None
    mode: RunMode = "incremental"
    run: int = 0
    force_key: str | None = None
    _memory: dict[str, str] = field(default_factory=dict, repr=False)

    async def get_checkpoint(self, name: str) -> str | None:
        """The value last stored under ``name`` for this pipeline, or None. Raises what the
        state store raises when it cannot be read."""
        if self.state is None:
            return self._memory.get(name)
        return await self.state.get_checkpoint(self.pipeline, name)

    async def set_checkpoint(self, name: str, value: str) -> None:
        """Store ``value`` under ``name`` durably before returning. Raises what the state
        store raises when it cannot be written; the caller keeps its position and tries
        again with its next checkpoint."""
        if self.state is None:
            self._memory[name] = value
            return
        await self.state.set_checkpoint(self.pipeline, name, value)

    async def report_error(
        self,
        error_type: str,
        message: str,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        stack: str | None = None,
    ) -> None:
        """Add one entry to the pipeline's error log (the state store's ``record_error``,
        hence ``sync_errors`` where configured). ``message`` and ``stack`` are redacted
        here. Never raises: a store that fails is logged (``error_log_failed``)."""
        if self.state is None:
            return
        record = ErrorRecord(
            type=error_type,
            pipeline=self.pipeline,
            message=redact_url(message),
            record_key=key,
            stack=None if stack is None else redact_url(stack),
            metadata=dict(metadata or {}),
        )
        try:
            await self.state.record_error(record)
        except Exception as exc:
            log.warning("error_log_failed", pipeline=self.pipeline, error=redact_url(str(exc)))


@runtime_checkable
class UsesContext(Protocol):
    """Optional: a source that keeps checkpoints, reports errors or follows the run's mode
    through a ``SourceContext`` (pg_table: its snapshot position, its listener's outages).

    ``full_sync`` says whether a ``full`` run means something to it (it restarts its full
    read when ``context.mode`` is ``full``); the pipeline refuses ``full`` otherwise."""

    full_sync: bool

    def bind(self, context: SourceContext) -> None:
        """Called by the pipeline before every ``open``, with the same context each time.
        Must not do I/O; must not raise."""


@runtime_checkable
class ReportsStatus(Protocol):
    """Optional: a source with a state worth showing (a snapshot's progress, a listening
    connection's health), shown under ``source_status`` in the pipeline's status."""

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture, from memory (no I/O), cheap enough for every status call.
        Must not raise."""


@runtime_checkable
class Resyncs(Protocol):
    """Optional: a source that can be asked to send some records again, by key, with their
    current state (``verify --repair``)."""

    async def resync(self, keys: list[str]) -> int:
        """Queue ``keys`` to be read again and delivered through the normal path (in order
        with the other changes of each key); a key whose record is gone is delivered as a
        delete. Returns how many were queued. Raises ``ConnectorError`` when the dependency
        fails (nothing queued then)."""


@dataclass(slots=True)
class WriteResult:
    """What a sink reports for one batch: the index of each record it rejected, with the error.

    Records not listed are written. A sink that cannot tell records apart raises instead.
    """

    failed: dict[int, BaseException] = field(default_factory=dict)
    added: int | None = None
    """Upserts that created a record the sink did not hold (``None``: the sink cannot tell)."""
    updated: int | None = None
    """Upserts that replaced a record the sink held (``None``: the sink cannot tell)."""


@runtime_checkable
class Sink(Protocol):
    """Where records go. Writes are idempotent by ``Record.key``: writing twice changes nothing.

    ``write`` is called with records of one batch; the same batch may be written again
    (retries, redelivery) or in halves (bisection to isolate a bad record).
    """

    name: str

    async def open(self) -> None:
        """Connect; create what the sink needs (a table, a directory) if configured to.

        Raises ``ConnectionFailed`` when the dependency is unreachable.
        """

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        """Write ``records`` (upserts and deletes by key) durably before returning.

        Raise a ``ConnectorError``/``RetryableError`` when the dependency is unavailable (the
        whole batch is retried with backoff, then rolled back). Raise a ``ConfigError`` (e.g.
        ``ConfigRefused``) when the settings are refused (the batch is handed back and the
        pipeline stops). Raise any other exception when the data is at fault but the sink
        cannot say which record (the runtime bisects at once, without retry delays). Return a
        ``WriteResult`` listing rejected records when it can say (those are dead-lettered):
        the cheapest isolation, preferred whenever the dependency names what it refused.
        """

    async def close(self) -> None:
        """Flush and release connections."""


@runtime_checkable
class Probes(Protocol):
    """Optional: a sink that can tell whether its dependency answers, apart from any record.

    The runtime's guard against a misclassified error: when a batch still fails as
    "unavailable" after its retries while ``probe`` succeeds, the dependency is up and the
    data is suspect, so the batch is bisected like a data error (and dead-lettered only where
    other records of it were written, so a sink that takes nothing is never emptied into the
    dead letters).
    """

    async def probe(self) -> None:
        """Return when the dependency answers now and could take a write (a ping, a
        ``SELECT`` on the table); raise any exception when it does not. Cheap, never writes,
        bounded by the connector's own timeouts."""


@runtime_checkable
class Processor(Protocol):
    """A pure step between source and sinks: map, filter, rename, a Python callable.

    ``process`` gets one record and returns it changed, a replacement, or ``None`` to drop it
    from the sinks (the source still acks it). Raising marks that record as failed: it is
    dead-lettered with the error and the rest of the batch flows on.
    """

    name: str

    def process(self, record: Record) -> Record | None:
        """Transform one record. Must not do I/O."""


class ConnectorConfig(BaseModel):
    """Base of every connector's typed config model: unknown keys are rejected."""

    model_config = {"extra": "forbid", "frozen": True}

    type: str
    name: str | None = Field(
        None, description="name in logs, status and dead letters (default: the type)"
    )
    enabled: bool = Field(
        True,
        description="false, or empty, leaves this sink or processor out; with "
        '"${SYNC_WEBHOOK_URL:+true}" it is on when the variable is set, and joined flags '
        'mean "either is set": "${POSTGRES_URL:+true}${DATABASE_URL:+true}"',
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_number(cls, value, info)

    @field_validator("enabled", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        return enabled_flag(value)


class ConnectorFactory(Protocol):
    """What the registry holds: a class with a config model, built from a validated config."""

    config_model: ClassVar[type[ConnectorConfig]]

    def __call__(self, config: Any, *, name: str) -> Any: ...


@dataclass(slots=True)
class BulkBatch(Batch):
    """A batch of ``rows`` source rows that never become records (the snapshot fast path,
    ``core/bulk.py``): ``await load()`` copies them into the pipeline's only sink, committed
    before it returns, and returns the rows written. It raises a ``PermanentError`` when the
    sink refused the data (the pipeline hands the batch back with that error and the source
    serves the same rows again as records, so bad rows are dead-lettered one by one), or a
    ``ConnectorError``/``RetryableError`` when a dependency is down (rolled back like any
    batch). It travels alone: never merged with other claims."""

    rows: int = 0
    stream: str = ""
    load: Callable[[], Awaitable[int]] | None = None


@runtime_checkable
class CopiesInBulk(Protocol):
    """Optional: a source that can copy whole pages straight into a sink (``BulkBatch``)."""

    def offer_bulk(self, sink: Sink) -> None:
        """Called before ``open`` when records would reach ``sink`` unchanged (no
        processors, exactly one sink); the source decides whether it can use it."""


@dataclass(slots=True)
class GroupEnd(Batch):
    """A source's full read of one group (the registrations of one event) is complete: every
    record of it was delivered, tagged ``meta["sync_run"] == run``, and every batch of it was
    acked before this one was claimed. Sinks that ``ReplacesGroups`` now drop what they hold
    of ``group`` in ``stream`` that this read did not deliver (records gone from the source).
    It has no records and travels alone, never merged with other claims; the pipeline settles
    it with ``finish_group`` on every sink that has it, then acks it (a sink that is down
    rolls it back like any batch: the source serves it again)."""

    stream: str = ""
    group: str = ""
    group_name: str = "group"
    run: str = ""
    count: int = 0
    content_hash: str = ""
    source_modified: str | None = None


@runtime_checkable
class ReplacesGroups(Protocol):
    """Optional: a sink that keeps records by group and removes, on a group's full read, the
    records the source no longer has (the redis sink's per-group index sets)."""

    async def finish_group(self, end: GroupEnd) -> int:
        """Drop what this sink holds of ``end.group`` that the read ``end.run`` did not
        write, and record the group's metadata (count, content hash, sync time, source
        modified time). Returns how many records were removed. Idempotent: called again for
        the same ``end`` it removes nothing more. Raises ``ConnectorError`` when the
        dependency is down (the pipeline rolls the ``GroupEnd`` back)."""


@runtime_checkable
class CountsGroups(Protocol):
    """Optional: a sink that can tell how many records it holds per group (for a source's
    "the counts differ" check in an incremental run)."""

    async def group_counts(self, stream: str, groups: Sequence[str]) -> dict[str, int]:
        """The number of records held for each of ``groups`` of ``stream`` (0 when none).
        Raises ``ConnectorError`` when the dependency is down."""


@runtime_checkable
class UsesGroupCounts(Protocol):
    """Optional: a grouped source that compares its groups' counts with a sink's."""

    def offer_group_counts(self, sink: CountsGroups) -> None:
        """Called before ``open`` with the first sink that ``CountsGroups``. No I/O."""


@runtime_checkable
class ResyncsGroups(Protocol):
    """Optional: a grouped source that can send some records of one group again, by id, with
    their current state (discrepancy repair)."""

    async def resync_group(self, group: str, ids: list[str]) -> int:
        """Queue ``ids`` of ``group`` to be read again and delivered through the normal path;
        an id the source no longer has is delivered as a delete (with ``meta["group"]``).
        Returns how many were queued. Raises ``ConnectorError`` when the dependency fails."""
