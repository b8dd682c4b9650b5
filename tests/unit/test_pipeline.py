"""The pipeline loop's guarantees, on the in-memory connectors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.waiting import eventually

from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy, Schedule
from syncworker.core.policies import BreakerPolicy
from syncworker.core.protocols import WriteResult
from syncworker.errors import ConfigRefused, ConnectionFailed
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySink, MemorySource

FAST_RETRY = RetryPolicy(attempts=2, delay_s=0.001, max_delay_s=0.002, jitter=0)
FAST_BREAKER = BreakerPolicy(delay_s=0.01, max_delay_s=0.05)


def settings(**overrides: Any) -> PipelineSettings:
    base: dict[str, Any] = {
        "batch_size": 10,
        "max_wait_s": 0.05,
        "retry": FAST_RETRY,
        "breaker": FAST_BREAKER,
    }
    base.update(overrides)
    return PipelineSettings(**base)


def make(
    queue: MemoryQueue, *sinks: MemorySink, state: SqliteStateStore | None = None, **overrides: Any
) -> tuple[Pipeline, MemorySource]:
    source = MemorySource(queue)
    pipeline = Pipeline(
        "p", source, list(sinks) or [MemorySink()], settings=settings(**overrides), state=state
    )
    return pipeline, source


async def test_batches_by_size_and_acks_after_every_sink_wrote() -> None:
    queue = MemoryQueue()
    queue.put_many(25)
    first, second = MemorySink(name="a"), MemorySink(name="b")
    pipeline, source = make(queue, first, second)
    async with pipeline:
        run = await pipeline.run_once()
    assert run.processed == 25 and run.status == "success"
    assert [len(w) for w in first.writes] == [10, 10, 5]
    assert first.rows.keys() == second.rows.keys() == {str(i) for i in range(25)}
    assert [r.key for r in source.acked] == [str(i) for i in range(25)]
    assert queue.in_flight == 0 and queue.ready == 0


@dataclass
class GatedSink(MemorySink):
    """A sink whose writes wait until the test opens ``gate``: slow for as long as needed."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        self.concurrent += 1
        try:
            await self.gate.wait()
        finally:
            self.concurrent -= 1
        return await super().write(records)


async def test_ack_waits_for_the_slowest_sink() -> None:
    queue = MemoryQueue()
    queue.put_many(3)
    fast, slow = MemorySink(name="fast"), GatedSink(name="slow")
    pipeline, source = make(queue, fast, slow)
    await pipeline.start()
    await eventually(lambda: fast.rows and slow.concurrent, "fast written, slow writing")
    assert not slow.rows
    assert source.acked == []
    slow.gate.set()
    await eventually(lambda: len(source.acked) == 3, "the ack after the slow write")
    await pipeline.stop()


async def test_stream_mode_fills_a_batch_within_max_wait() -> None:
    queue = MemoryQueue()
    sink = MemorySink()
    # max_wait far above the 50 ms between the two puts, which a busy machine may stretch
    pipeline, _ = make(queue, sink, batch_size=10, max_wait_s=2.0)
    await pipeline.start()
    await eventually(lambda: pipeline.status()["state"] == "running", "the pipeline to run")
    queue.put_many(4)
    await asyncio.sleep(0.05)  # the rest arrives later, within max_wait: the scenario itself
    queue.put_many(6, start=4)
    await eventually(lambda: sink.writes, "a write")
    await pipeline.stop()
    assert sink.writes[0] == [str(i) for i in range(10)]


async def test_stream_mode_flushes_a_partial_batch_after_max_wait() -> None:
    queue = MemoryQueue()
    sink = MemorySink()
    pipeline, _ = make(queue, sink, batch_size=100, max_wait_s=0.1)
    await pipeline.start()
    queue.put_many(3)
    await eventually(lambda: sink.writes, "the partial batch written")
    await pipeline.stop()
    assert sink.writes == [["0", "1", "2"]]


