"""Built-in processors: map, filter and python, alone and inside a pipeline."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncworker.config import parse_config
from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy
from syncworker.core.policies import BreakerPolicy
from syncworker.errors import ConfigError
from syncworker.processors.builtin import (
    FilterConfig,
    FilterProcessor,
    MapConfig,
    MapProcessor,
    PythonConfig,
    PythonProcessor,
)
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySink, MemorySource

_module_ids = itertools.count()

USER_CODE = '''
from syncworker.core import Record


def shout(record: Record) -> Record | None:
    """Upper-cases "text"; drops records marked "skip"; fails on "boom"."""
    if record.data.get("skip"):
        return None
    if record.data.get("text") == "boom":
        raise RuntimeError("cannot shout " + record.key)
    record.data["text"] = record.data["text"].upper()
    return record


NOT_CALLABLE = 42
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of user functions importable by name, as a deployment would ship it."""
    name = f"sw_user_processors_{next(_module_ids)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def rec(data: dict[str, Any], key: str = "k", stream: str = "default") -> Record:
    return Record(key=key, data=data, stream=stream)


def mapper(**config: Any) -> MapProcessor:
    return MapProcessor(MapConfig.model_validate({"type": "map", **config}))


def keeper(**config: Any) -> FilterProcessor:
    return FilterProcessor(FilterConfig.model_validate({"type": "filter", **config}))


def kept_keys(processor: FilterProcessor, records: list[Record]) -> list[str]:
    return [r.key for r in records if processor.process(r) is not None]


# -- map -----------------------------------------------------------------------------------


def test_map_picks_and_renames_fields() -> None:
    out = mapper(fields={"id": "id", "body": "text"}).process(
        rec({"id": 1, "text": "hi", "secret": "x"})
    )
    assert out is not None
    assert out.data == {"id": 1, "body": "hi"}
    assert out.key == "k"


def test_map_follows_dotted_paths() -> None:
    processor = mapper(fields={"city": "address.city", "zip": "address.geo.zip", "all": "address"})
    data = {"address": {"city": "Lisboa", "geo": {"zip": "1000-001"}}}
    out = processor.process(rec(data))
    assert out is not None
    assert out.data["city"] == "Lisboa" and out.data["zip"] == "1000-001"
    assert out.data["all"] == {"city": "Lisboa", "geo": {"zip": "1000-001"}}


def test_map_missing_inputs_become_none() -> None:
    processor = mapper(
        fields={"a": "absent", "b": "address.absent", "c": "name.first", "d": "present"}
    )
    out = processor.process(rec({"address": {}, "name": "not a dict", "present": None}))
    assert out is not None
    assert out.data == {"a": None, "b": None, "c": None, "d": None}


def test_map_keep_unmapped_keeps_the_other_fields() -> None:
    processor = mapper(fields={"body": "text", "id": "meta.id"}, keep_unmapped=True)
    out = processor.process(rec({"text": "hi", "meta": {"id": 7}, "extra": [1]}))
    assert out is not None
    assert out.data == {"text": "hi", "meta": {"id": 7}, "extra": [1], "body": "hi", "id": 7}


def test_map_keep_unmapped_mapped_value_wins_over_same_named_input() -> None:
    processor = mapper(fields={"text": "payload.text"}, keep_unmapped=True)
    out = processor.process(rec({"text": "old", "payload": {"text": "new"}}))
    assert out is not None and out.data["text"] == "new"


def test_map_sets_the_key_from_a_field() -> None:
    processor = mapper(fields={"name": "name"}, key="user.id")
    out = processor.process(rec({"name": "ana", "user": {"id": 42}}, key="old"))
    assert out is not None
    assert out.key == "42"  # keys are strings
    assert out.data == {"name": "ana"}


def test_map_keeps_the_key_when_the_key_field_is_missing_or_null() -> None:
    processor = mapper(fields={"name": "name"}, key="id")
    missing = processor.process(rec({"name": "a"}, key="k1"))
    null = processor.process(rec({"name": "b", "id": None}, key="k2"))
    assert missing is not None and missing.key == "k1"
    assert null is not None and null.key == "k2"


def test_map_config_requires_fields_and_rejects_unknown_settings() -> None:
    with pytest.raises(ValidationError, match="fields"):
        MapConfig.model_validate({"type": "map"})
    with pytest.raises(ValidationError, match="keep_unmaped"):
        MapConfig.model_validate({"type": "map", "fields": {}, "keep_unmaped": True})


# -- filter --------------------------------------------------------------------------------


