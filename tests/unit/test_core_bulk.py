"""The pipeline's side of the bulk fast path (core/bulk.py), on in-memory connectors: a source
that copies pages itself (``BulkBatch``) gets the sink offered only when records would reach
it unchanged; a page is counted and acked once loaded, handed back with the error when the
sink refuses its data (no breaker trip, no failed batch), rolled back when the sink is down,
and always travels alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy
from syncworker.core.policies import BreakerPolicy
from syncworker.core.protocols import BulkBatch, Sink
from syncworker.core.record import Batch
from syncworker.errors import ConnectionFailed, PermanentError
from syncworker.processors.builtin import SetConfig, SetProcessor
from syncworker.testing import MemorySink

SETTINGS = PipelineSettings(
    batch_size=10,
    max_wait_s=0.01,
    retry=RetryPolicy(attempts=1, delay_s=0.001, jitter=0),
    breaker=BreakerPolicy(delay_s=0.01, max_delay_s=0.02),
)


class PageSource:
    """Serves ``pages`` bulk pages of 10 rows (``outcomes`` says what each load does), then
    any page handed back with a PermanentError as records; records first if ``records``."""

    name = "pages"

    def __init__(self, outcomes: Sequence[BaseException | None], records: int = 0) -> None:
        self.offered: Sink | None = None
        self.outcomes = list(outcomes)
        self.records = records
        self.loaded: list[int] = []
        self.acked: list[str] = []
        self.nacked: list[tuple[str, BaseException | None]] = []
        self.as_records: list[int] = []
        self.next_page = 0

    def offer_bulk(self, sink: Sink) -> None:
        self.offered = sink

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def wait(self, timeout_s: float) -> None:
        pass

    async def claim(self, limit: int) -> Batch | None:
        if self.records:
            count, self.records = self.records, 0
            return Batch([Record(f"r{i}", {"i": i}) for i in range(count)], "records")
        if self.as_records:
            page = self.as_records.pop(0)
            return Batch([Record(f"p{page}-{i}", {"i": i}) for i in range(10)], f"page{page}")
        if self.offered is None or not self.outcomes:
            return None
        page, self.next_page = self.next_page, self.next_page + 1
        outcome = self.outcomes.pop(0)
        return BulkBatch([], f"bulk{page}", rows=10, stream="t", load=self._loader(page, outcome))

    def _loader(self, page: int, outcome: BaseException | None) -> Any:
        async def load() -> int:
            if outcome is not None:
                raise outcome
            self.loaded.append(page)
            return 10

        return load

    async def ack(self, batch: Batch) -> None:
        self.acked.append(batch.token)

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        self.nacked.append((batch.token, error))
        if isinstance(error, PermanentError):
            self.as_records.append(int(batch.token.removeprefix("bulk")))
        elif isinstance(batch, BulkBatch):
            self.outcomes.insert(0, None)  # claimed again as a bulk page


async def test_pages_are_loaded_counted_and_acked_without_records() -> None:
    source, sink = PageSource([None, None, None]), MemorySink()
    async with Pipeline("p", source, [sink], settings=SETTINGS) as pipeline:
        run = await pipeline.run_once()
    assert sink.writes == []  # nothing went through the record path
    assert source.offered is sink
    assert run.status == "success" and run.processed == 30
    assert sorted(source.loaded) == [0, 1, 2]
    assert sorted(source.acked) == ["bulk0", "bulk1", "bulk2"]


async def test_a_refused_page_comes_back_as_records_without_a_failure() -> None:
    refused = PermanentError("a row the target refuses")
    source, sink = PageSource([None, refused, None]), MemorySink()
    async with Pipeline("p", source, [sink], settings=SETTINGS) as pipeline:
        run = await pipeline.run_once()
    assert source.nacked == [("bulk1", refused)]
    assert run.status == "success" and run.processed == 30
    assert sink.writes == [[f"p1-{i}" for i in range(10)]]  # page 1, as records
    assert sorted(source.acked) == ["bulk0", "bulk2", "page1"] and run.dead_lettered == 0


async def test_an_unavailable_sink_rolls_the_page_back() -> None:
    down = ConnectionFailed("target down")
    source = PageSource([down])
    async with Pipeline("p", source, [MemorySink()], settings=SETTINGS) as pipeline:
        run = await pipeline.run_once()
    assert source.nacked == [("bulk0", down)]
    assert run.status == "error" and run.processed == 0


async def test_a_page_after_records_is_handed_back_and_travels_alone() -> None:
    source, sink = PageSource([None], records=3), MemorySink()
    async with Pipeline("p", source, [sink], settings=SETTINGS) as pipeline:
        run = await pipeline.run_once()
    assert source.nacked == [("bulk0", None)]  # claimed after 3 records: back, no error
    assert [len(w) for w in sink.writes] == [3]
    assert sorted(source.acked) == ["bulk1", "records"] and run.processed == 13


async def test_no_offer_with_a_processor_or_two_sinks() -> None:
    processor = SetProcessor(SetConfig(fields={"x": 1}))
    for sinks, processors in (([MemorySink()], [processor]), ([MemorySink(), MemorySink()], [])):
        source = PageSource([None])
        async with Pipeline("p", source, sinks, processors, settings=SETTINGS) as pipeline:
            run = await pipeline.run_once()
        assert source.offered is None and source.loaded == [] and run.processed == 0
