"""Every source through the same cases (``registry.SOURCES``), against its real service.

A case a source cannot meet by nature asserts what its harness declares instead (a queue
delivers no deletes, a SQLite file has no server to restart): no case is left out.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
import traceback
from typing import Any

import pytest

from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.protocols import Countable, Source
from syncworker.core.record import Batch, Record
from syncworker.errors import is_transient
from syncworker.observe.logging import is_secret_name
from syncworker.testing import MemorySink
from tests.conformance.conftest import Logs
from tests.conformance.exact import (
    Payload,
    canon,
    good_payload,
    keeps_bytes,
    poison_payloads,
    same,
)
from tests.conformance.harness import PYTHON, REPO, Expected, SourceHarness, child_env

pytestmark = pytest.mark.integration

NETWORK_FIELDS = {"url", "host", "port", "hosts"}


def values(count: int, prefix: str = "m") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{n}", "n": n, "text": f"message {n}"} for n in range(count)]


async def drain(
    source: Source,
    count: int,
    *,
    limit: int = 100,
    timeout_s: float = 15.0,
    ack: bool = True,
    tolerate_errors: bool = False,
    idle_s: float | None = None,
) -> list[Record]:
    """Claim (and ack) until ``count`` records arrived or the deadline passed; with
    ``idle_s``, also once nothing arrived for that long (records a source failed on its own
    never come)."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    last_arrival = time.monotonic()
    while len(records) < count and time.monotonic() < deadline:
        if idle_s is not None and time.monotonic() - last_arrival > idle_s:
            break
        try:
            batch = await source.claim(min(limit, count - len(records)))
        except Exception as exc:
            if not tolerate_errors or not is_transient(exc):
                raise
            await asyncio.sleep(0.1)
            continue
        if batch is None or not batch.records:
            await source.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        records += batch.records
        last_arrival = time.monotonic()
        if ack:
            await source.ack(batch)
    return records


def keys(records: list[Record]) -> list[str]:
    return [record.key for record in records]


async def nothing_left(source: Source) -> None:
    batch = await source.claim(100)
    assert batch is None or not batch.records, f"left over: {keys(batch.records)}"
    if isinstance(source, Countable):
        assert await source.backlog() == 0


def assert_exact(harness: SourceHarness, records: list[Record], sent: list[dict[str, Any]]) -> None:
    assert keys(records) == [value["id"] for value in sent]
    for record, value in zip(records, sent, strict=True):
        assert same(harness.message(record), value), f"{record.key}: {harness.message(record)}"
        assert record.op == "upsert"


async def test_open_claim_nothing_and_close(source: SourceHarness) -> None:
    src = source.build()
    await src.open()
    await src.open()  # a second open is harmless
    await nothing_left(src)
    await src.close()
    await src.close()  # and so is a second close
    await src.open()  # a closed source opens again
    await nothing_left(src)
    await src.close()


async def test_batch_read_back_exactly(source: SourceHarness) -> None:
    sent = values(50)
    await source.produce_values(sent)
    src = source.build()
    await src.open()
    try:
        records = await drain(src, 50, limit=20)
        assert_exact(source, records, sent)
        await nothing_left(src)
    finally:
        await src.close()
    again = source.build()  # acked means gone for good, for the next worker too
    await again.open()
    try:
        await nothing_left(again)
    finally:
        await again.close()


async def test_claims_keep_production_order(source: SourceHarness) -> None:
    sent = values(30)
    await source.produce_values(sent)
    src = source.build()
    await src.open()
    try:
        records = await drain(src, 30, limit=7)
    finally:
        await src.close()
    assert keys(records) == [value["id"] for value in sent]


async def test_nack_redelivers_in_order(source: SourceHarness) -> None:
    sent = values(10)
    await source.produce_values(sent)
    src = source.build()
    await src.open()
    try:
        claimed = await claim_batches(src, 5)
        assert keys([r for b in claimed for r in b.records]) == [f"m-{n}" for n in range(5)]
        for batch in reversed(claimed):  # newest first, as the runtime hands batches back
            await src.nack(batch, RuntimeError("a sink is down"))
        records = await drain(src, 10, limit=10)
        assert_exact(source, records, sent)
        await nothing_left(src)
    finally:
        await src.close()


async def claim_batches(src: Source, count: int, timeout_s: float = 15.0) -> list[Batch]:
    """Batches holding ``count`` records, claimed and left unsettled."""
    batches: list[Batch] = []
    held = 0
    deadline = time.monotonic() + timeout_s
    while held < count and time.monotonic() < deadline:
        batch = await src.claim(count - held)
        if batch is None or not batch.records:
            await src.wait(0.1)
            continue
        batches.append(batch)
        held += len(batch.records)
    return batches


