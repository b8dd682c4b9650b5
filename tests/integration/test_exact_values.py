"""Values arrive exactly as sent (DESIGN guarantee 8, issue 9 C) in the HTTP sinks' bodies:
the webhook against the local receiver, Algolia through the real client against the fake,
PostgreSQL for real (``pg_url``: a fresh database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from syncworker.connectors.algolia.sink import AlgoliaSink
from syncworker.connectors.http.sink_webhook import WebhookSink
from syncworker.connectors.postgres.sink import PostgresSink
from syncworker.core import jsonvalue
from syncworker.core.record import Record
from tests.fakes.algolia import AlgoliaServer
from tests.fakes.webhook_server import WebhookServer

BIG = 123456789012345678901234567890
LONG = Decimal("0.1000000000000000000000001")


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookServer]:
    async with WebhookServer() as running:
        yield running


@pytest.fixture
async def algolia() -> AsyncIterator[AlgoliaServer]:
    async with AlgoliaServer() as fake:
        yield fake


async def test_the_webhook_body_carries_big_integers_and_long_decimals_exactly(
    webhook: WebhookServer,
) -> None:
    # Before: orjson refused both ("Integer exceeds 64-bit range", Decimal not serializable)
    # and the records were dead-lettered instead of sent.
    sink = WebhookSink({"type": "webhook", "url": webhook.url, "body": "records"}, name="hook")
    await sink.open()
    try:
        result = await sink.write([Record("1", {"n": BIG, "d": LONG, "m": [-BIG]})])
    finally:
        await sink.close()
    assert result.failed == {}
    (request,) = webhook.requests
    assert (
        b'"data":{"n":123456789012345678901234567890,"d":0.1000000000000000000000001,'
        b'"m":[-123456789012345678901234567890]}' in request.body
    )
    assert jsonvalue.loads(request.body)["records"][0]["data"] == {"n": BIG, "d": LONG, "m": [-BIG]}


def algolia_sink(server: AlgoliaServer, **index: Any) -> AlgoliaSink:
    config = {
        "type": "algolia",
        "app_id": server.app_id,
        "api_key": server.api_key,
        "hosts": [server.url],
        "indexes": {"products": {"index": "prod_products", **index}},
        "timeout": "2s",
    }
    return AlgoliaSink(config, name="search")


async def test_algolia_gets_big_integers_exactly_and_refuses_a_decimal_it_would_round(
    algolia: AlgoliaServer,
) -> None:
    # Before: 2**100 was refused ("Integer exceeds 64-bit range") and the Decimal sent as the
    # float 0.1, silently.
    sink = algolia_sink(algolia)
    await sink.open()
    try:
        result = await sink.write(
            [
                Record("1", {"n": BIG, "price": Decimal("9.90")}, stream="products"),
                Record("2", {"d": LONG}, stream="products"),
                Record("3", {"n": 3}, stream="products"),
            ]
        )
    finally:
        await sink.close()
    assert list(result.failed) == [1]
    assert "cannot be sent exactly" in str(result.failed[1])
    (call,) = algolia.calls()
    assert b'"n": 123456789012345678901234567890' in call.body
    assert b'"price": 9.9' in call.body
    assert sorted(algolia.objects("prod_products")) == ["1", "3"]


async def test_an_object_as_algolia_object_id_is_canonical_json(algolia: AlgoliaServer) -> None:
    # Before: the objectID was a Python repr ("{'b': 1, 'a': 2}").
    sink = algolia_sink(algolia, object_id_field="ref")
    await sink.open()
    try:
        result = await sink.write([Record("1", {"ref": {"b": 1, "a": 2}}, stream="products")])
    finally:
        await sink.close()
    assert result.failed == {}
    assert list(algolia.objects("prod_products")) == ['{"a":2,"b":1}']


async def test_postgres_writes_big_integers_and_long_decimals_exactly(pg_url: str) -> None:
    # Before: orjson refused both for the jsonb data ("Integer exceeds 64-bit range").
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE amounts (id text PRIMARY KEY, amount numeric, extra jsonb, data jsonb)"
        )
    sink = PostgresSink(
        {
            "type": "postgres",
            "url": pg_url,
            "table": "amounts",
            "key_column": "id",
            "columns": {"amount": "d", "extra": "nested", "data": "$data"},
        },
        name="pg",
    )
    await sink.open()
    try:
        data = {"n": BIG, "d": LONG, "nested": {"m": [-BIG]}}
        result = await sink.write([Record("1", data)])
    finally:
        await sink.close()
    assert result.failed == {}
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT amount::text, extra::text, data::text FROM amounts")
        row = await cursor.fetchone()
    assert row == (
        "0.1000000000000000000000001",
        '{"m": [-123456789012345678901234567890]}',
        '{"d": 0.1000000000000000000000001, "n": 123456789012345678901234567890, '
        '"nested": {"m": [-123456789012345678901234567890]}}',
    )