async def test_a_steady_trickle_does_not_hold_a_batch_past_max_wait() -> None:
    queue = MemoryQueue()
    sink = MemorySink()
    pipeline, _ = make(queue, sink, batch_size=100, max_wait_s=0.05)
    await pipeline.start()
    # A pipeline still opening would find a backlog, not a trickle.
    await eventually(lambda: pipeline.status()["state"] == "running", "the pipeline to run")
    for n in range(100):  # one record every 10 ms: never an empty claim for 1 s
        queue.put_many(1, start=n)
        await asyncio.sleep(0.01)
    await eventually(lambda: sum(len(keys) for keys in sink.writes) == 100, "every record")
    await pipeline.stop()
    assert sum(len(keys) for keys in sink.writes) == 100
    assert len(sink.writes[0]) < 50  # cut at max_wait, not filled to 100


async def test_poison_record_is_bisected_and_dead_lettered(state: SqliteStateStore) -> None:
    queue = MemoryQueue()
    queue.put_many(10)
    sink = MemorySink(reject_keys={"7"})
    pipeline, source = make(queue, sink, state=state)
    async with pipeline:
        run = await pipeline.run_once()
    assert set(sink.rows) == {str(i) for i in range(10)} - {"7"}
    assert len(source.acked) == 10 and source.nacked == []
    assert run.dead_lettered == 1 and run.written == 9
    letters = await state.dead_letters("p")
    assert [(d.key, d.error_type, d.sink) for d in letters] == [("7", "ValueError", "sink:memory")]
    assert "cannot store key '7'" in letters[0].error
    # bisection touches log2(10) levels, not every record one by one
    assert len(sink.writes) < 12


async def test_sink_reported_rejections_are_dead_lettered(state: SqliteStateStore) -> None:
    queue = MemoryQueue()
    queue.put_many(5)
    sink = MemorySink(report_keys={"1", "3"})
    pipeline, source = make(queue, sink, state=state)
    async with pipeline:
        await pipeline.run_once()
    assert set(sink.rows) == {"0", "2", "4"}
    assert sorted(d.key for d in await state.dead_letters("p")) == ["1", "3"]
    assert len(source.acked) == 5


async def test_refused_records_go_back_to_a_source_keeping_failures(
    state: SqliteStateStore,
) -> None:
    queue = MemoryQueue()
    queue.put_many(10)
    sink = MemorySink(reject_keys={"7"}, report_keys={"2"})
    pipeline, source = make(queue, sink, state=state, dead_letter_store="source")
    async with pipeline:
        run = await pipeline.run_once()
    assert set(sink.rows) == {str(i) for i in range(10)} - {"2", "7"}
    assert sorted((r.key, error) for r, error in source.failed) == [
        ("2", "ValueError: memory: refused key '2'"),
        ("7", "ValueError: memory: cannot store key '7'"),
    ]
    assert len(source.acked) == 8 and source.nacked == []
    assert await state.dead_letters("p") == []
    errors = await state.errors(pipeline="p")
    assert sorted((e.type, e.record_key) for e in errors) == [
        ("record_failed", "2"),
        ("record_failed", "7"),
    ]
    assert run.status == "success" and run.written == 8


async def test_stop_hands_in_flight_batches_back_without_an_error() -> None:
    queue = MemoryQueue()
    queue.put_many(5)
    sink = MemorySink(write_delay_s=5)
    pipeline, source = make(queue, sink)
    await pipeline.start()

    await eventually(lambda: sink.concurrent, "a write in flight")
    await pipeline.stop(timeout_s=0.1)
    assert len(source.nacked) == 5 and source.nack_errors == [None]
    assert queue.ready == 5


async def test_rejected_records_without_state_store_are_rolled_back() -> None:
    queue = MemoryQueue()
    queue.put_many(3)
    pipeline, source = make(queue, MemorySink(reject_keys={"1"}))
    async with pipeline:
        run = await pipeline.run_once()
    assert run.status == "error"
    assert source.acked == [] and queue.ready == 3


async def test_whole_batch_failure_rolls_back_and_keeps_order() -> None:
    queue = MemoryQueue()
    queue.put_many(10)
    sink = MemorySink(down=True)
    pipeline, source = make(queue, sink)
    async with pipeline:
        run = await pipeline.run_once()
    assert run.status == "error" and "ConnectionFailed" in (run.error or "")
    assert source.acked == [] and len(source.nacked) == 10
    assert [type(e).__name__ for e in source.nack_errors] == ["SinkUnavailable"]
    assert queue.ready == 10 and queue.in_flight == 0
    assert len(sink.writes) == FAST_RETRY.attempts  # retried, never bisected
    claim = queue.claim(10)
    assert claim is not None and [r.key for r in claim[1]] == [str(i) for i in range(10)]


