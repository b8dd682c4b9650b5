"""The SQLite queue: the enqueue API and the ``sqlite_queue`` source, on real files."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs
from tests.poison_payloads import PAYLOADS, assert_wrapping_logged, check
from tests.waiting import eventually

from syncworker.connectors.sqlite.queue import AsyncSqliteQueue, SqliteQueue
from syncworker.connectors.sqlite.source_queue import SqliteQueueSource, SqliteQueueSourceConfig
from syncworker.core.protocols import Countable, Source
from syncworker.core.record import Batch, key_from_bytes
from syncworker.errors import ConnectorError


def make_source(path: Path, **settings: Any) -> SqliteQueueSource:
    return SqliteQueueSource(
        {"type": "sqlite_queue", "path": str(path), **settings}, name="test.source"
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
async def source(db: Path) -> AsyncIterator[SqliteQueueSource]:
    src = make_source(db)
    await src.open()
    yield src
    await src.close()


def enqueue(db: Path, messages: Any, stream: str = "default") -> int:
    with SqliteQueue(db) as queue:
        return queue.enqueue(messages, stream=stream)


def queue_ids(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [record.meta["queue_id"] for record in batch.records]


def table_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT id, claim_id, owner, attempts FROM syncworker_queue ORDER BY id"
        ).fetchall()


async def test_claim_returns_messages_in_enqueue_order_up_to_limit(
    db: Path, source: SqliteQueueSource
) -> None:
    assert enqueue(db, [{"id": n, "text": f"m{n}"} for n in range(5)], stream="in") == 5

    first = await source.claim(3)
    second = await source.claim(3)

    assert first is not None and second is not None
    assert [r.data["id"] for r in first.records] == [0, 1, 2]
    assert [r.data["id"] for r in second.records] == [3, 4]
    assert await source.claim(3) is None
    record = first.records[0]
    assert record.stream == "in" and record.op == "upsert"
    assert record.meta["attempts"] == 1
    assert isinstance(record.meta["received_at"], float)
    assert first.token != second.token


async def test_source_implements_the_protocols(source: SqliteQueueSource) -> None:
    assert isinstance(source, Source)
    assert isinstance(source, Countable)
    assert source.name == "test.source"
    assert source.owner.startswith(f"{socket.gethostname()}:{os.getpid()}:")


def test_enqueue_accepts_bytes_text_and_mappings_and_rejects_the_rest(db: Path) -> None:
    with SqliteQueue(db) as queue:
        assert queue.enqueue(b"raw") == 1
        assert queue.enqueue("text") == 1
        assert queue.enqueue({"id": 1}) == 1  # one message, not its keys
        assert queue.enqueue([]) == 0
        with pytest.raises(TypeError, match="int"):
            queue.enqueue([{"id": 2}, 3])
        assert queue.backlog() == 3  # the rejected call enqueued nothing
    with sqlite3.connect(db) as conn:
        payloads = [
            row[0] for row in conn.execute("SELECT payload FROM syncworker_queue ORDER BY id")
        ]
    assert payloads == [b"raw", b"text", b'{"id":1}']


async def test_async_queue_enqueues_and_counts(db: Path) -> None:
    async with AsyncSqliteQueue(db) as queue:
        assert await queue.enqueue(({"id": n} for n in range(4)), stream="a") == 4
        assert await queue.enqueue(["x"], stream="b") == 1
        assert await queue.backlog() == 5
        assert await queue.backlog("a") == 4
        assert await queue.backlog(["a", "b"]) == 5


async def test_two_sources_never_claim_the_same_row(db: Path) -> None:
    enqueue(db, [{"id": n} for n in range(2000)])
    sources = [make_source(db), make_source(db)]
    for src in sources:
        await src.open()

    # Each round both sources claim at once (two connections, two threads), so every round
    # races them against each other; rounds make sure both get work whatever the scheduling.
    first: list[int] = []
    second: list[int] = []
    try:
        while True:
            batches = await asyncio.gather(*(src.claim(37) for src in sources))
            if all(batch is None for batch in batches):
                break
            for claimed, batch in zip((first, second), batches, strict=True):
                if batch is not None:
                    claimed.extend(queue_ids(batch))
    finally:
        for src in sources:
            await src.close()

    assert first and second, "both sources should have claimed something"
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(1, 2001))


async def test_ack_deletes_the_batch_rows_only(db: Path, source: SqliteQueueSource) -> None:
    enqueue(db, [{"id": n} for n in range(5)])
    batch = await source.claim(2)
    assert batch is not None

    await source.ack(batch)

    assert [row[0] for row in table_rows(db)] == [3, 4, 5]
    assert await source.backlog() == 3


async def test_nack_makes_rows_claimable_again_in_original_order(
    db: Path, source: SqliteQueueSource
) -> None:
    enqueue(db, [{"id": n} for n in range(8)])
    first = await source.claim(3)
    second = await source.claim(2)
    assert first is not None and second is not None

    await source.nack(first)
    again = await source.claim(4)

    assert again is not None
    assert queue_ids(again) == [1, 2, 3, 6]  # 4 and 5 are still held by ``second``
    assert [r.meta["attempts"] for r in again.records] == [2, 2, 2, 1]
    assert await source.backlog() == 2


async def test_expired_lease_is_reclaimed_and_the_stale_ack_deletes_nothing(db: Path) -> None:
    enqueue(db, [{"id": n} for n in range(3)])
    slow, fast = make_source(db, lease="50ms"), make_source(db, lease="60s")
    await slow.open()
    await fast.open()
    try:
        stale = await slow.claim(10)
        assert await fast.claim(10) is None  # still leased
        fresh = await eventually(lambda: fast.claim(10), "the 50 ms lease to run out")

        assert queue_ids(fresh) == queue_ids(stale) == [1, 2, 3]
        assert fresh is not None
        assert [r.meta["attempts"] for r in fresh.records] == [2, 2, 2]
        await slow.ack(stale)  # the lease was lost: must not delete the new claim's rows
        assert len(table_rows(db)) == 3
        await fast.ack(fresh)
        assert table_rows(db) == []
    finally:
        await slow.close()
        await fast.close()


async def test_open_releases_rows_of_dead_local_owners_only(db: Path) -> None:
    enqueue(db, [{"id": n} for n in range(4)])
    dead_pid = _pid_of_finished_process()
    alive = _start_sleeper()
    host = socket.gethostname()
    leases = {
        1: f"{host}:{dead_pid}:aaaa",
        2: f"{host}:{alive.pid}:bbbb",
        3: f"another-host:{dead_pid}:cccc",
    }
    try:
        with sqlite3.connect(db) as conn:
            for queue_id, owner in leases.items():
                conn.execute(
                    "UPDATE syncworker_queue SET claim_id = ?, owner = ?, "
                    "locked_until = ? WHERE id = ?",
                    (f"claim-{queue_id}", owner, time.time() + 3600, queue_id),
                )
        src = make_source(db)
        await src.open()
        try:
            batch = await src.claim(10)
        finally:
            await src.close()
    finally:
        alive.kill()
        alive.wait()

    assert queue_ids(batch) == [1, 4]


def _start_sleeper() -> subprocess.Popen[bytes]:
    """A live local process to stand for a worker that still holds its lease."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _pid_of_finished_process() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_payloads_that_are_not_json_objects_are_wrapped(
    db: Path, source: SqliteQueueSource
) -> None:
    payloads = [b"PING \xff gateway", "[1, 2]", "42", '"text"', b'{"id": 1}', b"{broken"]
    enqueue(db, payloads)

    batch = await source.claim(10)

    assert batch is not None
    data = [r.data for r in batch.records]
    assert data[4] == {"id": 1}
    wrapped = data[:4] + data[5:]
    assert [d["raw"] for d in wrapped] == [
        "UElORyD/IGdhdGV3YXk=",  # base64: the invalid byte is kept
        "[1, 2]",
        "42",
        '"text"',
        "{broken",
    ]
    for item in wrapped:
        assert item["wrapped"] is True
        assert datetime.fromisoformat(item["received_at"]).utcoffset() is not None


