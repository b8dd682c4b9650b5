"""Delivery of one batch to every sink: processors, fan-out, retries, bisection.

The outcome is either "delivered" (some records possibly rejected, to be dead-lettered) or
``SinkUnavailable`` (roll the whole batch back). The runtime decides from the error class
(``errors.is_transient``): a transient error is the sink's fault, anything else the data's.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from syncworker.core.policies import RetryPolicy
from syncworker.core.protocols import Probes, Processor, Sink, WriteResult
from syncworker.core.record import Record
from syncworker.errors import (
    ConfigError,
    LockLost,
    RetryableError,
    SinkUnavailable,
    is_transient,
    stops_pipeline,
)
from syncworker.observe.logging import redact_url

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[bool]]
"""Sleeps for the given seconds; returns False when the pipeline is stopping instead."""


@dataclass(slots=True)
class Rejection:
    """A record that a processor or sink refused, with why."""

    record: Record
    where: str
    error: BaseException
    stack: str | None = None

    def __post_init__(self) -> None:
        # Errors and stacks are kept in the state store and shown by the CLI and API: a
        # driver's message may quote a connection URL with its password.
        if self.stack is not None:
            self.stack = redact_url(self.stack)

    @property
    def message(self) -> str:
        return redact_url(f"{type(self.error).__name__}: {self.error}")


@dataclass(slots=True)
class Delivery:
    """What happened to a batch that was not rolled back."""

    written: list[Record] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    filtered: int = 0
    # What each sink was given and what it refused (records after the processors), for
    # per-sink figures (metrics).
    kept: list[Record] = field(default_factory=list)
    refused_by_sink: dict[str, list[Record]] = field(default_factory=dict)
    # Upserts that created / replaced a record, as the first sink that tells reported them
    # (``WriteResult.added``/``updated``); None when no sink tells.
    added: int | None = None
    updated: int | None = None


@dataclass(slots=True)
class Tally:
    """What one sink's ``WriteResult``s of one batch said it added and updated (summed over
    the writes of a bisection or a retried subset); None until a result tells."""

    added: int | None = None
    updated: int | None = None

    def count(self, result: WriteResult | None) -> None:
        if result is None:
            return
        if result.added is not None:
            self.added = (self.added or 0) + result.added
        if result.updated is not None:
            self.updated = (self.updated or 0) + result.updated


@dataclass(slots=True)
class Processed:
    """Records after the processors, and for each the record as the source delivered it."""

    kept: list[Record] = field(default_factory=list)
    origin: dict[int, Record] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    filtered: int = 0

    def original(self, record: Record) -> Record:
        return self.origin.get(id(record), record)


def apply_processors(processors: Sequence[Processor], records: Sequence[Record]) -> Processed:
    """Run every processor over a copy of every record.

    The source's records stay as delivered, so a batch that is rolled back, or a dead letter
    that is replayed, goes through the processors again from the original data. The copy is
    shallow: processors replace values, they do not edit nested ones in place.
    """
    if not processors:
        return Processed(kept=list(records))
    processed = Processed()
    for original in records:
        current = replace(original, data=dict(original.data), meta=dict(original.meta))
        for processor in processors:
            try:
                result = processor.process(current)
            except Exception as exc:
                where = f"processor:{processor.name}"
                processed.rejected.append(Rejection(original, where, exc, rejection_stack(exc)))
                break
            if result is None:
                processed.filtered += 1
                break
            current = result
        else:
            processed.kept.append(current)
            processed.origin[id(current)] = original
    return processed


class SinkWriter:
    """Writes a batch to one sink: retries an unavailable sink with backoff, bisects a batch
    whose data failed at once (no retry delays), and guards against a sink that reports a
    data error as "unavailable" (``Probes``)."""

    def __init__(self, sink: Sink, retry: RetryPolicy, sleep: Sleep, pipeline: str = "") -> None:
        self.sink = sink
        self._retry = retry
        self._sleep = sleep
        self._pipeline = pipeline

    async def write(self, records: Sequence[Record]) -> list[Rejection]:
        """The records this sink rejected; raises ``SinkUnavailable`` to roll the batch back
        and ``LockLost`` or a ``ConfigError`` (the pipeline stops) unchanged."""
        return await self.write_counted(records, Tally())

    async def write_counted(self, records: Sequence[Record], tally: Tally) -> list[Rejection]:
        """``write``, adding what the sink's results say it added and updated to ``tally``
        (one per call: batches in flight share this writer)."""
        last_exc: BaseException | None = None
        for attempt in range(1, self._retry.attempts + 1):
            try:
                result = await self.sink.write(records)
            except Exception as exc:
                if isinstance(exc, LockLost) or stops_pipeline(exc):
                    raise  # not the data's fault, and not to be retried: hand back and stop
                last_exc = exc
                log.warning(
                    "sink_write_failed",
                    pipeline=self._pipeline,
                    sink=self.sink.name,
                    attempt=attempt,
                    records=len(records),
                    error=redact_url(f"{type(exc).__name__}: {exc}"),
                )
                if not is_transient(exc) or attempt == self._retry.attempts:
                    break  # a data error is bisected now: backoff is for outages
                await self._backoff(attempt, exc)
                continue
            tally.count(result)
            return await self._rejections(records, result, nested=False, tally=tally)
        assert last_exc is not None
        if is_transient(last_exc):
            return await self._guard(records, last_exc, tally)
        return await _Bisection(self, guarded=False, tally=tally).split(records, last_exc)

    async def _guard(
        self, records: Sequence[Record], exc: BaseException, tally: Tally
    ) -> list[Rejection]:
        """The batch failed as "unavailable" through every retry. If the sink's dependency
        answers its probe, the error is likely a record's, misclassified: bisect."""
        if not isinstance(self.sink, Probes):
            raise SinkUnavailable(self.sink.name, exc) from exc
        try:
            await self.sink.probe()
        except Exception:
            raise SinkUnavailable(self.sink.name, exc) from exc
        log.warning(
            "sink_failure_suspect",
            pipeline=self._pipeline,
            sink=self.sink.name,
            records=len(records),
            error=redact_url(f"{type(exc).__name__}: {exc}"),
            reason="the sink answers its probe: bisecting the batch as a data error",
        )
        return await _Bisection(self, guarded=True, tally=tally).split(records, exc)

    async def _backoff(self, attempt: int, exc: BaseException) -> None:
        delay_s = self._retry.delay_for(attempt)
        if isinstance(exc, RetryableError) and exc.delay_s is not None:
            delay_s = max(delay_s, exc.delay_s)
        if not await self._sleep(delay_s):
            raise SinkUnavailable(self.sink.name, RetryableError("pipeline is stopping"))

    async def _rejections(
        self, records: Sequence[Record], result: WriteResult | None, *, nested: bool, tally: Tally
    ) -> list[Rejection]:
        """Turn a sink's per-record report into rejections; transient ones are retried once
        as a smaller batch, and count as the sink being unavailable if they fail again."""
        if result is None or not result.failed:
            return []
        where = f"sink:{self.sink.name}"
        retry = [records[i] for i, exc in sorted(result.failed.items()) if is_transient(exc)]
        rejected = [
            Rejection(records[i], where, exc, rejection_stack(exc))
            for i, exc in sorted(result.failed.items())
            if not is_transient(exc)
        ]
        if retry and nested:
            first = next(exc for exc in result.failed.values() if is_transient(exc))
            raise SinkUnavailable(self.sink.name, first)
        if retry:
            await self._backoff(1, next(e for e in result.failed.values() if is_transient(e)))
            rejected.extend(await self._retry_subset(retry, tally))
        return rejected

    async def _retry_subset(self, records: list[Record], tally: Tally) -> list[Rejection]:
        try:
            result = await self.sink.write(records)
        except Exception as exc:
            if isinstance(exc, LockLost) or stops_pipeline(exc):
                raise
            if is_transient(exc):
                raise SinkUnavailable(self.sink.name, exc) from exc
            return await _Bisection(self, guarded=False, tally=tally).split(records, exc)
        tally.count(result)
        return await self._rejections(records, result, nested=True, tally=tally)


