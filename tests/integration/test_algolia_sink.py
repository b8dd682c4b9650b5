"""The ``algolia`` sink with the real ``algoliasearch`` client against the local fake Algolia."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from syncworker.connectors.algolia.sink import AlgoliaSink
from syncworker.core.record import Record
from syncworker.errors import (
    ConfigError,
    ConfigRefused,
    ConnectionFailed,
    ConnectorError,
    PermanentError,
    RetryableError,
)
from tests.fakes.algolia import AlgoliaServer

SinkFactory = Callable[..., AlgoliaSink]


def shout_name(obj: dict[str, Any]) -> dict[str, Any]:
    """A transform for the tests: referenced as 'tests.integration.test_algolia_sink:...'."""
    return {**obj, "name": str(obj.get("name", "")).upper(), "indexed_by": "syncworker"}


@pytest.fixture
async def server() -> AsyncIterator[AlgoliaServer]:
    async with AlgoliaServer() as fake:
        yield fake


@pytest.fixture
async def make_sink(server: AlgoliaServer) -> AsyncIterator[SinkFactory]:
    sinks: list[AlgoliaSink] = []

    def make(**overrides: Any) -> AlgoliaSink:
        config: dict[str, Any] = {
            "type": "algolia",
            "app_id": server.app_id,
            "api_key": server.api_key,
            "hosts": [server.url],
            "indexes": {
                "products": {"index": "prod_products"},
                "categories": {"index": "prod_categories"},
            },
            "timeout": "2s",
        }
        config.update(overrides)
        sink = AlgoliaSink(config, name="search")
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


async def opened(sink: AlgoliaSink) -> AlgoliaSink:
    await sink.open()
    return sink


def product(key: str, **data: Any) -> Record:
    return Record(key=key, data={"id": key, **data}, stream="products")


def deleted(key: str, stream: str = "products") -> Record:
    return Record(key=key, data={}, stream=stream, op="delete")


def actions(call: Any) -> list[str]:
    return [request["action"] for request in call.json["requests"]]


async def test_saves_and_deletes_land_in_the_index_by_key(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    result = await sink.write([product("1", name="pen"), product("2", name="ink")])
    assert result.failed == {}
    assert server.objects("prod_products") == {
        "1": {"id": "1", "name": "pen", "objectID": "1"},
        "2": {"id": "2", "name": "ink", "objectID": "2"},
    }

    await sink.write([deleted("1"), Record(key="c1", data={"t": "x"}, stream="categories")])
    assert set(server.objects("prod_products")) == {"2"}
    assert server.objects("prod_categories") == {"c1": {"t": "x", "objectID": "c1"}}


async def test_a_redelivered_batch_changes_nothing(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    batch = [product("1", name="pen"), deleted("2")]
    await sink.write(batch)
    before = {k: dict(v) for k, v in server.objects("prod_products").items()}
    await sink.write(batch)
    assert server.objects("prod_products") == before


async def test_field_mapping_transform_and_object_id_field(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    indexes = {
        "products": {
            "index": "prod_products",
            "fields": {"name": "title", "price": "pricing.amount"},
            "transform": "tests.integration.test_algolia_sink:shout_name",
        },
        "categories": {"index": "prod_categories", "object_id_field": "slug"},
    }
    sink = await opened(make_sink(indexes=indexes))
    await sink.write(
        [
            Record("7", {"title": "pen", "pricing": {"amount": 3}, "secret": "x"}, "products"),
            Record("c1", {"slug": "office", "label": "Office"}, "categories"),
        ]
    )
    assert server.objects("prod_products") == {
        "7": {"name": "PEN", "price": 3, "indexed_by": "syncworker", "objectID": "7"}
    }
    assert server.objects("prod_categories") == {
        "office": {"slug": "office", "label": "Office", "objectID": "office"}
    }


async def test_a_failing_transform_dead_letters_only_its_record(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    indexes = {
        "products": {
            "index": "prod_products",
            "transform": "tests.integration.test_algolia_sink:shout_name",
        }
    }
    sink = await opened(make_sink(indexes=indexes))
    result = await sink.write([product("1", name="pen"), Record("2", {"x": 1}, "products")])
    assert result.failed == {}
    # A transform that is missing is a configuration error, before anything runs.
    bad = {"products": {"index": "p", "transform": "tests.integration.test_algolia_sink:nope"}}
    with pytest.raises(ConfigError, match=r"indexes\.products\.transform"):
        make_sink(indexes=bad)


async def test_partial_updates_merge_into_existing_objects(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    full = await opened(make_sink())
    await full.write([product("1", name="pen", price=3)])
    indexes = {"products": {"index": "prod_products", "partial": True}}
    partial = await opened(make_sink(indexes=indexes))
    await partial.write([Record("1", {"price": 4}, "products"), Record("9", {"p": 1}, "products")])
    assert actions(server.calls()[-1]) == ["partialUpdateObject", "partialUpdateObject"]
    assert server.objects("prod_products")["1"] == {
        "id": "1",
        "name": "pen",
        "price": 4,
        "objectID": "1",
    }
    assert server.objects("prod_products")["9"] == {"p": 1, "objectID": "9"}

    no_create = {
        "products": {"index": "prod_products", "partial": True, "create_if_missing": False}
    }
    strict = await opened(make_sink(indexes=no_create))
    await strict.write([Record("10", {"p": 1}, "products")])
    assert actions(server.calls()[-1]) == ["partialUpdateObjectNoCreate"]
    assert "10" not in server.objects("prod_products")


async def test_one_call_per_index_and_operation_for_a_mixed_batch(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    await sink.write([product("1", name="a"), product("2", name="b")])
    server.requests.clear()
    batch = [
        product("3", name="c"),
        deleted("1"),
        Record("c1", {"t": 1}, "categories"),
        product("4", name="d"),
        deleted("c9", "categories"),
        deleted("2"),
        Record("c2", {"t": 2}, "categories"),
    ]
    result = await sink.write(batch)
    assert result.failed == {}
    calls = server.calls()
    assert len(calls) == 4
    seen = sorted((call.path, tuple(actions(call))) for call in calls)
    assert seen == [
        ("/1/indexes/prod_categories/batch", ("addObject", "addObject")),
        ("/1/indexes/prod_categories/batch", ("deleteObject",)),
        ("/1/indexes/prod_products/batch", ("addObject", "addObject")),
        ("/1/indexes/prod_products/batch", ("deleteObject", "deleteObject")),
    ]
    assert set(server.objects("prod_products")) == {"3", "4"}
    assert set(server.objects("prod_categories")) == {"c1", "c2"}


async def test_grouping_keeps_the_last_word_of_each_key(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    await sink.write([product("1", v=0), product("2", v=0)])
    # 1: saved then deleted; 2: deleted then saved again; 3: saved twice.
    batch = [product("1", v=1), deleted("2"), deleted("1"), product("2", v=2)]
    await sink.write([*batch, product("3", v=1), product("3", v=2)])
    objects = server.objects("prod_products")
    assert set(objects) == {"2", "3"}
    assert objects["2"]["v"] == 2
    assert objects["3"]["v"] == 2


async def test_calls_are_split_at_max_objects_and_max_bytes(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink(max_objects_per_call=10))
    result = await sink.write([product(str(i)) for i in range(25)])
    assert result.failed == {}
    assert [len(call.json["requests"]) for call in server.calls()] == [10, 10, 5]
    assert len(server.objects("prod_products")) == 25

    server.requests.clear()
    big = await opened(make_sink(max_bytes_per_call=2048))
    records = [product(f"b{i}", text="x" * 900) for i in range(6)]
    records.append(product("huge", text="x" * 5000))
    result = await big.write(records)
    calls = server.calls()
    assert [len(call.json["requests"]) for call in calls] == [2, 2, 2]
    assert all(len(call.body) <= 2048 for call in calls)
    assert list(result.failed) == [6]
    assert "max_bytes_per_call" in str(result.failed[6])


async def test_database_values_are_sent_as_json(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = await sink.write(
        [
            product("1", price=Decimal("9.90"), updated_at=when, tags={"a"}),
            product("2", blob=object()),
        ]
    )
    assert list(result.failed) == [1]
    assert "not JSON serializable" in str(result.failed[1])
    assert server.objects("prod_products")["1"] == {
        "id": "1",
        "price": 9.9,
        "updated_at": "2026-01-02T03:04:05+00:00",
        "tags": ["a"],
        "objectID": "1",
    }


async def test_wait_for_task_polls_until_published(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    server.task_pending_polls = 2
    sink = await opened(make_sink(wait_for_task=True))
    await sink.write([product("1"), deleted("2")])
    polls = [r for r in server.requests if "/task/" in r.path]
    assert len(polls) == 2 * 3  # two calls, each polled until published
    assert all(r.status == 200 for r in polls)


async def test_an_unexpected_answer_is_retryable(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    server.respond_next("garbage")
    with pytest.raises(RetryableError, match="unexpected answer"):
        await sink.write([product("1")])


async def test_429_is_retryable_with_the_retry_after_delay(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    server.respond_next("429")
    with pytest.raises(RetryableError) as caught:
        await sink.write([product("1")])
    assert caught.value.delay_s == 2.0
    assert len(server.requests) == 1  # the client did not retry by itself

    server.retry_after = None
    server.respond_next("429")
    with pytest.raises(RetryableError) as caught:
        await sink.write([product("1")])
    assert caught.value.delay_s is None

    await sink.write([product("1")])  # the runtime's retry goes through
    assert set(server.objects("prod_products")) == {"1"}


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_retryable_and_the_host_is_not_shunned(
    server: AlgoliaServer, make_sink: SinkFactory, status: int
) -> None:
    sink = await opened(make_sink())
    server.respond_next(status)
    with pytest.raises(RetryableError, match=f"HTTP {status}"):
        await sink.write([product("1")])
    assert server.objects("prod_products") == {}
    # The client would mark the only host down for 5 minutes; the next try must reach it.
    await sink.write([product("1")])
    assert set(server.objects("prod_products")) == {"1"}


async def test_a_slow_answer_is_retryable(server: AlgoliaServer, make_sink: SinkFactory) -> None:
    sink = await opened(make_sink(timeout="300ms"))
    server.delay_s = 1.0
    with pytest.raises(RetryableError, match=r"no answer within 0\.3s"):
        await sink.write([product("1")])


async def test_connection_refused_is_connection_failed(make_sink: SinkFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sink = await opened(make_sink(hosts=[f"http://127.0.0.1:{port}"]))
    with pytest.raises(ConnectionFailed):
        await sink.write([product("1")])


async def test_403_is_a_refused_configuration_without_the_key(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    wrong_key = "wrong-secret-key-9876"
    sink = await opened(make_sink(api_key=wrong_key))
    with pytest.raises(ConfigRefused, match="HTTP 403") as caught:
        await sink.write([product("1")])
    assert wrong_key not in str(caught.value)
    assert wrong_key not in repr(sink.config)
    assert server.objects("prod_products") == {}


async def test_a_refused_object_named_by_algolia_is_reported_and_the_rest_sent(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    server.reject_object_ids = {"2", "7"}
    sink = await opened(make_sink())
    result = await sink.write([product(str(n)) for n in range(10)])
    assert sorted(result.failed) == [2, 7]
    for index in (2, 7):
        assert isinstance(result.failed[index], PermanentError)
        assert f"Record {index} is invalid: attribute 'price'" in str(result.failed[index])
    assert set(server.objects("prod_products")) == {str(n) for n in range(10)} - {"2", "7"}
    batches = [r for r in server.requests if r.path.endswith("/batch")]
    assert [r.status for r in batches] == [400, 400, 200]  # named by the answer: no bisection


async def test_a_refusal_naming_no_object_of_several_raises_permanent(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    server.reject_object_ids = {"2"}
    server.reject_message = "one of the records is invalid"
    sink = await opened(make_sink())
    with pytest.raises(PermanentError, match="HTTP 400: one of the records is invalid"):
        await sink.write([product("1"), product("2"), product("3")])
    assert server.objects("prod_products") == {}
    # What the runtime's bisection ends with: the single record is reported, the rest lands.
    assert (await sink.write([product("1")])).failed == {}
    result = await sink.write([product("2")])
    assert list(result.failed) == [0]
    assert isinstance(result.failed[0], PermanentError)
    assert set(server.objects("prod_products")) == {"1"}


async def test_the_api_key_never_appears_in_errors(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    server.reject_object_ids = {"2"}
    server.echo_headers = True
    sink = await opened(make_sink())
    messages: list[str] = []
    result = await sink.write([product("2")])
    messages.append(str(result.failed[0]))
    refused = await sink.write([product("2"), product("3")])
    messages.append(str(refused.failed[0]))
    for outcome in ("429", 500):
        server.respond_next(outcome)
        with pytest.raises(RetryableError) as retry:
            await sink.write([product("1")])
        messages.append(str(retry.value))
    assert "x-algolia-application-id" not in messages[0]  # headers were echoed
    assert "***" in messages[0]
    for message in messages:
        assert server.api_key not in message


async def test_a_stream_without_an_index_is_dead_lettered_by_name(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    result = await sink.write([product("1"), Record("o1", {"x": 1}, "orders")])
    assert list(result.failed) == [1]
    assert isinstance(result.failed[1], PermanentError)
    assert "stream 'orders' has no index" in str(result.failed[1])
    assert set(server.objects("prod_products")) == {"1"}


async def test_write_before_open_and_after_close(make_sink: SinkFactory) -> None:
    sink = make_sink()
    with pytest.raises(ConnectorError, match="not open"):
        await sink.write([product("1")])
    await sink.open()
    await sink.close()
    await sink.close()


async def test_reindex_replaces_the_index_atomically_and_keeps_its_settings(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink(max_objects_per_call=10))
    await sink.write([product("stale", name="old"), product("1", name="older")])
    server.indexes["prod_products"].settings = {"searchableAttributes": ["name"]}
    server.reject_object_ids = {"13"}

    async def rows() -> AsyncIterator[Record]:
        for i in range(25):
            yield product(str(i), name=f"n{i}")
        yield deleted("stale")

    result = await sink.reindex("products", rows())
    assert result.written == 24
    assert list(result.failed) == [13]
    assert "Record 13 is invalid" in str(result.failed[13])
    objects = server.objects("prod_products")
    assert set(objects) == {str(i) for i in range(25)} - {"13"}
    assert objects["1"]["name"] == "n1"
    assert server.indexes["prod_products"].settings == {"searchableAttributes": ["name"]}
    assert set(server.indexes) == {"prod_products"}  # the temporary index was moved
    temporary = result.temporary_index
    assert temporary.startswith("prod_products_tmp_")
    assert all(call.path == f"/1/indexes/{temporary}/batch" for call in server.calls()[2:])
    moves = [r.json for r in server.calls("/operation") if r.json["operation"] == "move"]
    assert moves == [{"operation": "move", "destination": "prod_products"}]


async def test_a_failed_reindex_leaves_the_index_alone(
    server: AlgoliaServer, make_sink: SinkFactory
) -> None:
    sink = await opened(make_sink())
    await sink.write([product("1", name="kept")])
    server.respond_next(200, 200, 503)  # copy, task poll, then the first batch call fails
    with pytest.raises(RetryableError):
        await sink.reindex("products", [product("2")])
    assert set(server.indexes) == {"prod_products"}  # the temporary index was deleted
    assert set(server.objects("prod_products")) == {"1"}
    with pytest.raises(ConfigError, match="'orders' has no index"):
        await sink.reindex("orders", [])
