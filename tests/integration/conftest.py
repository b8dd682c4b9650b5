"""Real services for integration tests: each fixture pings its service first and fails with a
clear message when it is missing (CI must never skip), and gives each test its own database
or key prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import redis
import redis.asyncio as aredis

PG_ADMIN_URL = os.environ.get("SYNCWORKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SYNCWORKER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}; "
            "run `make services` (scripts/ensure-services.sh)",
            pytrace=False,
        )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    name = f"sw_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix only this test uses; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL}: {exc}; run `make services`", pytrace=False
        )
    prefix = f"swtest:{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()