class _Bisection:
    """Splits a failed batch until each failure is pinned on one record; the rest is written.

    ``guarded``: the batch failed as "unavailable" while the sink answers its probe, so
    transient failures of the halves count as the data's too. Then a record is only blamed
    once some other write of the batch succeeded (evidence the sink takes records at all),
    and a bisection that fails again and again with no success gives up: the sink is
    unavailable after all (a full disk, a table gone) and the batch is rolled back whole.
    """

    def __init__(self, writer: SinkWriter, *, guarded: bool, tally: Tally) -> None:
        self.writer = writer
        self.guarded = guarded
        self.tally = tally
        self.written = 0
        self.failures = 0
        self.last_transient: BaseException | None = None

    async def split(self, records: Sequence[Record], exc: BaseException) -> list[Rejection]:
        # Enough failures to walk down to one record twice, with nothing written meanwhile.
        self.limit = 2 * max(1, len(records)).bit_length() + 2
        rejected = await self._split(records, exc)
        if self.guarded and not self.written:
            raise SinkUnavailable(self.writer.sink.name, exc) from exc
        return rejected

    async def _split(self, records: Sequence[Record], exc: BaseException) -> list[Rejection]:
        if len(records) == 1:
            where = f"sink:{self.writer.sink.name}"
            return [Rejection(records[0], where, exc, rejection_stack(exc))]
        middle = len(records) // 2
        rejected: list[Rejection] = []
        for half in (records[:middle], records[middle:]):
            failed: BaseException | None = None
            try:
                result = await self.writer.sink.write(half)
            except Exception as half_exc:
                if isinstance(half_exc, LockLost) or stops_pipeline(half_exc):
                    raise
                if is_transient(half_exc) and not self.guarded:
                    raise SinkUnavailable(self.writer.sink.name, half_exc) from half_exc
                self.failures += 1
                if self.guarded and not self.written and self.failures > self.limit:
                    raise SinkUnavailable(self.writer.sink.name, half_exc) from half_exc
                failed = half_exc
            # Split outside the handler, so a deeper failure does not chain this one.
            if failed is not None:
                rejected.extend(await self._split(half, failed))
                continue
            self.written += 1
            self.tally.count(result)
            rejected.extend(
                await self.writer._rejections(half, result, nested=True, tally=self.tally)
            )
        return rejected