def test_filter_equals() -> None:
    processor = keeper(field="status", equals="active")
    records = [
        rec({"status": "active"}, "1"),
        rec({"status": "inactive"}, "2"),
        rec({}, "3"),
        rec({"status": "active", "x": 1}, "4"),
    ]
    assert kept_keys(processor, records) == ["1", "4"]


def test_filter_equals_on_a_nested_field() -> None:
    processor = keeper(field="user.role", equals="admin")
    records = [
        rec({"user": {"role": "admin"}}, "1"),
        rec({"user": {"role": "guest"}}, "2"),
        rec({"user": "admin"}, "3"),
    ]
    assert kept_keys(processor, records) == ["1"]


def test_filter_one_of() -> None:
    processor = keeper(field="kind", one_of=["a", "b", 3])
    records = [rec({"kind": v}, str(i)) for i, v in enumerate(["a", "c", "b", 3, 4])]
    records.append(rec({}, "missing"))
    assert kept_keys(processor, records) == ["0", "2", "3"]


def test_filter_exists_true_and_false() -> None:
    records = [
        rec({"email": "a@x"}, "1"),
        rec({"email": None}, "2"),  # present, even if null
        rec({}, "3"),
    ]
    assert kept_keys(keeper(field="email", exists=True), records) == ["1", "2"]
    assert kept_keys(keeper(field="email", exists=False), records) == ["3"]


def test_filter_only_applies_to_the_named_streams() -> None:
    processor = keeper(field="status", equals="active", streams=["users"])
    records = [
        rec({"status": "inactive"}, "1", stream="users"),
        rec({"status": "active"}, "2", stream="users"),
        rec({"status": "inactive"}, "3", stream="orders"),
    ]
    assert kept_keys(processor, records) == ["2", "3"]


def test_filter_returns_the_same_record_unchanged() -> None:
    record = rec({"status": "active"})
    assert keeper(field="status", equals="active").process(record) is record
    assert record.data == {"status": "active"}


@pytest.mark.parametrize(
    "conditions",
    [
        {},
        {"equals": 1, "one_of": [1]},
        {"equals": 1, "exists": True},
        {"one_of": [1], "exists": False},
        {"equals": 1, "one_of": [1], "exists": True},
    ],
    ids=["none", "equals+one_of", "equals+exists", "one_of+exists", "all-three"],
)
def test_filter_config_needs_exactly_one_condition(conditions: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of equals, one_of, exists"):
        FilterConfig.model_validate({"type": "filter", "field": "x", **conditions})


def test_filter_config_needs_a_field() -> None:
    with pytest.raises(ValidationError, match="field"):
        FilterConfig.model_validate({"type": "filter", "equals": 1})


# -- python --------------------------------------------------------------------------------


def test_python_processor_calls_the_named_function(user_module: str) -> None:
    processor = PythonProcessor(PythonConfig(function=f"{user_module}:shout"))
    out = processor.process(rec({"text": "hi"}))
    assert out is not None and out.data == {"text": "HI"}
    assert processor.process(rec({"text": "x", "skip": True})) is None
    with pytest.raises(RuntimeError, match="cannot shout k"):
        processor.process(rec({"text": "boom"}))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon_here", "expected 'module:function', got 'no_colon_here'"),
        (":shout", "expected 'module:function'"),
        ("json:", "expected 'module:function'"),
        ("sw_no_such_module_xyz:f", "cannot import 'sw_no_such_module_xyz:f'"),
        ("json:no_such_function", "cannot import 'json:no_such_function'"),
    ],
)
def test_python_processor_bad_target_is_a_clear_validation_error(target: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PythonConfig(function=target)
    assert message in str(caught.value)
    assert caught.value.errors()[0]["loc"] == ("function",)


def test_python_processor_target_must_be_callable(user_module: str) -> None:
    with pytest.raises(ValidationError, match="is not callable"):
        PythonConfig(function=f"{user_module}:NOT_CALLABLE")


def test_python_processor_bad_target_in_a_config_file_names_the_setting(
    tmp_path: Path,
) -> None:
    text = f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  p:
    source: {{type: sqlite_queue, path: "{tmp_path}/queue.db"}}
    processors:
      - {{type: python, function: "sw_no_such_module_xyz:handle"}}
    sinks: [{{type: jsonl, path: "{tmp_path}/out"}}]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    message = str(caught.value)
    assert "pipelines.p.processors[0].function" in message
    assert "cannot import 'sw_no_such_module_xyz:handle'" in message
    assert "\n" not in message


# -- inside a pipeline ---------------------------------------------------------------------


def settings() -> PipelineSettings:
    return PipelineSettings(
        batch_size=10,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=2, delay_s=0.001, max_delay_s=0.002, jitter=0),
        breaker=BreakerPolicy(delay_s=0.01, max_delay_s=0.05),
    )