async def test_circuit_breaker_pauses_and_resumes_when_the_sink_returns() -> None:
    queue = MemoryQueue()
    queue.put_many(30)
    sink = MemorySink(down=True)
    pipeline, source = make(queue, sink, breaker=BreakerPolicy(delay_s=0.05, max_delay_s=0.2))
    errors: list[dict[str, Any]] = []
    pipeline.on("sync_error", errors.append)
    await pipeline.start()
    await eventually(lambda: _tripped(pipeline, 2), "the breaker open after two failures")
    attempts_while_down = len(sink.writes)
    # backoff: far fewer attempts than a hot loop would make
    assert attempts_while_down < 20
    assert errors and "unavailable" in errors[0]["error"]
    sink.down = False
    await eventually(lambda: len(source.acked) == 30, "every record once the sink is back")
    await pipeline.stop()
    assert set(sink.rows) == {str(i) for i in range(30)}
    assert not pipeline.status()["circuit"]["open"]
    assert len(source.acked) == 30


async def test_source_failure_pauses_then_recovers() -> None:
    queue = MemoryQueue()
    queue.put_many(5)
    sink = MemorySink()
    pipeline, source = make(queue, sink)
    source.fail_claims = 2
    await pipeline.start()
    await eventually(lambda: len(sink.rows) == 5, "every record after the failed claims")
    await pipeline.stop()
    assert set(sink.rows) == {str(i) for i in range(5)}
    assert pipeline.status()["last_error"]["type"] == "source_unavailable"


def _tripped(pipeline: Pipeline, failures: int) -> bool:
    circuit = pipeline.status()["circuit"]
    return bool(circuit["open"] and circuit["consecutive_failures"] >= failures)


async def test_in_flight_batches_are_bounded() -> None:
    queue = MemoryQueue()
    queue.put_many(200)
    sink = MemorySink(write_delay_s=0.02)
    pipeline, source = make(queue, sink, max_in_flight=3)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, queue.in_flight)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    async with pipeline:
        await pipeline.run_once()
    watcher.cancel()
    assert sink.max_concurrent == 3
    assert peak <= 3 * 10
    assert len(source.acked) == 200


async def test_processor_errors_and_filters(state: SqliteStateStore) -> None:
    class Upper:
        name = "upper"

        def process(self, record: Record) -> Record | None:
            if record.key == "2":
                raise KeyError("text")
            if record.key == "3":
                return None
            record.data["n"] = record.data["n"] * 10
            return record

    queue = MemoryQueue()
    queue.put_many(5)
    sink = MemorySink()
    pipeline = Pipeline("p", MemorySource(queue), [sink], [Upper()], settings(), state)
    async with pipeline:
        run = await pipeline.run_once()
    assert sink.rows == {"0": {"n": 0}, "1": {"n": 10}, "4": {"n": 40}}
    assert run.filtered == 1 and run.dead_lettered == 1
    [letter] = await state.dead_letters("p")
    assert letter.key == "2" and letter.sink == "processor:upper"


async def test_requeued_dead_letters_are_written_again(state: SqliteStateStore) -> None:
    queue = MemoryQueue()
    queue.put_many(4)
    sink = MemorySink(reject_keys={"2"})
    pipeline, _ = make(queue, sink, state=state)
    async with pipeline:
        await pipeline.run_once()
        assert "2" not in sink.rows
        sink.reject_keys.clear()
        assert await state.requeue_dead_letters(pipeline="p") == 1
        run = await pipeline.run_once()
    assert sink.rows["2"] == {"n": 2}
    assert run.processed == 1
    assert await state.dead_letters("p") == []


async def test_events_and_status_after_a_run() -> None:
    queue = MemoryQueue()
    queue.put_many(3, stream="in")
    queue.put_many(2, stream="out", start=3)
    pipeline, _ = make(queue, MemorySink(), schedule=Schedule.every(60))
    seen: list[tuple[str, dict[str, Any]]] = []
    for name in ("worker_started", "sync_success", "worker_stopped"):
        pipeline.on(name, lambda payload, name=name: seen.append((name, payload)))
    await pipeline.start()
    await eventually(lambda: len(seen) == 2, "worker_started and sync_success")
    await pipeline.stop()
    names = [name for name, _ in seen]
    assert names == ["worker_started", "sync_success", "worker_stopped"]
    success = seen[1][1]
    assert success["processed_count"] == 5 and success["streams"] == {"in": 3, "out": 2}
    assert success["duration_ms"] >= 0
    status = pipeline.status()
    assert status["totals"]["processed"] == 5 and status["last_result"] == "success"
    assert status["state"] == "stopped" and status["last_sync_at"] is not None