async def test_every_poison_payload_is_one_record_and_blocks_nothing(db: Path) -> None:
    # Before: invalid UTF-8 became U+FFFD (bytes and id lost, no log), an object key a
    # Python repr.
    enqueue(db, [payload for _, payload in PAYLOADS])
    src = make_source(db, key_field="id")
    await src.open()
    try:
        with capture_logs() as logs:
            batch = await src.claim(100)
        assert batch is not None
        check(batch.records)
        assert_wrapping_logged(logs)
        await src.ack(batch)
        assert await src.claim(100) is None
    finally:
        await src.close()


async def test_a_text_row_that_is_not_utf8_is_wrapped_instead_of_failing_the_claim(
    db: Path,
) -> None:
    # Another program wrote TEXT that is not UTF-8: before, sqlite3 raised for the whole
    # claim ("Could not decode to UTF-8 column"), so no row behind it was ever delivered.
    enqueue(db, [b'{"id": "first"}'])
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO syncworker_queue (stream, payload, enqueued_at)"
            " VALUES ('default', CAST(X'7B226964223A202278FF227D' AS TEXT), 0)"
        )
    enqueue(db, [b'{"id": "last"}'])
    src = make_source(db, key_field="id")
    await src.open()
    try:
        batch = await src.claim(10)
    finally:
        await src.close()
    assert batch is not None
    first, bad, last = batch.records
    assert (first.key, last.key) == ("first", "last")
    assert bad.data["reason"] == "invalid_utf8"
    assert base64.b64decode(bad.data["raw"]) == b'{"id": "x\xff"}'