async def test_crash_recovers_the_dead_workers_claim(source: SourceHarness) -> None:
    sent = values(20)
    await source.produce_values(sent)
    config = source.config(**source.crash_settings)
    argv = ["-m", "tests.conformance.child", "source", source.type_name, json.dumps(config), "8"]
    child = await asyncio.create_subprocess_exec(
        PYTHON,
        *argv,
        cwd=REPO,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stderr is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        if not line:
            raise AssertionError((await child.stderr.read()).decode()[-3000:])
        assert json.loads(line) == [f"m-{n}" for n in range(8)]
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)  # no ack, no nack, no close
        await child.wait()
    src = source.build(**source.crash_settings)
    await src.open()
    try:
        records = await drain(src, 20, timeout_s=20)
    finally:
        await src.close()
    assert sorted(keys(records)) == sorted(value["id"] for value in sent), "records were lost"
    by_key = {record.key: record for record in records}
    for value in sent:
        assert same(source.message(by_key[value["id"]]), value)


async def test_reconnects_after_its_service_restarts(source: SourceHarness) -> None:
    if source.restart is None:
        # Declared: embedded, no server. Its config has no network address at all.
        assert source.reasons["restart"]
        model = type(source.build()).config_model
        assert not NETWORK_FIELDS & set(model.model_fields), "a networked source must restart"
        return
    service = await source.open_private()
    src = None
    try:
        sent = values(10)
        await source.produce_values(sent)
        src = source.build(**source.restart_settings)
        await src.open()
        done = await drain(src, 5, limit=5)
        await service.stop()
        # What the source read before the stop (a page read ahead) may still be served, and
        # a source with nothing due may answer nothing; the first claim that needs the
        # service fails, as unavailable, and none hangs.
        served: list[Record] = []
        deadline = time.monotonic() + 30
        with pytest.raises(Exception) as failed:
            while time.monotonic() < deadline:
                batch = await asyncio.wait_for(src.claim(10), 30)
                if batch is None or not batch.records:
                    await src.wait(0.2)
                    continue
                served += batch.records
                await src.ack(batch)
        assert is_transient(failed.value), f"not 'unavailable': {failed.value!r}"
        await service.start()
        later = values(5, prefix="after")
        await source.produce_values(later)
        rest = served + await drain(src, 10 - len(served), timeout_s=30, tolerate_errors=True)
        expected = [v["id"] for v in sent[5:] + later]
        assert keys(done) == [v["id"] for v in sent[:5]]
        assert sorted(keys(rest)) == sorted(expected), "records lost over the restart"
    finally:
        if src is not None:
            await src.close()
        await service.destroy()


async def test_poison_is_isolated_and_values_arrive_exactly(source: SourceHarness) -> None:
    poison = poison_payloads()
    payloads: list[Payload] = []
    for n, bad in enumerate(poison):
        payloads += [good_payload(n), bad]
    payloads.append(good_payload(len(poison)))
    expected = await source.produce(payloads)
    src = source.build()
    await src.open()
    try:
        records = await drain(src, len(payloads), timeout_s=60, idle_s=2)  # a claim failing raises
        failed = await source.failed_by_source()
        await nothing_left(src)
    finally:
        await src.close()
    problems = _compare(source, expected, records, failed)
    assert not problems, "\n".join(problems)
    refused = {e.payload.name for e in expected if e.how == "refused"}
    assert refused == set(source.refused_by_service), refused


def _compare(
    source: SourceHarness, expected: list[Expected], records: list[Record], failed: dict[str, str]
) -> list[str]:
    problems: list[str] = []
    queue = list(records)
    for item in expected:
        name = item.payload.name
        if item.key is not None and item.key in failed:
            if not failed[item.key]:
                problems.append(f"{name}: failed by the source without a reason")
            continue
        if not queue:
            problems.append(f"{name}: never delivered (nor failed by the source)")
            continue
        record = queue.pop(0)
        problems += _check(source, item, record)
    if queue:
        problems.append(f"{len(queue)} records delivered that were never produced")
    return problems


