"""Every sink through the same cases (``registry.SINKS``), against its real service or fake.

A case a sink cannot meet by nature asserts what its harness declares instead (JSONL is
append-only: a rewrite is in the file twice, a delete is a marker line): no case is left out.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from syncworker.config import config_from_dict
from syncworker.connectors.sqlite.queue import SqliteQueue
from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.record import Record
from syncworker.errors import is_transient
from syncworker.observe.logging import is_secret_name
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySink, MemorySource
from tests.conformance.conftest import Logs
from tests.conformance.exact import canon, good_data, poison_records, same
from tests.conformance.harness import PYTHON, REPO, SinkHarness, child_env

pytestmark = pytest.mark.integration

NETWORK_FIELDS = {"url", "host", "port", "hosts"}


def record(key: str, data: Any, op: str = "upsert") -> Record:
    return Record(key=key, data=data, stream="in", op=op)  # type: ignore[arg-type]


def batch(count: int, prefix: str = "k") -> list[Record]:
    return [record(f"{prefix}-{n}", good_data(n)) for n in range(count)]


def entries(records: list[Record]) -> list[tuple[str, str, Any]]:
    return [(r.op, r.key, r.data if r.op == "upsert" else {}) for r in records]


def same_entries(found: list[tuple[str, str, Any]], wanted: list[tuple[str, str, Any]]) -> bool:
    if [(op, key) for op, key, _ in found] != [(op, key) for op, key, _ in wanted]:
        return False
    return all(
        same(a, b) for (op, _, a), (_, _, b) in zip(found, wanted, strict=True) if op == "upsert"
    )


def assert_state(found: dict[str, Any], wanted: dict[str, Any]) -> None:
    assert sorted(found) == sorted(wanted)
    for key, data in wanted.items():
        assert same(found[key], data), f"{key}: {canon(found[key])[:200]}"


def pipeline(
    sinks: list[Any], records: list[Record], state: SqliteStateStore
) -> tuple[Pipeline, MemorySource]:
    source = MemorySource(MemoryQueue(records))
    settings = PipelineSettings(
        batch_size=1000,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=2, delay_s=0.01, jitter=0),
        breaker=BreakerPolicy(delay_s=0.05, max_delay_s=0.2),
    )
    return Pipeline("conformance", source, sinks, settings=settings, state=state), source


async def test_open_write_nothing_and_close(sink: SinkHarness) -> None:
    built = sink.build()
    await built.open()
    await built.open()  # a second open is harmless
    result = await built.write([])
    assert result is None or not result.failed
    await built.close()
    await built.close()  # and so is a second close
    assert await sink.state() == {}


async def test_batch_read_back_exactly(sink: SinkHarness) -> None:
    records = batch(50)
    built = sink.build()
    await built.open()
    try:
        result = await built.write(records)
    finally:
        await built.close()
    assert result is None or not result.failed, result
    assert_state(await sink.state(), {r.key: r.data for r in records})
    log = await sink.log()
    assert log is None or same_entries(log, entries(records))


async def test_later_writes_win_and_order_is_kept(sink: SinkHarness) -> None:
    writes = [
        [record("k-1", {"v": 1}), record("k-2", {"v": 1})],
        [record("k-1", {"v": 2}), record("k-1", {"v": 3})],  # one key twice in a batch
        [record("k-2", {"v": 2})],
    ]
    built = sink.build()
    await built.open()
    try:
        for records in writes:
            result = await built.write(records)
            assert result is None or not result.failed
    finally:
        await built.close()
    assert_state(await sink.state(), {"k-1": {"v": 3}, "k-2": {"v": 2}})
    log = await sink.log()
    assert log is None or same_entries(log, entries([r for w in writes for r in w])), log


async def test_rolled_back_batch_is_redelivered_in_order(
    sink: SinkHarness, state: SqliteStateStore
) -> None:
    records = batch(10)
    other = MemorySink(name="other", down=True)  # the batch fails on another sink
    run, source = pipeline([sink.build(), other], records, state)
    try:
        first = await run.run_once()
        assert first.status == "error" and len(source.nacked) == 10
        other.down = False
        second = await run.run_once()
        assert second.status == "success", second
    finally:
        await run.close()
    assert [r.key for r in source.acked] == [r.key for r in records]
    assert_state(await sink.state(), {r.key: r.data for r in records})
    log = await sink.log()
    assert log is None or same_entries(log, entries(records) * 2), log  # again, in order


async def test_crash_mid_stream_loses_nothing(sink: SinkHarness, state: SqliteStateStore) -> None:
    root = sink.ctx.tmp_path
    count = 1000
    values = [{"id": f"c-{n}", **good_data(n)} for n in range(count)]
    with SqliteQueue(root / "queue.db") as queue:
        queue.enqueue([json.dumps(value).encode() for value in values], stream="in")
    source = {"type": "sqlite_queue", "path": str(root / "queue.db"), "key_field": "id"}
    spec: dict[str, Any] = {
        "state": f"sqlite:///{root}/state.db",
        "pipelines": {
            "crash": {
                "source": source,
                "processors": [{"type": "python", "function": "tests.conformance.child:slow"}],
                "sinks": [sink.config()],
                "batch": {"size": 50, "max_wait": "20ms", "max_in_flight": 2},
            }
        },
    }
    config_path = root / "crash.yaml"
    config_path.write_text(json.dumps(spec))  # JSON is YAML
    held, errors = 0, b""
    for _ in range(3):  # a kill landing between an ack and the next claim is tried again
        held, errors = await _kill_while_holding(sink, config_path, root / "queue.db", count)
        if held:
            break
    assert held, f"no kill landed while the worker held a claimed batch: {errors[-2000:]!r}"
    del spec["pipelines"]["crash"]["processors"]
    (recovered,) = config_from_dict(spec, environ={}).build(state)
    try:
        run = await recovered.run_once()  # the dead worker's claimed batch comes back
    finally:
        await recovered.close()
    assert run.status == "success", (run, errors.decode()[-2000:])
    found = await sink.state()
    assert_state(found, {v["id"]: v for v in values})
    log = await sink.log()
    if log is not None:  # at least once, every line whole
        assert {key for _, key, _ in log} == {v["id"] for v in values}
    if hasattr(sink, "torn"):
        assert not sink.torn()


async def _kill_while_holding(
    sink: SinkHarness, config_path: Path, queue_db: Path, count: int
) -> tuple[int, bytes]:
    """Run the worker until the sink has some records and a batch is claimed, SIGKILL it;
    how many records the dead worker held (claimed, never acked), and its stderr."""
    child = await asyncio.create_subprocess_exec(
        PYTHON,
        *["-m", "syncworker.cli", "--log-level", "warning", "run", str(config_path)],
        cwd=REPO,
        env=child_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.returncode is None:
            if len(await sink.state()) >= count // 10 and _in_flight(queue_db) > 0:
                break
            if _in_flight(queue_db, pending=True) == 0:
                break  # the worker was faster than the kill: every message is done
            await asyncio.sleep(0.02)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        _, errors = await child.communicate()
    return _in_flight(queue_db), errors


def _in_flight(queue_db: Path, *, pending: bool = False) -> int:
    """Messages claimed and not acked (with ``pending``: every message not acked yet)."""
    where = "" if pending else " WHERE claim_id IS NOT NULL"
    with sqlite3.connect(queue_db, timeout=10) as conn:
        row = conn.execute(f"SELECT count(*) FROM syncworker_queue{where}").fetchone()
    return int(row[0])


async def test_reconnects_after_its_service_restarts(sink: SinkHarness) -> None:
    if sink.restart is None:
        # Declared: embedded, no server. Its config has no network address at all.
        assert sink.reasons["restart"]
        model = type(sink.build()).config_model
        assert not NETWORK_FIELDS & set(model.model_fields), "a networked sink must restart"
        return
    service = await sink.open_private()
    built = sink.build(**sink.restart_settings)
    try:
        await built.open()
        first, later = batch(10), batch(10, prefix="after")
        result = await built.write(first)
        assert result is None or not result.failed
        await service.stop()
        with pytest.raises(Exception) as failed:
            await asyncio.wait_for(built.write(later), 30)
        assert is_transient(failed.value), f"not 'unavailable': {failed.value!r}"
        await service.start()
        deadline = time.monotonic() + 30
        while True:  # the runtime retries a sink that is unavailable: so does this
            try:
                result = await built.write(later)
                break
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert result is None or not result.failed
        assert_state(await sink.state(), {r.key: r.data for r in first + later})
    finally:
        await built.close()
        await service.destroy()


async def test_poison_is_isolated_and_values_arrive_exactly(
    sink: SinkHarness, state: SqliteStateStore
) -> None:
    poison = poison_records()
    records: list[Record] = []
    for n, bad in enumerate(poison):
        records += [record(f"g-{n}", good_data(n)), record(bad.key, bad.data)]
    records.append(record(f"g-{len(poison)}", good_data(len(poison))))
    run, source = pipeline([sink.build()], records, state)
    try:
        result = await run.run_once()
    finally:
        await run.close()
    assert not source.nacked, f"the batch was rolled back: {result.error}"
    assert len(source.acked) == len(records), result
    letters = {letter.key: letter for letter in await state.dead_letters(limit=1000)}
    found = await sink.state()
    problems: list[str] = []
    for n in range(len(poison) + 1):
        if f"g-{n}" not in found or not same(found[f"g-{n}"], good_data(n)):
            problems.append(f"good record g-{n} was not written exactly")
    for bad in poison:
        letter = letters.get(bad.key)
        if bad.key in found:
            if not same(found[bad.key], bad.data):
                problems.append(f"{bad.name}: written altered: {canon(found[bad.key])[:160]}")
            if letter is not None:
                problems.append(f"{bad.name}: written and dead-lettered")
        elif letter is None:
            problems.append(f"{bad.name}: neither written nor dead-lettered")
        elif not letter.error.strip():
            problems.append(f"{bad.name}: dead-lettered without a reason")
    assert not problems, "\n".join(problems)


async def test_deletes(sink: SinkHarness) -> None:
    built = sink.build()
    await built.open()
    try:
        await built.write([record("d-1", {"v": 1}), record("d-2", {"v": 2})])
        await built.write([record("d-1", {}, op="delete"), record("d-never", {}, op="delete")])
    finally:
        await built.close()
    assert_state(await sink.state(), {"d-2": {"v": 2}})
    log = await sink.log()
    if sink.deletes == "tombstone":
        # Declared: append-only, the delete is a marker after the record.
        assert sink.reasons["deletes"] and log is not None
        assert [(op, key) for op, key, _ in log] == [
            ("upsert", "d-1"),
            ("upsert", "d-2"),
            ("delete", "d-1"),
            ("delete", "d-never"),
        ]
    else:
        assert log is None


async def test_rewriting_a_batch(sink: SinkHarness) -> None:
    records = [*batch(5), record("k-gone", {}, op="delete")]
    built = sink.build()
    await built.open()
    try:
        await built.write(records)
        once = await sink.state()
        await built.write(records)  # a redelivery
    finally:
        await built.close()
    assert_state(await sink.state(), once)
    log = await sink.log()
    if sink.rewrite == "idempotent":
        assert log is None
    elif sink.rewrite == "append":
        assert sink.reasons["rewrite"] and log is not None
        assert same_entries(log, entries(records) * 2)
    else:  # idempotency_key: sent again, under the same key, so the receiver drops it
        assert sink.reasons["rewrite"]
        posts = sink.server.accepted  # type: ignore[attr-defined]
        assert len(posts) == 2 and posts[0].idempotency_key == posts[1].idempotency_key
        assert posts[0].idempotency_key and posts[1].duplicate


async def test_secrets_never_reach_logs_or_errors(
    sink: SinkHarness, state: SqliteStateStore, logs: Logs
) -> None:
    if not sink.credentials:
        # Declared: nothing to log in with. No setting of its config is a secret.
        assert sink.reasons["credentials"]
        model = type(sink.build()).config_model
        assert not [name for name in model.model_fields if is_secret_name(name)]
        assert not NETWORK_FIELDS & set(model.model_fields)
        return
    secret = f"Cf{int(time.time() * 1000):x}"
    config = await sink.secret_setup(secret)
    records = batch(3)
    trigger = sink.secret_trigger()
    if trigger is not None:
        records.append(trigger)
    run, source = pipeline([sink.build(**config)], records, state)
    try:
        await run.run_once()
    finally:
        await run.close()
    assert len(source.acked) == len(records)
    letters = await state.dead_letters()
    if trigger is not None:  # the service's refusal, echoing the request, was dead-lettered
        assert [letter.key for letter in letters] == [trigger.key]
    failures = await sink.secret_failures(secret)
    assert failures, "no failure was provoked"
    texts = [logs.text, json.dumps(run.status())]
    texts += [f"{letter.error}\n{letter.stack}\n{letter.meta}" for letter in letters]
    texts += [f"{error.message}\n{error.stack}" for error in await state.errors(limit=200)]
    texts += ["".join(traceback.format_exception(exc)) + repr(exc) for exc in failures]
    leaked = [text for text in texts if secret in text]
    assert not leaked, leaked[0][:3000]