def test_enqueue_keeps_numbers_beyond_64_bits_exact(db: Path) -> None:
    # Before: orjson refused the integer ("Integer exceeds 64-bit range").
    enqueue(
        db, [{"n": 123456789012345678901234567890, "d": Decimal("0.1000000000000000000000001")}]
    )
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute("SELECT payload FROM syncworker_queue").fetchone()
    assert payload == b'{"n":123456789012345678901234567890,"d":0.1000000000000000000000001}'


async def test_key_comes_from_key_field_else_a_hash_of_the_payload(db: Path) -> None:
    payloads = [b'{"id": 7, "v": 1}', b'{"other": 1}', b"not json"]
    enqueue(db, payloads)
    src = make_source(db, key_field="id")
    await src.open()
    try:
        batch = await src.claim(10)
    finally:
        await src.close()

    assert batch is not None
    assert [r.key for r in batch.records] == [
        "7",
        key_from_bytes(payloads[1]),
        key_from_bytes(payloads[2]),
    ]


async def test_without_key_field_the_key_is_the_payload_hash(
    db: Path, source: SqliteQueueSource
) -> None:
    payload = orjson.dumps({"id": 7})
    enqueue(db, [payload, payload])

    batch = await source.claim(10)

    assert batch is not None
    assert [r.key for r in batch.records] == [key_from_bytes(payload)] * 2


async def test_streams_filter_claims_and_counts_only_those_streams(db: Path) -> None:
    enqueue(db, [{"id": 1}, {"id": 2}], stream="a")
    enqueue(db, [{"id": 3}], stream="b")
    enqueue(db, [{"id": 4}], stream="c")
    src = make_source(db, streams=["b", "c"])
    await src.open()
    try:
        assert await src.backlog() == 2
        batch = await src.claim(10)
        assert await src.claim(10) is None
    finally:
        await src.close()

    assert batch is not None
    assert [(r.stream, r.data["id"]) for r in batch.records] == [("b", 3), ("c", 4)]
    with SqliteQueue(db) as queue:
        assert queue.backlog("a") == 2
        assert queue.backlog() == 2


async def test_backlog_counts_claimable_messages(db: Path, source: SqliteQueueSource) -> None:
    assert await source.backlog() == 0
    enqueue(db, [{"id": n} for n in range(6)])
    assert await source.backlog() == 6

    batch = await source.claim(4)
    assert batch is not None
    assert await source.backlog() == 2
    await source.nack(batch)
    assert await source.backlog() == 6


async def test_wait_sleeps_at_most_the_poll_interval(db: Path) -> None:
    src = make_source(db, poll_interval="20ms")
    started = time.monotonic()
    await src.wait(30.0)
    await src.wait(0.0)
    assert time.monotonic() - started < 1.0


async def test_claim_after_close_raises_a_connector_error(db: Path) -> None:
    src = make_source(db)
    await src.open()
    await src.close()
    with pytest.raises(ConnectorError, match="not open"):
        await src.claim(1)


def test_config_parses_durations_and_rejects_bad_values(db: Path) -> None:
    config = SqliteQueueSourceConfig(type="sqlite_queue", path=db, lease="5s", poll_interval=100)
    assert (config.lease, config.poll_interval) == (5.0, 0.1)
    assert SqliteQueueSourceConfig(path=db).lease == 60.0
    bad: dict[str, Any]
    for bad in (
        {"table": 'evil"; DROP TABLE x; --'},
        {"streams": []},
        {"lease": "0s"},
        {"batch_size": 10},
    ):
        with pytest.raises(ValidationError):
            SqliteQueueSourceConfig(path=db, **bad)
