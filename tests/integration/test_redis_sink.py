"""The redis sink against the real Redis: exact values in both formats, atomic batches,
deletes, group replacement (finish_group), counts, hash tags, refusals and reconnects."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from syncworker.connectors.redis.sink import RedisSink, decode_hash, hash_slot_tag
from syncworker.core import jsonvalue
from syncworker.core.protocols import (
    CountsGroups,
    GroupEnd,
    Probes,
    ReplacesGroups,
)
from syncworker.core.record import Record
from syncworker.errors import ConfigRefused, ConnectionFailed, is_transient
from syncworker.reconcile.digest import group_hash, record_digest
from tests.conformance.services import PrivateRedis
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually

pytestmark = pytest.mark.integration

STREAM = "registrations"
Build = Callable[..., RedisSink]

EXACT_BODY = (
    b'{"ID": "4433256000013547003", "big": 123456789012345678901234567890,'
    b' "dec": 0.1000000000000000000000001, "huge": 1e400, "f": 1.5, "price": "150000.00",'
    b' "name": "Nguy\xe1\xbb\x85n \\u00e9 \xf0\x9f\x98\x80", "nested": {"b": [1, 2.25, null],'
    b' "a": true}, "nul": "a\\u0000b"}'
)


@pytest.fixture
async def build(redis_prefix: str) -> AsyncIterator[Build]:
    sinks: list[RedisSink] = []

    def make(**overrides: Any) -> RedisSink:
        settings = {
            "url": REDIS_URL,
            "key": redis_prefix + "registration:{event_id}:{id}",
            "index": redis_prefix + "event:{event_id}:registrations",
            "meta": redis_prefix + "event:{event_id}:meta",
            "groups": redis_prefix + "events:synced",
            **overrides,
        }
        sink = RedisSink(settings, name=f"h2-test-{len(sinks)}-{redis_prefix}")
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


def rec(key: str, data: Any, group: str = "E1", op: str = "upsert", **meta: Any) -> Record:
    return Record(
        key=key,
        data=data,
        stream=STREAM,
        op=op,  # type: ignore[arg-type]
        meta={"group": group, "group_name": "event_id", **meta},
    )


def end(group: str, run: str, records: list[Record], **overrides: Any) -> GroupEnd:
    return GroupEnd(
        records=[],
        stream=STREAM,
        group=group,
        group_name="event_id",
        run=run,
        **{
            "count": len(records),
            "content_hash": group_hash(record_digest(r.data) for r in records),
            **overrides,
        },
    )


async def members(client: aredis.Redis, key: str) -> set[str]:
    return {m.decode() for m in await client.smembers(key)}


async def test_json_values_are_stored_exactly(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    data = jsonvalue.loads(EXACT_BODY, writable=True)
    sink = build()
    await sink.open()
    result = await sink.write([rec("17", data)])
    assert not result.failed and (result.added, result.updated) == (1, 0)
    stored = await redis_client.get(f"{redis_prefix}registration:E1:17")
    assert stored == jsonvalue.dumps(data, sort_keys=True)  # canonical: its digest's text
    assert hashlib.blake2b(stored, digest_size=8).digest() == record_digest(data).to_bytes(8, "big")
    assert b"123456789012345678901234567890" in stored and b"0.1000000000000000000000001" in stored
    back = jsonvalue.loads(stored)
    assert jsonvalue.canonical(back) == jsonvalue.canonical(data)
    assert record_digest(back) == record_digest(data)
    assert back["nul"] == "a\x00b" and back["name"] == "Nguy\u1ec5n \u00e9 \U0001f600"


async def test_hash_values_are_stored_exactly_and_replaced_whole(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    data = jsonvalue.loads(EXACT_BODY, writable=True)
    sink = build(format="hash")
    await sink.open()
    assert not (await sink.write([rec("17", data)])).failed
    key = f"{redis_prefix}registration:E1:17"
    fields = await redis_client.hgetall(key)
    assert fields[b"price"] == b"150000.00"  # text as it is
    assert fields[b"name"] == "Nguy\u1ec5n \u00e9 \U0001f600".encode()
    assert fields[b"big"] == b"123456789012345678901234567890"
    assert fields[b"dec"] == b"0.1000000000000000000000001"
    assert fields[b"huge"] == b"1E+400"
    back = decode_hash(fields, "_json")
    assert jsonvalue.canonical(back) == jsonvalue.canonical(data)
    result = await sink.write([rec("17", {"price": "1"})])  # a field gone from the record goes
    assert (result.added, result.updated) == (0, 1)
    assert await redis_client.hgetall(key) == {b"price": b"1"}
    assert not (await sink.write([rec("18", {})])).failed  # an empty record is a hash too
    assert (
        decode_hash(await redis_client.hgetall(f"{redis_prefix}registration:E1:18"), "_json") == {}
    )


async def test_added_and_updated_are_counted(build: Build) -> None:
    sink = build()
    await sink.open()
    first = await sink.write([rec(str(n), {"n": n}) for n in range(5)])
    assert (first.added, first.updated) == (5, 0)
    again = await sink.write([rec(str(n), {"n": n + 1}) for n in range(3, 8)])
    assert (again.added, again.updated) == (3, 2)
    empty = await sink.write([])
    assert (empty.added, empty.updated, empty.failed) == (0, 0, {})


async def test_deletes_remove_the_key_and_its_member(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build()
    await sink.open()
    await sink.write([rec("1", {"v": 1}), rec("2", {"v": 2})])
    # A resync's delete carries the group without its name; a delete of a key never held too.
    gone = Record("1", {}, STREAM, "delete", {"group": "E1"})
    result = await sink.write([gone, rec("never", {}, op="delete")])
    assert not result.failed
    assert await redis_client.exists(f"{redis_prefix}registration:E1:1") == 0
    assert await members(redis_client, f"{redis_prefix}event:E1:registrations") == {"2"}
    assert await sink.group_counts(STREAM, ["E1", "E2"]) == {"E1": 1, "E2": 0}


async def test_a_refused_record_is_isolated(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build(key=redis_prefix + "registration:{event_id}:{Email}:{id}")
    await sink.open()
    records = [
        rec("1", {"Email": "a@x"}),
        rec("2", {"Name": "no email"}),
        rec("3", {"Email": "c@x", "v": Decimal("NaN")}),
        rec("4", {"Email": "d@x"}),
    ]
    result = await sink.write(records)
    assert sorted(result.failed) == [1, 2]
    assert "Email" in str(result.failed[1]) and "NaN" in str(result.failed[2])
    assert (result.added, result.updated) == (2, 0)
    keys = sorted(
        [
            k.decode()
            async for k in redis_client.scan_iter(f"{redis_prefix}registration:*", count=10_000)
        ]
    )
    assert keys == [f"{redis_prefix}registration:E1:a@x:1", f"{redis_prefix}registration:E1:d@x:4"]
    assert await members(redis_client, f"{redis_prefix}event:E1:registrations") == {"1", "4"}


async def test_a_batch_is_never_seen_half_written(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build()
    await sink.open()
    index = f"{redis_prefix}event:E1:registrations"
    size, batches = 2_000, 10
    # The first and last record of every batch: a reader sees both or neither, and their
    # index members with them.
    ids = [str(n) for b in range(batches) for n in (b * size, b * size + size - 1)]
    keys = [f"{redis_prefix}registration:E1:{i}" for i in ids]
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            async with redis_client.pipeline(transaction=True) as pipe:
                pipe.scard(index)
                pipe.exists(*keys)
                pipe.smismember(index, ids)
                held, existing, listed = await pipe.execute()
            seen.append((held, existing))
            assert existing == sum(listed) == 2 * held // size, (held, existing, sum(listed))
            await asyncio.sleep(0)

    reader = asyncio.create_task(read())
    try:
        for b in range(batches):
            batch = [
                rec(str(n), {"n": n, "pad": "x" * 200}) for n in range(b * size, (b + 1) * size)
            ]
            await sink.write(batch)
    finally:
        done.set()
        await reader
    assert {held for held, _ in seen} <= {b * size for b in range(batches + 1)}
    assert len(seen) > 1


async def test_finish_group_removes_what_the_full_read_did_not_deliver(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build()
    assert isinstance(sink, ReplacesGroups | CountsGroups | Probes)
    await sink.open()
    held = [rec(str(n), {"n": n}, sync_run="run-1") for n in range(10)]
    await sink.write([*held, rec("x", {}, group="E2")])
    assert await sink.finish_group(end("E1", "run-1", held)) == 0
    index = f"{redis_prefix}event:E1:registrations"
    # Written outside a full read before the next one started: no reason to keep it.
    await sink.write([rec("old-change", {})])
    await redis_client.zadd(f"{index}:live", {"old-change": 1})  # written at 1 ms past 1970
    read = [rec(str(n), {"n": n}, sync_run="run-2") for n in range(3, 8)]
    await sink.write(read[:2])
    live = rec("new", {"n": "written by an incremental read during the full read"})
    await sink.write([live])
    await sink.write(read[2:])
    finished = end("E1", "run-2", read, source_modified="2026-12-01T10:00:00Z")
    assert await sink.finish_group(finished) == 6  # 0, 1, 2, 8, 9, old-change
    assert await members(redis_client, index) == {"3", "4", "5", "6", "7", "new"}
    for n in (0, 1, 2, 8, 9):
        assert not await redis_client.exists(f"{redis_prefix}registration:E1:{n}")
    assert await redis_client.exists(f"{redis_prefix}registration:E1:new")
    meta = await redis_client.hgetall(f"{redis_prefix}event:E1:meta")
    assert meta[b"count"] == b"6" and meta[b"source_count"] == b"5"
    assert meta[b"content_hash"] == finished.content_hash.encode()
    assert meta[b"source_modified_time"] == b"2026-12-01T10:00:00Z"
    assert meta[b"last_synced_at"].startswith(b"20") and meta[b"last_run"] == b"run-2"
    assert not await redis_client.exists(
        f"{index}:run:run-2", f"{index}:live", f"{index}:run:run-2:started"
    )
    assert await members(redis_client, f"{redis_prefix}events:synced") == {"E1", "E2"}
    # Idempotent: the same end again removes nothing, even with records written since.
    await sink.write([rec("later", {}, sync_run="run-abandoned")])
    assert await sink.finish_group(finished) == 0
    assert await sink.group_counts(STREAM, ["E1", "E2", "E3"]) == {"E1": 7, "E2": 1, "E3": 0}
    # The next full read delivers 3 of them: the rest goes, "new" and "later" included.
    again = [rec(str(n), {"n": n}, sync_run="run-3") for n in (3, 4, 5)]
    await sink.write(again)
    assert await sink.finish_group(end("E1", "run-3", again)) == 4
    assert await members(redis_client, index) == {"3", "4", "5"}


async def test_a_record_refused_in_a_full_read_keeps_its_stored_version(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build()
    await sink.open()
    await sink.write([rec("1", {"v": 1}, sync_run="run-1"), rec("2", {"v": 2}, sync_run="run-1")])
    read = [rec("1", {"v": Decimal("NaN")}, sync_run="run-2"), rec("2", {"v": 3}, sync_run="run-2")]
    result = await sink.write(read)
    assert list(result.failed) == [0]  # dead-lettered: the source still has it
    assert await sink.finish_group(end("E1", "run-2", read[1:], count=2)) == 0
    assert await redis_client.get(f"{redis_prefix}registration:E1:1") == b'{"v":1}'
    assert await sink.group_counts(STREAM, ["E1"]) == {"E1": 2}


async def test_a_group_read_with_no_records_removes_everything(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build()
    await sink.open()
    await sink.write([rec(str(n), {"n": n}, group="E9") for n in range(4)])
    assert await sink.finish_group(end("E9", "run-empty", [])) == 4
    assert await sink.group_counts(STREAM, ["E9"]) == {"E9": 0}
    meta = await redis_client.hgetall(f"{redis_prefix}event:E9:meta")
    assert meta[b"count"] == b"0" and meta[b"content_hash"] == b"0000000000000000"
    assert b"source_modified_time" not in meta
    assert await sink.finish_group(end("E9", "run-empty", [])) == 0
    assert await sink.finish_group(end("E-never-held", "run-x", [])) == 0


async def test_a_read_whose_staging_set_is_gone_removes_nothing(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build()
    await sink.open()
    read = [rec(str(n), {"n": n}, sync_run="run-1") for n in range(3)]
    await sink.write(read)
    index = f"{redis_prefix}event:E1:registrations"
    assert 0 < await redis_client.ttl(f"{index}:run:run-1") <= 86400
    await redis_client.delete(f"{index}:run:run-1")  # as if staging_ttl had lapsed
    assert await sink.finish_group(end("E1", "run-1", read)) == 0
    assert await sink.group_counts(STREAM, ["E1"]) == {"E1": 3}
    assert not await redis_client.exists(f"{redis_prefix}event:E1:meta")


async def test_hash_tags_keep_a_group_in_one_slot(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build(hash_tag=True)
    await sink.open()
    read = [rec(str(n), {"n": n}, group=g, sync_run="r") for g in ("E1", "E2") for n in range(3)]
    result = await sink.write(read)
    assert not result.failed and result.added == 6
    keys = [k async for k in redis_client.scan_iter(f"{redis_prefix}*", count=10_000)]
    by_tag: dict[bytes, int] = {}
    for key in keys:
        by_tag[hash_slot_tag(key)] = by_tag.get(hash_slot_tag(key), 0) + 1
    registry = f"{redis_prefix}events:synced".encode()
    # 3 records, index, staging and its start per group; the registry alone in its slot
    assert by_tag == {b"E1": 6, b"E2": 6, registry: 1}
    assert f"{redis_prefix}registration:{{E1}}:0".encode() in keys
    again = [rec(str(n), {"n": n}, group="E1", sync_run="r2") for n in range(2)]
    await sink.write(again)
    assert await sink.finish_group(end("E1", "r2", again)) == 1
    meta = f"{redis_prefix}event:{{E1}}:meta"
    assert (await redis_client.hgetall(meta))[b"count"] == b"2"
    assert await sink.group_counts(STREAM, ["E1", "E2"]) == {"E1": 2, "E2": 3}


async def test_a_key_of_another_type_is_refused_as_config(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    await redis_client.set(f"{redis_prefix}event:E1:registrations", "not a set")
    sink = build()
    await sink.open()
    with pytest.raises(ConfigRefused, match="holds a string"):
        await sink.write([rec("1", {"v": 1})])
    assert not await redis_client.exists(f"{redis_prefix}registration:E1:1")  # nothing written


async def test_refused_credentials_and_unreachable_server(build: Build) -> None:
    wrong = build(url=REDIS_URL.replace("redis://", "redis://nobody:wrong@"))
    with pytest.raises(ConfigRefused):
        await wrong.open()
    closed = build(url="redis://127.0.0.1:17299/0", socket_timeout="1s")
    with pytest.raises(ConnectionFailed):
        await closed.open()


async def test_reconnects_after_its_connections_are_killed(
    build: Build, redis_client: aredis.Redis, redis_prefix: str
) -> None:
    sink = build()
    await sink.open()
    await sink.probe()
    first = [rec(str(n), {"n": n}) for n in range(100)]
    assert not (await sink.write(first)).failed

    async def kill_own() -> int:
        killed = 0
        for client in await redis_client.client_list():
            if client["name"] == f"syncworker:{sink.name}":
                killed += await redis_client.client_kill_filter(_id=client["id"])
        return killed

    assert await kill_own() >= 1
    later = [rec(str(n), {"n": n}) for n in range(100, 200)]

    async def written() -> bool:
        try:
            result = await sink.write(later)
        except Exception as exc:  # the runtime retries what is transient: so does this
            assert is_transient(exc), exc
            return False
        assert not result.failed
        return True

    await eventually(written, "a write after CLIENT KILL", timeout_s=10)
    assert await kill_own() >= 1
    await eventually(lambda: _probes(sink), "a probe after CLIENT KILL", timeout_s=10)
    assert await sink.group_counts(STREAM, ["E1"]) == {"E1": 200}
    for n in (0, 99, 100, 199):
        assert await redis_client.exists(f"{redis_prefix}registration:E1:{n}")


async def _probes(sink: RedisSink) -> bool:
    try:
        await sink.probe()
    except Exception as exc:
        assert is_transient(exc), exc
        return False
    return True


async def test_an_acl_that_denies_a_command_is_refused_as_config(
    build: Build, tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path)  # a private server: the shared one's users stay as they are
    await asyncio.to_thread(server.start)
    try:
        admin = aredis.Redis.from_url(server.url)
        # May connect, ping and load scripts, not write: NOPERM on the first write.
        await admin.acl_setuser(
            "h2-reader",
            enabled=True,
            passwords=["+h2-reader-pw"],
            commands=["+ping", "+script|load", "+client|setname", "+type", "+hello"],
            keys=["*"],
        )
        await admin.aclose()
        url = server.url.replace("redis://", "redis://h2-reader:h2-reader-pw@")
        sink = build(url=url)
        await sink.open()
        with pytest.raises(ConfigRefused, match=r"NOPERM|permission") as refused:
            await sink.write([rec("1", {"v": 1})])
        assert "h2-reader-pw" not in str(refused.value)
    finally:
        await asyncio.to_thread(server.kill)
