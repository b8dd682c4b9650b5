"""A poison record in a fed stream (issue 9 point A): a key over PostgreSQL's btree limit was
taken for "database unavailable", the batch rolled back for ever and the JSONL sink got it again
on every retry. Now the record is dead-lettered, the stream flows, and no line is duplicated.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from pathlib import Path

import orjson
import psycopg
import pytest
import redis

from syncworker.config import config_from_dict
from syncworker.core.engine import Engine
from syncworker.state import state_store_from_url
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually

pytestmark = pytest.mark.integration

MESSAGES = 2_400
POISON_AT = 150


def produce(prefix: str, poison_key: str) -> None:
    """LPUSH the messages in small bursts while the pipeline runs, the poison among them."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for start in range(0, MESSAGES, 200):
            pipe = client.pipeline(transaction=False)
            for n in range(start, start + 200):
                key = poison_key if n == POISON_AT else f"m{n}"
                pipe.lpush(f"{prefix}in", orjson.dumps({"id": key, "n": n}))
            pipe.execute()
            time.sleep(0.02)  # a fed stream, not a backlog
    finally:
        client.close()


def pg_keys(url: str) -> set[str]:
    try:
        with psycopg.connect(url) as conn:
            return {key for (key,) in conn.execute("SELECT key FROM messages")}
    except psycopg.errors.UndefinedTable:
        return set()


def jsonl_lines(out: Path) -> Counter[str]:
    return Counter(
        orjson.loads(line)["id"]
        for path in out.glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    )


@pytest.mark.timeout(120)
async def test_a_key_over_the_btree_limit_is_dead_lettered_and_the_stream_flows(
    pg_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    poison_key = secrets.token_hex(5_000)  # 10 kB of random text: no compression saves it
    out = tmp_path / "out"
    config = config_from_dict(
        {
            "state": f"sqlite:///{tmp_path}/state.db",
            "pipelines": {
                "chat": {
                    "source": {
                        "type": "redis_list",
                        "url": REDIS_URL,
                        "lists": {"in": f"{redis_prefix}in"},
                        "key_field": "id",
                        "poll_interval": "50ms",
                    },
                    "sinks": [
                        {"type": "jsonl", "path": str(out)},
                        {"type": "postgres", "url": pg_url, "table": "messages"},
                    ],
                    "batch": {"size": 100, "max_wait": "50ms"},
                    "retry": {"attempts": 3, "delay": "1s"},
                }
            },
        },
        environ={},
    )
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state)
    await engine.start()
    expected = {f"m{n}" for n in range(MESSAGES) if n != POISON_AT}
    try:
        await asyncio.to_thread(produce, redis_prefix, poison_key)

        async def drained() -> bool:
            # Both: batches in flight together may finish after the poison's is dead-lettered
            # or before it; the rest flowing on is what the timeout would mean.
            written = expected <= await asyncio.to_thread(pg_keys, pg_url)
            return written and bool(await state.dead_letters("chat"))

        await eventually(drained, "the stream to flow past the poison", timeout_s=60)
        letters = await state.dead_letters("chat")
    finally:
        await engine.stop()
    assert await asyncio.to_thread(pg_keys, pg_url) == expected
    assert [letter.key for letter in letters] == [poison_key]
    assert "ProgramLimitExceeded" in (letters[0].error or "")
    lines = jsonl_lines(out)
    assert set(lines) == expected | {poison_key}
    assert max(lines.values()) == 1, "a batch reached the JSONL sink more than once"