async def test_unknown_event_name_is_refused() -> None:
    pipeline, _ = make(MemoryQueue())
    with pytest.raises(ValueError, match="unknown event"):
        pipeline.on("sync_sucess", print)


async def test_failing_event_handler_does_not_disturb_the_pipeline() -> None:
    queue = MemoryQueue()
    queue.put_many(2)
    sink = MemorySink()
    pipeline, _ = make(queue, sink)

    def broken(_: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    pipeline.on("sync_success", broken)
    async with pipeline:
        run = await pipeline.run_once()
    assert run.status == "success" and len(sink.rows) == 2


async def test_secrets_in_errors_never_reach_the_state_store(state: SqliteStateStore) -> None:
    class LeakySink(MemorySink):
        async def write(self, records: Any) -> None:
            raise ValueError("insert failed on postgresql://app:hunter2@db:5432/main")

    queue = MemoryQueue()
    queue.put_many(1)
    pipeline, _ = make(queue, LeakySink(name="leaky"), state=state)
    async with pipeline:
        await pipeline.run_once()
    [letter] = await state.dead_letters("p")
    [error] = await state.errors("p")
    for text in (letter.error, letter.stack or "", error.message, error.stack or ""):
        assert "hunter2" not in text
    assert "postgresql://app:***@db:5432/main" in letter.error


async def test_a_sink_refusing_a_stale_fencing_token_rolls_back(state: SqliteStateStore) -> None:
    from syncworker.errors import LockLost

    class FencedOut(MemorySink):
        async def write(self, records: Any) -> None:
            self.writes.append([r.key for r in records])
            raise LockLost("every row is newer than our fencing token")

    queue = MemoryQueue()
    queue.put_many(4)
    sink = FencedOut(name="fenced")
    pipeline, source = make(queue, sink, state=state)
    async with pipeline:
        run = await pipeline.run_once()
    assert run.status == "error" and "LockLost" in (run.error or "")
    assert len(sink.writes) == 1  # not retried, not bisected
    assert await state.dead_letters("p") == [] and queue.ready == 4 and source.acked == []


# -- issue 9: errors by what they are ----------------------------------------------------


async def until(condition: Any, timeout_s: float = 30.0) -> None:
    """Poll the in-memory connectors' plain attributes until ``condition()`` holds."""

    async def poll() -> None:
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout=timeout_s)


