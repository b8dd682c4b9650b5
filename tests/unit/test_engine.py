"""The engine: several pipelines in one process, run_once, status, signals and shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from syncworker.core import Pipeline, PipelineSettings, RetryPolicy, Schedule
from syncworker.core.engine import Engine
from syncworker.core.policies import BreakerPolicy
from syncworker.errors import ConfigRefused, ConnectionClosed, UnsupportedOperation
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySink, MemorySource

GUARD_S = 10.0


def settings(**overrides: Any) -> PipelineSettings:
    base: dict[str, Any] = {
        "batch_size": 10,
        "max_wait_s": 0.05,
        "retry": RetryPolicy(attempts=2, delay_s=0.001, max_delay_s=0.002, jitter=0),
        "breaker": BreakerPolicy(delay_s=0.01, max_delay_s=0.05),
    }
    base.update(overrides)
    return PipelineSettings(**base)


class Rig:
    """Pipelines over in-memory connectors, sharing one state store, as the engine wants."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = SqliteStateStore(path)
        self.queues: dict[str, MemoryQueue] = {}
        self.sources: dict[str, MemorySource] = {}
        self.sinks: dict[str, MemorySink] = {}

    def pipeline(self, name: str, records: int = 0, **overrides: Any) -> Pipeline:
        queue = MemoryQueue()
        queue.put_many(records, stream=name)
        sink = MemorySink(name=f"{name}-sink", write_delay_s=overrides.pop("write_delay_s", 0.0))
        source = MemorySource(queue, name=f"{name}-source")
        self.queues[name], self.sources[name], self.sinks[name] = queue, source, sink
        return Pipeline(name, source, [sink], settings=settings(**overrides), state=self.state)

    def engine(self, *names: str, records: int = 0, **overrides: Any) -> Engine:
        timeout = overrides.pop("shutdown_timeout_s", 30.0)
        pipelines = [self.pipeline(n, records, **overrides) for n in names]
        return Engine(pipelines, self.state, shutdown_timeout_s=timeout)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path / "state.db")
    yield rig
    await rig.state.close()  # harmless when the engine closed it already


