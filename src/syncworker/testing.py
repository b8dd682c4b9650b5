"""In-memory source, sink and queue for unit tests: yours and ours.

They implement the same protocols as the real connectors (``Source``, ``Sink``, ``Countable``)
and keep what a test needs to assert: what was claimed, acked, nacked and written, in order.
Failures are injected by switching a sink ``down`` (every write raises ``ConnectionFailed``)
or naming keys it rejects (the write raises ``ValueError``, as a database would on bad data).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from syncworker.core.protocols import ConnectorConfig, WriteResult
from syncworker.core.record import Batch, Record
from syncworker.errors import ConnectionFailed


class MemoryQueue:
    """A FIFO of records with claim / ack / nack semantics, shareable by several sources."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._ready: deque[Record] = deque(records)
        self._claimed: dict[int, list[Record]] = {}
        self._ids = itertools.count(1)
        self._arrived = asyncio.Event()

    def put(self, *records: Record) -> None:
        """Enqueue records (a producer)."""
        self._ready.extend(records)
        self._arrived.set()

    def put_many(self, count: int, stream: str = "default", start: int = 0) -> list[Record]:
        """Enqueue ``count`` records keyed ``"{start}"``... with data ``{"n": i}``."""
        records = [
            Record(key=str(i), data={"n": i}, stream=stream) for i in range(start, start + count)
        ]
        self.put(*records)
        return records

    def claim(self, limit: int) -> tuple[int, list[Record]] | None:
        if not self._ready:
            self._arrived.clear()
            return None
        taken = [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]
        claim_id = next(self._ids)
        self._claimed[claim_id] = taken
        return claim_id, taken

    def ack(self, claim_id: int) -> None:
        self._claimed.pop(claim_id)

    def nack(self, claim_id: int) -> None:
        """Put the records back at the head, in their original order."""
        self._ready.extendleft(reversed(self._claimed.pop(claim_id)))
        self._arrived.set()

    async def wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout=timeout_s)
        except TimeoutError:
            return

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def in_flight(self) -> int:
        return sum(len(r) for r in self._claimed.values())


class MemorySourceConfig(ConnectorConfig):
    type: Literal["memory"] = "memory"


class MemorySource:
    """A ``Source`` over a ``MemoryQueue``; records every call for assertions."""

    config_model: ClassVar[type[ConnectorConfig]] = MemorySourceConfig

    def __init__(
        self, queue: MemoryQueue | None = None, *, name: str = "memory", claim_delay_s: float = 0.0
    ) -> None:
        self.name = name
        self.queue = queue if queue is not None else MemoryQueue()
        self.claim_delay_s = claim_delay_s
        self.opened = False
        self.closed = False
        self.acked: list[Record] = []
        self.nacked: list[Record] = []
        self.nack_errors: list[BaseException | None] = []
        self.failed: list[tuple[Record, str]] = []
        self.claims = 0
        self.fail_claims = 0

    async def open(self) -> None:
        self.opened = True
        self.closed = False

    async def claim(self, limit: int) -> Batch | None:
        if self.fail_claims:
            self.fail_claims -= 1
            raise ConnectionFailed(f"{self.name}: claim failed (injected)")
        if self.claim_delay_s:
            await asyncio.sleep(self.claim_delay_s)
        claimed = self.queue.claim(limit)
        if claimed is None:
            return None
        self.claims += 1
        claim_id, records = claimed
        return Batch(list(records), token=claim_id)

    async def wait(self, timeout_s: float) -> None:
        await self.queue.wait(timeout_s)

    async def ack(self, batch: Batch) -> None:
        self.queue.ack(batch.token)
        self.acked.extend(batch.records)

    async def ack_except(self, batch: Batch, failures: dict[int, str]) -> None:
        """Ack the batch; the records at ``failures``' indexes are kept in ``failed`` with
        their error (a source keeping its own failures, ``dead_letter: {store: source}``)."""
        self.queue.ack(batch.token)
        for index, record in enumerate(batch.records):
            if index in failures:
                self.failed.append((record, failures[index]))
            else:
                self.acked.append(record)

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        self.queue.nack(batch.token)
        self.nacked.extend(batch.records)
        self.nack_errors.append(error)

    async def backlog(self) -> int:
        return self.queue.ready

    async def close(self) -> None:
        self.closed = True


class MemorySinkConfig(ConnectorConfig):
    type: Literal["memory"] = "memory"


@dataclass
class MemorySink:
    """A ``Sink`` keeping rows by key, plus every write call in order.

    ``down``: every write raises ``ConnectionFailed`` (the sink is unreachable).
    ``reject_keys``: a write containing one of these keys raises ``ValueError`` (bad data,
    the sink cannot say which record). ``report_keys``: instead of raising, the write returns
    a ``WriteResult`` naming those records. ``write_delay_s``: each write sleeps first.
    """

    config_model: ClassVar[type[ConnectorConfig]] = MemorySinkConfig

    name: str = "memory"
    down: bool = False
    reject_keys: set[str] = field(default_factory=set)
    report_keys: set[str] = field(default_factory=set)
    write_delay_s: float = 0.0
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[list[str]] = field(default_factory=list)
    write_counts: dict[str, int] = field(default_factory=dict)
    concurrent: int = 0
    max_concurrent: int = 0
    opened: bool = False
    closed: bool = False

    async def open(self) -> None:
        self.opened = True
        self.closed = False

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.write_delay_s:
                await asyncio.sleep(self.write_delay_s)
            return self._write(records)
        finally:
            self.concurrent -= 1

    def _write(self, records: Sequence[Record]) -> WriteResult | None:
        self.writes.append([r.key for r in records])
        if self.down:
            raise ConnectionFailed(f"{self.name}: unreachable (injected)")
        bad = [r.key for r in records if r.key in self.reject_keys]
        if bad:
            raise ValueError(f"{self.name}: cannot store key {bad[0]!r}")
        failed: dict[int, BaseException] = {}
        for index, record in enumerate(records):
            if record.key in self.report_keys:
                failed[index] = ValueError(f"{self.name}: refused key {record.key!r}")
                continue
            self.write_counts[record.key] = self.write_counts.get(record.key, 0) + 1
            if record.op == "delete":
                self.rows.pop(record.key, None)
            else:
                self.rows[record.key] = dict(record.data)
        return WriteResult(failed) if failed else None

    async def close(self) -> None:
        self.closed = True


__all__ = ["MemoryQueue", "MemorySink", "MemorySource"]