def _check(source: SourceHarness, item: Expected, record: Record) -> list[str]:
    name = item.payload.name
    found: list[str] = []
    if item.payload.facts.get("may_wrap") and keeps_bytes(record.data, item.payload.raw):
        return found
    if item.key is not None and record.key != item.key:
        found.append(f"{name}: key {record.key[:60]!r}, expected {item.key[:60]!r}")
    if item.how == "exact" and not same(source.message(record), item.value):
        found.append(f"{name}: arrived altered: {canon(source.message(record))[:160]}")
    if item.how == "refused" and not same(record.data, item.value):
        found.append(f"{name}: the row arrived altered: {canon(record.data)[:160]}")
    if item.how == "bytes" and not keeps_bytes(record.data, item.payload.raw):
        found.append(f"{name}: wrapped without its bytes: {canon(record.data)[:160]}")
    wanted = item.payload.facts.get("key_object")
    if wanted is not None and item.key is None:
        try:
            as_json = json.loads(record.key)
        except ValueError:
            as_json = None
        if as_json != wanted:
            found.append(f"{name}: an object key became {record.key!r}, not canonical JSON")
    return found


async def test_deletes(source: SourceHarness) -> None:
    src = source.build()
    await src.open()
    try:
        if not source.deletes:
            # Declared: every record is an upsert, whatever the payload says.
            assert source.reasons["deletes"]
            sent = [{"id": "d-1", "op": "delete", "deleted": True}]
            await source.produce_values(sent)
            records = await drain(src, 1)
            assert_exact(source, records, sent)
            return
        await source.produce_values([{"id": "d-1", "v": 1}, {"id": "d-2", "v": 2}])
        assert keys(await drain(src, 2)) == ["d-1", "d-2"]
        await source.delete("d-1")
        (gone,) = await drain(src, 1)
        assert (gone.key, gone.op) == ("d-1", "delete")
        await nothing_left(src)
    finally:
        await src.close()


async def test_same_message_twice_has_the_same_identity(source: SourceHarness) -> None:
    twice = Payload("no_id", b'{"v": 2}', {"v": 2}, True)
    await source.produce_values([{"id": "same", "v": 1}])
    await source.produce_values([{"id": "same", "v": 1}])
    await source.produce([twice])
    await source.produce([twice])
    src = source.build()
    await src.open()
    try:
        records = await drain(src, 4, idle_s=1)
    finally:
        await src.close()
    named = [r for r in records if r.key == "same"]
    others = [r for r in records if r.key != "same"]
    assert named and all(same(source.message(r), {"id": "same", "v": 1}) for r in named)
    assert others and len({r.key for r in others}) == 1, keys(others)  # a stable key
    assert all(same(source.message(r), {"v": 2}) for r in others)


async def test_secrets_never_reach_logs_or_errors(source: SourceHarness, logs: Logs) -> None:
    if not source.credentials:
        # Declared: nothing to log in with. No setting of its config is a secret.
        assert source.reasons["credentials"]
        model = type(source.build()).config_model
        assert not [name for name in model.model_fields if is_secret_name(name)]
        assert not NETWORK_FIELDS & set(model.model_fields)
        return
    secret = f"Cf{secrets.token_hex(8)}"
    errors: list[BaseException] = []
    overrides, service = await source.secret_setup(secret)
    try:
        src = source.build(**overrides)
        await src.open()
        try:
            await source.produce_values(values(3))
            assert len(await drain(src, 3)) == 3
            if service is not None:  # the server goes away under an open source
                await service.stop()
                try:
                    await asyncio.wait_for(src.claim(10), 30)
                except Exception as exc:
                    errors.append(exc)
        finally:
            await src.close()
        errors += await source.secret_failures(secret)
    finally:
        if service is not None:
            await service.destroy()
    assert errors, "no failure was provoked"
    for exc in errors:
        text = "".join(traceback.format_exception(exc)) + repr(exc)
        assert secret not in text, text
    assert secret not in logs.text, logs.text


async def test_poison_flows_through_a_pipeline(source: SourceHarness, state: Any) -> None:
    """The runtime over the real source: every record settles (written, dead-lettered with its
    reason, or failed by the source), nothing stays claimed, the run succeeds."""
    poison = poison_payloads()
    payloads = [good_payload(0), *poison, good_payload(1)]
    await source.produce(payloads)
    sink = MemorySink(name="memory", report_keys={"p-big_int"})  # refuses one record
    settings = PipelineSettings(
        batch_size=100,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=2, delay_s=0.01, jitter=0),
        breaker=BreakerPolicy(delay_s=0.05, max_delay_s=0.2),
    )
    run = Pipeline("conformance", source.build(), [sink], settings=settings, state=state)
    try:
        result = await run.run_once()
    finally:
        await run.close()
    assert result.status == "success", result
    assert {"g-0", "g-1"} <= set(sink.rows)
    letters = await state.dead_letters()
    assert [letter.key for letter in letters] == ["p-big_int"]
    assert letters[0].error.strip()
    failed = await source.failed_by_source()
    assert result.processed + len(failed) == len(payloads), (result, failed)
    src = source.build()
    await src.open()
    try:
        await nothing_left(src)
    finally:
        await src.close()
