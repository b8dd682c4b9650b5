"""RedisGroupSide against the real Redis: what the redis sink wrote, read back as a reconcile
side, answers like an in-memory side holding the same records (with the same digests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aredis

from syncworker.connectors.redis.sink import RedisSink, RedisSinkConfig, exact_loads
from syncworker.core import jsonvalue
from syncworker.core.record import Record
from syncworker.errors import ConfigError
from syncworker.reconcile.digest import combine, record_digest
from syncworker.reconcile.engine import CompareSettings, compare
from syncworker.reconcile.memory import MemorySide
from syncworker.reconcile.redis_side import RedisGroupSide, redis_groups
from syncworker.reconcile.sides import Key, KeyRange, Summary
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.integration

STREAM = "registrations"


class RecordMemorySide(MemorySide):
    """The in-memory side with the records' digest (``record_digest``) instead of its own."""

    async def summarize(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> list[Summary]:
        out = []
        for rng in ranges:
            keys = [k for k in self.data if rng.contains(k)]
            kept = [record_digest(self.data[k]) for k in keys if k not in exclude]
            out.append(Summary(len(keys), len(kept), combine(kept)))
        return out

    async def fetch(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> dict[Key, int]:
        return {
            k: record_digest(row)
            for k, row in self.data.items()
            if k not in exclude and any(r.contains(k) for r in ranges)
        }


def settings(prefix: str, **overrides: Any) -> RedisSinkConfig:
    return RedisSinkConfig.model_validate(
        {
            "url": REDIS_URL,
            "key": prefix + "registration:{event_id}:{id}",
            "index": prefix + "event:{event_id}:registrations",
            "meta": prefix + "event:{event_id}:meta",
            "groups": prefix + "events:synced",
            **overrides,
        }
    )


def registration(n: int) -> dict[str, Any]:
    status = "Confirmed" if n % 2 else "Pending"
    body = (
        f'{{"ID": "44332560000{n:05d}", "Seats": {n % 7}, "Fee": 1.5, "Status": "{status}",'
        f' "Name": {{"first_name": "Nguy\u1ec5n", "last_name": "V\u0103n {n}"}},'
        f' "Price": 0.1000000000000000000000{n % 1000 + 1:03d},'
        f' "Big": 1234567890123456789012{n:05d}, "Tags": ["a", null, true]}}'
    )
    return dict(jsonvalue.loads(body.encode(), writable=True))


@pytest.fixture
async def written(redis_prefix: str) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """300 registrations of group E1 (and 5 of E2) as the sink writes them (json)."""
    rows = await write_group(settings(redis_prefix), "E1", range(300))
    await write_group(settings(redis_prefix), "E2", range(1000, 1005))
    yield rows


async def write_group(config: RedisSinkConfig, group: str, numbers: range) -> dict[str, Any]:
    rows = {f"r{n:05d}": registration(n) for n in numbers}
    sink = RedisSink(config, name="side-writer")
    await sink.open()
    try:
        records = [
            Record(k, v, STREAM, meta={"group": group, "group_name": "event_id"})
            for k, v in rows.items()
        ]
        result = await sink.write(records)
        assert not result.failed
    finally:
        await sink.close()
    return rows


def side(config: RedisSinkConfig, group: str | None = "E1", **kwargs: Any) -> RedisGroupSide:
    return RedisGroupSide(config, stream=STREAM, group=group, group_name="event_id", **kwargs)


RANGES = [
    KeyRange(None, "r00010"),
    KeyRange("r00010", "r00100"),
    KeyRange("r00100", "r00250"),
    KeyRange("r00250", None),
]


@pytest.mark.parametrize("fmt", ["json", "hash"])
async def test_side_answers_like_the_memory_side(redis_prefix: str, fmt: str) -> None:
    config = settings(redis_prefix, format=fmt)
    rows = await write_group(config, "E1", range(300))
    await write_group(config, "E2", range(1000, 1005))
    client = aredis.Redis.from_url(REDIS_URL)
    # An index member whose key is gone is no row of the side.
    await client.sadd(f"{redis_prefix}event:E1:registrations", "r-orphan")
    memory = RecordMemorySide(rows, key_kind="text")
    redis_side = side(config, chunk=64, client=client)  # several chunks per read
    try:
        info = await redis_side.open()
        assert info.compared_columns == (await memory.open()).compared_columns
        assert not info.can_tell_recent
        assert await redis_side.key_bounds() == await memory.key_bounds()
        exclude = frozenset({"r00005", "r00200"})
        assert await redis_side.summarize(RANGES, exclude) == await memory.summarize(
            RANGES, exclude
        )
        assert await redis_side.fetch(RANGES[1:3], exclude) == await memory.fetch(
            RANGES[1:3], exclude
        )
        keys = ["r00000", "r00299", "r-orphan", "r-never"]
        found = await redis_side.rows(keys)
        assert sorted(found) == ["r00000", "r00299"]
        for key, value in found.items():
            assert jsonvalue.canonical(value) == jsonvalue.canonical(rows[key])
        assert isinstance(found["r00000"]["Price"], Decimal)
        assert await redis_side.recent_keys(60) is None
    finally:
        await redis_side.close()
        await client.aclose()
    assert not client.connection_pool._in_use_connections  # a lent client is not closed by it


async def test_engine_reports_planted_differences_by_key(
    redis_prefix: str, written: dict[str, dict[str, Any]]
) -> None:
    source = {k: dict(v) for k, v in written.items()}
    missing = ["r00300", "r00301"]
    for key in missing:
        source[key] = registration(int(key[1:]))
    extra = ["r00000", "r00150"]
    for key in extra:
        del source[key]
    different = ["r00007", "r00299"]
    for key in different:
        source[key]["Seats"] = 99
    # A number past a double's precision differing in its last digit is a difference too.
    source["r00042"]["Price"] = Decimal("0.1000000000000000000000999")
    report = await compare(
        RecordMemorySide(source, key_kind="text"),
        side(settings(redis_prefix)),
        CompareSettings(segments=8, fetch_rows=50),
    )
    assert report.missing.keys == missing
    assert report.extra.keys == extra
    assert report.different.keys == sorted([*different, "r00042"])
    assert report.different_columns["r00007"] == ["Seats"]
    assert report.different_columns["r00042"] == ["Price"]
    same = await compare(RecordMemorySide(written, key_kind="text"), side(settings(redis_prefix)))
    assert same.status == "consistent" and same.source_rows == same.target_rows == 300


async def test_records_stored_in_another_spelling_are_not_different(
    redis_prefix: str, written: dict[str, dict[str, Any]]
) -> None:
    # Written by another program: indented, in the API's key order. Equal values, other text.
    client = aredis.Redis.from_url(REDIS_URL)
    try:
        for key in ("r00003", "r00004"):
            text = jsonvalue.dumps(written[key], indent=True)
            assert text != jsonvalue.dumps(written[key], sort_keys=True)
            assert jsonvalue.loads(text) == written[key]
            await client.set(f"{redis_prefix}registration:E1:{key}", text)
        stale = dict(written["r00005"], Status="Cancelled")
        await client.set(f"{redis_prefix}registration:E1:r00005", jsonvalue.dumps(stale))
    finally:
        await client.aclose()
    report = await compare(
        RecordMemorySide(written, key_kind="text"),
        side(settings(redis_prefix)),
        CompareSettings(segments=8, fetch_rows=50),
    )
    assert (report.missing.keys, report.extra.keys) == ([], [])
    assert report.different.keys == ["r00005"]  # the text of r00003/4 differs, not their values


async def test_ungrouped_side_finds_its_keys_by_prefix(redis_prefix: str) -> None:
    config = settings(redis_prefix, key=redis_prefix + "rec:{stream}:{id}", index=None, meta=None)
    sink = RedisSink(config, name="side-writer")
    ids = ["a*b", "c?[d]", "plain", "back\\slash", "\u00e9"]
    await sink.open()
    try:
        await sink.write([Record(i, {"id": i, "n": 1}, STREAM) for i in ids])
        await sink.write([Record("other", {"n": 1}, "other-stream")])
    finally:
        await sink.close()
    prefix_side = side(config, group=None)
    try:
        await prefix_side.open()
        assert await prefix_side.fetch([KeyRange(None, None)], frozenset()) == {
            i: record_digest({"id": i, "n": 1}) for i in ids
        }
    finally:
        await prefix_side.close()


async def test_groups_are_listed_from_the_registry(
    redis_prefix: str, written: dict[str, dict[str, Any]]
) -> None:
    assert await redis_groups(settings(redis_prefix), STREAM) == ["E1", "E2"]
    with pytest.raises(ConfigError, match="groups"):
        await redis_groups(settings(redis_prefix, groups=None), STREAM)


def test_sides_that_cannot_be_read_are_refused(redis_prefix: str) -> None:
    with pytest.raises(ConfigError, match="index"):
        side(settings(redis_prefix, index=None))
    with pytest.raises(ConfigError, match="Email"):
        side(settings(redis_prefix, key=redis_prefix + "r:{Email}:{id}"))


def test_exact_loads_is_jsonvalue_loads() -> None:
    for raw in (
        b'{"ID": "4433256000013547003", "n": 1}',
        b'{"big": 123456789012345678901234567890, "dec": 0.1000000000000000000000001}',
        b'{"f": 1.5, "huge": 1e400, "neg": -1e-400}',
        b"[1, 2.50, {}]",
    ):
        fast, exact = exact_loads(raw), jsonvalue.loads(raw)
        assert jsonvalue.canonical(fast) == jsonvalue.canonical(exact), raw
    deep = b"[" * 300 + b"]" * 300  # read by orjson, too deep for it to write back
    assert exact_loads(deep) == jsonvalue.loads(deep)
    with pytest.raises(jsonvalue.UndecodableJSON):
        exact_loads(b"not json")


async def test_a_stored_value_that_is_no_json_is_a_differing_row(redis_prefix: str) -> None:
    config = settings(redis_prefix)
    await write_group(config, "E1", range(2))
    client = aredis.Redis.from_url(REDIS_URL)
    try:
        await client.set(f"{redis_prefix}registration:E1:r00001", b"not json {")
        redis_side = side(config, client=client)
        await redis_side.open()
        rows = await redis_side.rows(["r00001"])
        assert rows == {"r00001": {"$undecodable": "not json {"}}
        digests = await redis_side.fetch([KeyRange(None, None)], frozenset())
        assert digests["r00001"] == record_digest({"$undecodable": "not json {"})
        assert digests["r00000"] == record_digest(registration(0))
    finally:
        await client.aclose()


def test_records_digest_alike_from_either_side() -> None:
    stored = jsonvalue.dumps(registration(12))
    assert record_digest(exact_loads(stored)) == record_digest(registration(12))
    mapping: Mapping[str, Any] = exact_loads(stored)
    assert mapping["Big"] == 123456789012345678901200012