async def test_a_raising_processor_dead_letters_only_that_record(
    state: SqliteStateStore, user_module: str
) -> None:
    queue = MemoryQueue(
        [
            rec({"text": "a"}, "1"),
            rec({"text": "boom"}, "2"),
            rec({"text": "c", "skip": True}, "3"),
            rec({"text": "d"}, "4"),
        ]
    )
    source = MemorySource(queue)
    sink = MemorySink()
    processor = PythonProcessor(PythonConfig(function=f"{user_module}:shout"))
    pipeline = Pipeline("p", source, [sink], [processor], settings(), state)
    async with pipeline:
        run = await pipeline.run_once()
    assert sink.rows == {"1": {"text": "A"}, "4": {"text": "D"}}
    assert (run.processed, run.written, run.dead_lettered, run.filtered) == (4, 2, 1, 1)
    assert run.status == "success"
    assert sorted(r.key for r in source.acked) == ["1", "2", "3", "4"]
    assert source.nacked == []
    [letter] = await state.dead_letters("p")
    assert (letter.key, letter.sink, letter.error_type) == ("2", "processor:python", "RuntimeError")
    assert letter.error == "RuntimeError: cannot shout 2"
    assert letter.data == {"text": "boom"}
    assert letter.stack is not None and "cannot shout 2" in letter.stack
    [error] = await state.errors("p")
    assert error.type == "dead_letter" and error.record_key == "2"


async def test_map_then_filter_in_a_pipeline(state: SqliteStateStore) -> None:
    queue = MemoryQueue(
        [
            rec({"user": {"id": 10, "state": "on"}, "msg": "a"}, "x1"),
            rec({"user": {"id": 11, "state": "off"}, "msg": "b"}, "x2"),
            rec({"user": {"id": 12, "state": "on"}}, "x3"),
        ]
    )
    sink = MemorySink()
    processors = [
        mapper(fields={"state": "user.state", "body": "msg"}, key="user.id"),
        keeper(field="state", equals="on"),
    ]
    pipeline = Pipeline("p", MemorySource(queue), [sink], processors, settings(), state)
    async with pipeline:
        run = await pipeline.run_once()
    assert sink.rows == {"10": {"state": "on", "body": "a"}, "12": {"state": "on", "body": None}}
    assert run.filtered == 1 and run.written == 2


async def test_requeued_dead_letter_after_map_is_written_with_the_original_mapping(
    state: SqliteStateStore,
) -> None:
    queue = MemoryQueue([rec({"id": 1, "text": "hi"}, "1"), rec({"id": 2, "text": "yo"}, "2")])
    sink = MemorySink(reject_keys={"2"})
    processors = [mapper(fields={"id": "id", "body": "text"})]
    pipeline = Pipeline("p", MemorySource(queue), [sink], processors, settings(), state)
    async with pipeline:
        await pipeline.run_once()
        assert sink.rows == {"1": {"id": 1, "body": "hi"}}
        sink.reject_keys.clear()
        assert await state.requeue_dead_letters(pipeline="p") == 1
        await pipeline.run_once()
    # the sink's row must be what it would have been without the rejection
    assert sink.rows["2"] == {"id": 2, "body": "yo"}


async def test_rolled_back_batch_is_mapped_from_the_original_data() -> None:
    queue = MemoryQueue([rec({"id": 1, "text": "hi"}, "1")])
    sink = MemorySink(down=True)
    processors = [mapper(fields={"id": "id", "body": "text"})]
    pipeline = Pipeline("p", MemorySource(queue), [sink], processors, settings())
    async with pipeline:
        failed = await pipeline.run_once()
        assert failed.status == "error" and queue.ready == 1
        sink.down = False
        await pipeline.run_once()
    assert sink.rows == {"1": {"id": 1, "body": "hi"}}


def test_filter_equals_null_and_booleans_are_not_numbers() -> None:
    from syncworker.processors.builtin import FilterConfig, FilterProcessor

    nulls = FilterProcessor(FilterConfig(field="deleted_at", equals=None))
    assert nulls.process(rec({"deleted_at": None}, "a")) is not None
    assert nulls.process(rec({"deleted_at": "2026-01-01"}, "b")) is None
    assert nulls.process(rec({}, "c")) is None  # a missing field is not null

    falses = FilterProcessor(FilterConfig(field="active", equals=False))
    assert falses.process(rec({"active": False}, "d")) is not None
    assert falses.process(rec({"active": 0}, "e")) is None
    ones = FilterProcessor(FilterConfig(field="n", one_of=[1, 2]))
    assert ones.process(rec({"n": True}, "f")) is None
    assert ones.process(rec({"n": 2}, "g")) is not None
