"""What the Zoho -> Redis acceptance tests share: the example's config pointed at a fake Zoho
Creator and at the real Redis under a key prefix of this test, seeded events, and a byte
snapshot of what the redis sink wrote."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from syncworker.config import Config, load_config
from syncworker.core.pipeline import Pipeline
from syncworker.state import state_store_from_url
from syncworker.state.base import StateStore
from tests.fakes.zoho_creator import ZohoCreatorServer, zoho_time

REDIS_URL = "redis://127.0.0.1:6379/0"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "zoho_to_redis" / "syncworker.yaml"
PIPELINE = "zoho_registrations"
EVENTS = "All_Events"
REGISTRATIONS = "All_Registrations"
AN_HOUR_AGO = zoho_time(datetime.now(UTC) - timedelta(hours=1))


@pytest.fixture
def h3_prefix() -> Iterator[str]:
    """A key prefix of this test only (H3's "h3:" space); its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"h3:{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        drop_prefix(client, prefix)
        client.close()


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=2000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


@pytest.fixture
async def rclient(h3_prefix: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


def environ(zoho: ZohoCreatorServer, prefix: str, state_path: Path, **extra: str) -> dict[str, str]:
    """The example's variables, pointed at ``zoho`` and this test's Redis prefix."""
    return {
        "SYNC_STATE_PATH": str(state_path),
        "ZOHO_CREATOR_URL": zoho.url,
        "ZOHO_ACCOUNTS_URL": zoho.url,
        "ZOHO_OWNER": zoho.owner,
        "ZOHO_APP": zoho.app,
        "ZOHO_CLIENT_ID": zoho.client_id,
        "ZOHO_CLIENT_SECRET": zoho.client_secret,
        "ZOHO_REFRESH_TOKEN": zoho.refresh_token,
        "ZOHO_REQUESTS_PER_MINUTE": "0",
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "SYNC_BATCH_SIZE": "500",
        "ENABLE_AUTO_SYNC": "false",
        **extra,
    }


def example_config(env: dict[str, str]) -> Config:
    return load_config(EXAMPLE, environ=env)


async def open_pipeline(config: Config) -> tuple[Pipeline, StateStore]:
    state = state_store_from_url(config.app.state)
    await state.open()
    [pipeline] = config.build(state, [PIPELINE])
    return pipeline, state


async def close_pipeline(pipeline: Pipeline, state: StateStore) -> None:
    await pipeline.close()
    await state.close()


def registration(event_id: str, n: int) -> dict[str, Any]:
    """A registration whose values must arrive exactly (a long integer, a decimal)."""
    return {
        "Event": {"ID": event_id, "display_value": f"Event {event_id}"},
        "Name": f"Guest {n}",
        "Email": f"guest{n}@example.com",
        "Ticket": 12345678901234567890 + n,
        "Price": "0.1",
        "Amount": 10.25,
        "Modified_Time": AN_HOUR_AGO,
    }


def seed_events(zoho: ZohoCreatorServer, events: int) -> list[str]:
    return [
        zoho.add(EVENTS, {"Event_Name": f"Event {e}", "Modified_Time": AN_HOUR_AGO})
        for e in range(events)
    ]


def seed_registrations(
    zoho: ZohoCreatorServer, event_ids: list[str], count: int, start: int = 0
) -> list[str]:
    """``count`` registrations spread over the events, round robin."""
    records = [
        registration(event_ids[(start + i) % len(event_ids)], start + i) for i in range(count)
    ]
    return zoho.add_many(REGISTRATIONS, records)


async def snapshot(client: aredis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` with its exact value (strings as bytes, sets sorted, hashes
    whole but a group meta's ``last_synced_at`` and ``last_run``, which say when and which
    read)."""
    out: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=f"{prefix}*", count=2000):
        kind = (await client.type(key)).decode()
        if kind == "string":
            out[key] = await client.get(key)
        elif kind == "set":
            out[key] = sorted(await client.smembers(key))
        elif kind == "hash":
            fields = await client.hgetall(key)
            fields.pop(b"last_synced_at", None)
            fields.pop(b"last_run", None)
            out[key] = fields
        else:
            out[key] = (kind, None)
    return out


def pick(ids: list[str], count: int, rng: random.Random) -> list[str]:
    return sorted(rng.sample(ids, count))