@pytest.fixture
async def restore_signals() -> AsyncIterator[None]:
    """Put SIGTERM/SIGINT handling back after a test that let the engine install its own
    handlers on this loop: remove them from the loop, then reinstate what was there before
    (the asyncio runner's own SIGINT handler, which remove_signal_handler does not know)."""
    loop = asyncio.get_running_loop()
    signums = (signal.SIGTERM, signal.SIGINT)
    before = {signum: signal.getsignal(signum) for signum in signums}
    yield
    for signum in signums:
        loop.remove_signal_handler(signum)
        previous = before[signum]
        if previous is not None and signal.getsignal(signum) is not previous:
            signal.signal(signum, previous)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (generously guarded) until ``condition()`` holds."""

    async def poll() -> None:
        # The in-memory connectors expose plain attributes, not events: poll them.
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(poll(), timeout=GUARD_S)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def opened_reader(path: Path) -> SqliteStateStore:
    reader = SqliteStateStore(path)
    await reader.open()
    return reader


# -- run / request_stop -------------------------------------------------------------------


async def test_two_pipelines_run_concurrently_and_stop(rig: Rig) -> None:
    engine = rig.engine("alpha", "beta", records=5, write_delay_s=0.05)
    both_writing = False

    def watch() -> bool:
        nonlocal both_writing
        both_writing = both_writing or (
            rig.sinks["alpha"].concurrent > 0 and rig.sinks["beta"].concurrent > 0
        )
        return both_writing

    runner = asyncio.create_task(engine.run(install_signal_handlers=False))
    await until(watch, "both sinks writing at the same time")
    await until(
        lambda: len(rig.sinks["alpha"].rows) == 5 and len(rig.sinks["beta"].rows) == 5,
        "every record written",
    )
    # more records keep flowing while the engine runs
    rig.queues["beta"].put_many(3, stream="beta", start=100)
    await until(lambda: len(rig.sinks["beta"].rows) == 8, "late records written")

    engine.request_stop()
    assert await asyncio.wait_for(runner, timeout=GUARD_S) == 0

    for name in ("alpha", "beta"):
        assert engine.pipeline(name).status()["state"] == "stopped"
        assert rig.sources[name].opened and rig.sources[name].closed
        assert rig.sinks[name].opened and rig.sinks[name].closed
        assert rig.queues[name].ready == 0 and rig.queues[name].in_flight == 0
    assert set(rig.sinks["alpha"].rows) == {str(i) for i in range(5)}
    with pytest.raises(ConnectionClosed):
        await rig.state.runs()

    reader = await opened_reader(rig.path)
    try:
        runs = await reader.runs()
    finally:
        await reader.close()
    assert {r.pipeline for r in runs} == {"alpha", "beta"}
    assert sum(r.processed for r in runs if r.pipeline == "beta") == 8


async def test_request_stop_before_anything_arrives(rig: Rig) -> None:
    engine = rig.engine("idle")
    runner = asyncio.create_task(engine.run(install_signal_handlers=False))
    await until(lambda: engine.pipeline("idle").status()["state"] == "running", "running")
    engine.request_stop()
    assert await asyncio.wait_for(runner, timeout=GUARD_S) == 0
    assert rig.sinks["idle"].writes == [] and rig.sources["idle"].closed


async def test_engine_start_opens_the_state_store_for_its_pipelines(rig: Rig) -> None:
    engine = rig.engine("p", records=1)
    rig.sinks["p"].reject_keys.add("0")
    await engine.start()
    try:
        await until(lambda: bool(rig.sources["p"].acked), "the batch settled")
        [letter] = await rig.state.dead_letters("p")
        assert letter.key == "0"
    finally:
        await engine.stop()
    assert rig.sources["p"].closed


# -- run_once / status / construction -----------------------------------------------------


async def test_run_once_returns_one_run_per_pipeline(rig: Rig) -> None:
    engine = rig.engine("alpha", "beta", "gamma", records=0)
    rig.queues["alpha"].put_many(4, stream="alpha")
    rig.queues["beta"].put_many(12, stream="beta")
    runs = await asyncio.wait_for(engine.run_once(), timeout=GUARD_S)

    assert [r.pipeline for r in runs] == ["alpha", "beta", "gamma"]
    assert [r.processed for r in runs] == [4, 12, 0]
    assert {r.status for r in runs} == {"success"}
    assert all(r.id is not None for r in runs)
    assert runs[1].streams == {"beta": 12}
    assert len(rig.sinks["beta"].rows) == 12
    for name in ("alpha", "beta", "gamma"):
        assert rig.sources[name].closed and rig.sinks[name].closed
    with pytest.raises(ConnectionClosed):
        await rig.state.runs()

    reader = await opened_reader(rig.path)
    try:
        logged = await reader.runs()
    finally:
        await reader.close()
    assert sorted(r.id for r in logged) == sorted(r.id for r in runs if r.id is not None)


async def test_run_once_reports_a_failing_pipeline_without_hiding_the_others(rig: Rig) -> None:
    engine = rig.engine("good", "bad", records=3)
    rig.sinks["bad"].down = True
    good, bad = await asyncio.wait_for(engine.run_once(), timeout=GUARD_S)
    assert good.status == "success" and good.written == 3
    assert bad.status == "error" and "ConnectionFailed" in (bad.error or "")
    assert rig.queues["bad"].ready == 3  # rolled back, nothing lost


async def test_status_has_every_pipeline(rig: Rig) -> None:
    engine = rig.engine("alpha", "beta", records=2, schedule=Schedule.manual())
    before = engine.status()
    assert set(before["pipelines"]) == {"alpha", "beta"}
    assert before["started_at"] is None and before["uptime_s"] is None
    assert before["pid"] == os.getpid()

    await engine.start()
    try:
        status = engine.status()
        assert status["started_at"] is not None and status["uptime_s"] >= 0
        assert status["pipelines"]["alpha"]["name"] == "alpha"
        assert status["pipelines"]["beta"]["source"] == "beta-source"
        assert status["pipelines"]["beta"]["sinks"] == ["beta-sink"]
        assert status["pipelines"]["alpha"]["schedule"] == "manual"
    finally:
        await engine.stop()
    after = engine.status()["pipelines"]
    assert {p["state"] for p in after.values()} == {"stopped"}


def test_duplicate_pipeline_names_are_refused(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "state.db")
    first = Pipeline("same", MemorySource(), [MemorySink()])
    second = Pipeline("same", MemorySource(), [MemorySink()])
    with pytest.raises(ValueError, match="pipeline names must be unique"):
        Engine([first, second], state)


def test_pipeline_lookup_by_name(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "state.db")
    pipeline = Pipeline("only", MemorySource(), [MemorySink()])
    engine = Engine([pipeline], state)
    assert engine.pipeline("only") is pipeline
    with pytest.raises(KeyError):
        engine.pipeline("other")


# -- signals ------------------------------------------------------------------------------


async def send_signal_after(condition: Callable[[], bool], what: str, signum: int) -> None:
    await until(condition, what)
    os.kill(os.getpid(), signum)


@pytest.mark.usefixtures("restore_signals")
async def test_sigterm_stops_the_engine(rig: Rig) -> None:
    engine = rig.engine("alpha", "beta", records=3)
    runner = asyncio.create_task(engine.run(install_signal_handlers=True))
    killer = asyncio.create_task(
        send_signal_after(
            lambda: len(rig.sinks["alpha"].rows) == 3 and len(rig.sinks["beta"].rows) == 3,
            "records written",
            signal.SIGTERM,
        )
    )
    assert await asyncio.wait_for(runner, timeout=GUARD_S) == 0
    await killer
    for name in ("alpha", "beta"):
        assert engine.pipeline(name).status()["state"] == "stopped"
        assert rig.sources[name].closed and rig.sinks[name].closed
    with pytest.raises(ConnectionClosed):
        await rig.state.runs()


@pytest.mark.usefixtures("restore_signals")
async def test_sigint_stops_the_engine_too(rig: Rig) -> None:
    engine = rig.engine("p")
    runner = asyncio.create_task(engine.run(install_signal_handlers=True))
    killer = asyncio.create_task(
        send_signal_after(
            lambda: engine.pipeline("p").status()["state"] == "running", "running", signal.SIGINT
        )
    )
    assert await asyncio.wait_for(runner, timeout=GUARD_S) == 0
    await killer
    assert rig.sources["p"].closed


@pytest.mark.usefixtures("restore_signals")
async def test_second_signal_cuts_the_shutdown_timeout_short(rig: Rig) -> None:
    engine = rig.engine("slow", records=4, write_delay_s=30.0, shutdown_timeout_s=20.0)
    queue, source, sink = rig.queues["slow"], rig.sources["slow"], rig.sinks["slow"]
    runner = asyncio.create_task(engine.run(install_signal_handlers=True))

    await until(lambda: sink.concurrent == 1, "a write in progress")
    os.kill(os.getpid(), signal.SIGTERM)
    await until(lambda: engine.pipeline("slow").status()["state"] == "stopping", "stopping")
    assert not runner.done()  # the first signal waits for the in-flight batch
    os.kill(os.getpid(), signal.SIGTERM)

    assert await asyncio.wait_for(runner, timeout=GUARD_S) == 0
    # the unfinished batch went back to its source, in order, and nothing was written
    assert sink.rows == {} and source.acked == []
    assert [r.key for r in source.nacked] == ["0", "1", "2", "3"]
    assert queue.ready == 4 and queue.in_flight == 0
    assert source.closed and sink.closed
    assert engine.pipeline("slow").status()["state"] == "stopped"


# -- issue 9: refusals stop one pipeline; nothing starts once stopping; run_once stops ----


class RefusingSink(MemorySink):
    async def open(self) -> None:
        raise ConfigRefused("refusing sink: password authentication failed for user 'sync'")


async def test_a_refused_pipeline_stops_alone_and_the_others_run_on(rig: Rig) -> None:
    engine = rig.engine("good", records=0)
    good = engine.pipeline("good")
    bad = Pipeline(
        "bad", MemorySource(MemoryQueue()), [RefusingSink(name="pg")], settings=settings()
    )
    engine = Engine([good, bad], rig.state)
    runner = asyncio.create_task(engine.run(install_signal_handlers=False))
    await until(lambda: bad.status()["last_error"] is not None, "the refusal")
    rig.queues["good"].put_many(5, stream="good")
    await until(lambda: len(rig.sinks["good"].rows) == 5, "the other pipeline writing")
    assert not engine.stopping and not runner.done()
    assert bad.status()["state"] == "stopped"
    assert bad.status()["last_error"]["type"] == "open_failed"
    engine.request_stop()
    with pytest.raises(ConfigRefused):  # `run` exits non-zero: a pipeline failed
        await asyncio.wait_for(runner, timeout=GUARD_S)


async def test_the_engine_stops_when_no_pipeline_is_left(rig: Rig) -> None:
    bad = Pipeline(
        "bad", MemorySource(MemoryQueue()), [RefusingSink(name="pg")], settings=settings()
    )
    engine = Engine([bad], rig.state)
    with pytest.raises(ConfigRefused):
        await asyncio.wait_for(engine.run(install_signal_handlers=False), timeout=GUARD_S)


async def test_no_sync_starts_once_the_engine_is_stopping(rig: Rig) -> None:
    engine = rig.engine("slow", records=1, write_delay_s=0.5)
    pipeline, source = engine.pipeline("slow"), rig.sources["slow"]
    await engine.start()
    await until(lambda: rig.sinks["slow"].concurrent == 1, "a write in progress")
    stopping = asyncio.create_task(engine.stop())
    await until(lambda: engine.stopping, "engine_stopping")
    rig.queues["slow"].put_many(3, start=1, stream="slow")
    with pytest.raises(UnsupportedOperation, match="stopping"):
        await pipeline.sync_now()
    with pytest.raises(UnsupportedOperation, match="stopping"):
        await engine.start_pipeline("slow")
    await asyncio.wait_for(stopping, timeout=GUARD_S)
    assert source.closed and rig.queues["slow"].ready == 3  # nothing reopened or claimed


async def test_run_once_stops_claiming_on_request_and_returns_the_rest(rig: Rig) -> None:
    engine = rig.engine("p", records=0, write_delay_s=0.05, batch_size=5, max_in_flight=1)
    queue, sink = rig.queues["p"], rig.sinks["p"]
    queue.put_many(200, stream="p")
    runner = asyncio.create_task(engine.run_once())
    await until(lambda: len(sink.rows) >= 10, "some batches written")
    engine.request_stop()
    (run,) = await asyncio.wait_for(runner, timeout=GUARD_S)
    assert run.status == "success" and 10 <= run.processed < 200
    assert len(sink.rows) == run.processed
    assert queue.ready == 200 - run.processed and queue.in_flight == 0
    assert rig.sources["p"].closed


@pytest.mark.parametrize("schedule", [Schedule.stream(), Schedule.every(0.01)])
async def test_a_pipeline_closed_for_runs_ends_quietly_instead_of_failing(
    rig: Rig, schedule: Schedule
) -> None:
    # engine.stop() closes every pipeline for runs before it stops them one by one: a loop
    # that wakes up in between ends its work, it does not fail with "no new sync starts".
    engine = rig.engine("p", schedule=schedule)
    pipeline = engine.pipeline("p")
    await engine.start()
    await until(lambda: pipeline.status()["state"] == "running", "the pipeline running")
    task = pipeline.task
    assert task is not None
    pipeline.close_for_runs("the engine is stopping: no new sync starts")
    rig.queues["p"].put_many(3, stream="p")  # wakes the loop up
    await asyncio.wait_for(asyncio.shield(task), timeout=GUARD_S)
    assert task.exception() is None
    await engine.stop()
    # A run already under way when the pipeline was closed may have taken them; none is lost.
    assert rig.queues["p"].ready + len(rig.sinks["p"].rows) == 3