def rejection_stack(exc: BaseException) -> str:
    """One stack for one rejection: the traceback of the outermost error of the explicit
    chain (``raise ... from``) that was raised, and one line for each other error of that
    chain. Not the implicit context: during bisection and retries that is the previous
    attempt's failure, one more block each time."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not seen for seen in chain):
        chain.append(link)
        link = link.__cause__
    raised = next((i for i, e in enumerate(chain) if e.__traceback__ is not None), None)
    if raised is None:
        lines = traceback.format_exception_only(exc)
        rest = chain[1:]
    else:
        lines = traceback.format_exception(chain[raised], chain=False)
        rest = chain[:raised] + chain[raised + 1 :]
    for position, other in enumerate(rest):
        how = "reported as" if raised is not None and position < raised else "caused by"
        text = " ".join(str(other).split())
        lines.append(f"{how}: {type(other).__name__}: {text}\n")
    return "".join(lines)


async def deliver(
    records: Sequence[Record], processors: Sequence[Processor], writers: Sequence[SinkWriter]
) -> Delivery:
    """Process ``records`` and write the survivors to every sink at once.

    Rejections carry the record as the source delivered it, so a requeued dead letter is
    processed again like any new record. Raises ``SinkUnavailable`` if any sink is down
    (after all sinks finished their attempt, so none is left writing in the background).
    """
    processed = apply_processors(processors, records)
    delivery = Delivery(filtered=processed.filtered, rejected=processed.rejected)
    if not processed.kept:
        return delivery
    tallies = [Tally() for _ in writers]
    writes = (w.write_counted(processed.kept, t) for w, t in zip(writers, tallies, strict=True))
    results = await asyncio.gather(*writes, return_exceptions=True)
    for writer, result in zip(writers, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, ConfigError) and result.connector is None:
                result.connector = writer.sink.name  # so the stop names the sink
            raise result
    by_record: dict[int, Rejection] = {}
    delivery.kept = processed.kept
    for writer, result in zip(writers, results, strict=True):
        assert not isinstance(result, BaseException)
        delivery.refused_by_sink[writer.sink.name] = [r.record for r in result]
        for rejection in result:
            _merge(by_record, rejection)
    delivery.written = [r for r in processed.kept if id(r) not in by_record]
    told = next((t for t in tallies if t.added is not None or t.updated is not None), None)
    if told is not None:
        delivery.added, delivery.updated = told.added, told.updated
    for rejection in by_record.values():
        rejection.record = processed.original(rejection.record)
        delivery.rejected.append(rejection)
    return delivery


def _merge(by_record: dict[int, Rejection], rejection: Rejection) -> None:
    """One dead letter per record even when several sinks refused it."""
    existing = by_record.get(id(rejection.record))
    if existing is None:
        by_record[id(rejection.record)] = rejection
        return
    existing.where = f"{existing.where},{rejection.where}"
    existing.stack = "\n".join(s for s in (existing.stack, rejection.stack) if s)