class MisclassifyingSink(MemorySink):
    """A sink reporting the records it cannot take as "unavailable" (a connector's bug), and
    answering a probe: ``probe_ok`` False makes it look down for real."""

    def __init__(self, poison: set[str], *, probe_ok: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poison = poison
        self.probe_ok = probe_ok
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.probe_ok:
            raise ConnectionFailed("probe: unreachable")

    def _write(self, records: Any) -> Any:
        if self.poison & {r.key for r in records}:
            self.writes.append([r.key for r in records])
            raise ConnectionFailed(f"{self.name}: database unavailable (a record's fault, really)")
        return super()._write(records)


async def test_a_misclassified_poison_is_bisected_when_the_sink_answers(
    state: SqliteStateStore,
) -> None:
    queue = MemoryQueue()
    queue.put_many(20)
    sink = MisclassifyingSink({"13"})
    pipeline, _ = make(queue, sink, state=state)
    async with pipeline:
        run = await pipeline.run_once()
    assert run.status == "success" and run.dead_lettered == 1
    assert set(sink.rows) == {str(i) for i in range(20)} - {"13"}
    assert [d.key for d in await state.dead_letters("p")] == ["13"]
    assert sink.probes == 1 and queue.ready == 0


async def test_a_sink_down_for_real_is_rolled_back_not_bisected(state: SqliteStateStore) -> None:
    for sink in (
        MisclassifyingSink({"3"}, probe_ok=False),  # the probe says it is down
        MisclassifyingSink({str(i) for i in range(10)}),  # answers, but takes nothing
    ):
        queue = MemoryQueue()
        queue.put_many(10)
        pipeline, _ = make(queue, sink, state=state)
        async with pipeline:
            run = await pipeline.run_once()
        assert run.status == "error" and run.dead_lettered == 0
        assert queue.ready == 10 and not sink.rows
        assert await state.dead_letters("p") == []


async def test_a_data_error_is_bisected_at_once_without_retry_delays(
    state: SqliteStateStore,
) -> None:
    queue = MemoryQueue()
    queue.put_many(8)
    sink = MemorySink(reject_keys={"5"})
    slow_retry = RetryPolicy(attempts=5, delay_s=3600.0, jitter=0)  # would never finish
    pipeline, _ = make(queue, sink, state=state, retry=slow_retry)
    async with pipeline:
        run = await asyncio.wait_for(pipeline.run_once(), timeout=30)
    assert run.dead_lettered == 1
    assert sink.writes.count([str(i) for i in range(8)]) == 1  # not retried whole


async def test_a_refused_configuration_stops_the_pipeline_and_hands_the_batch_back(
    state: SqliteStateStore,
) -> None:
    class RefusingSink(MemorySink):
        def _write(self, records: Any) -> Any:
            self.writes.append([r.key for r in records])
            raise ConfigRefused("sink: permission denied for table messages")

    queue = MemoryQueue()
    queue.put_many(10)
    sink = RefusingSink(name="warehouse")
    pipeline, source = make(queue, sink, state=state)
    with capture_logs() as logs:
        await pipeline.start()
        task = pipeline.task
        assert task is not None
        with pytest.raises(ConfigRefused):
            await asyncio.wait_for(task, timeout=30)
    [failed] = [e for e in logs if e["event"] == "pipeline_failed"]
    assert failed["connector"] == "warehouse"  # the sink that refused, by its name
    assert len(sink.writes) == 1  # not retried, not bisected
    assert queue.ready == 10 and source.nack_errors == [None]  # handed back, not failed
    status = pipeline.status()
    assert status["state"] == "stopped" and status["last_error"]["type"] == "config_refused"
    assert await state.dead_letters("p") == []
    await pipeline.stop()


async def test_a_pipeline_opens_the_state_store_it_was_given(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")  # not opened, as in the README
    queue = MemoryQueue()
    queue.put_many(5)
    pipeline, _ = make(queue, MemorySink(reject_keys={"2"}), state=store)
    run = await asyncio.wait_for(pipeline.run_once(), timeout=30)
    assert run.status == "success" and run.dead_lettered == 1
    assert [d.key for d in await store.dead_letters("p")] == ["2"]
    await pipeline.close()
    assert not store.is_open  # it opened the store, so it closed it


async def test_a_dead_letter_keeps_one_stack_per_rejection(state: SqliteStateStore) -> None:
    queue = MemoryQueue()
    queue.put_many(64)
    pipeline, _ = make(queue, MemorySink(reject_keys={"41"}), state=state, batch_size=64)
    async with pipeline:
        await pipeline.run_once()
    (letter,) = await state.dead_letters("p")
    full = await state.dead_letter(letter.id)  # type: ignore[arg-type]
    assert full is not None and full.stack is not None
    assert full.stack.count("Traceback (most recent call last)") == 1
    assert "During handling of the above exception" not in full.stack


async def test_a_run_reports_the_breaker_pause_apart_from_its_work() -> None:
    queue = MemoryQueue()
    queue.put_many(30)
    sink = MemorySink(down=True)
    pipeline, _ = make(
        queue,
        sink,
        breaker=BreakerPolicy(delay_s=0.05, max_delay_s=0.05),
        stream_run_max_s=3600.0,
    )
    await pipeline.start()

    await until(lambda: pipeline.status()["circuit"]["consecutive_failures"] >= 1)
    sink.down = False
    await until(lambda: len(sink.rows) == 30 and pipeline.status()["last_sync_at"] is not None)
    await pipeline.stop()
    status = pipeline.status()
    assert status["last_paused_ms"] > 0
    run = pipeline._last_run
    assert run is not None and run.paused_ms == pytest.approx(status["last_paused_ms"], abs=0.1)
    wall_ms = (run.finished_at - run.started_at) * 1000
    assert run.duration_ms == pytest.approx(wall_ms - run.paused_ms)
