"""The ``set`` (constant fields) and ``compute`` (fields from Python callables) processors."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncworker.config import parse_config
from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy
from syncworker.core.policies import BreakerPolicy
from syncworker.core.protocols import Processor
from syncworker.core.registry import lookup
from syncworker.errors import ConfigError
from syncworker.processors.builtin import (
    ComputeConfig,
    ComputeError,
    ComputeProcessor,
    SetConfig,
    SetProcessor,
)
from syncworker.state import SqliteStateStore
from syncworker.testing import MemoryQueue, MemorySink, MemorySource

_module_ids = itertools.count()

USER_CODE = '''
from datetime import datetime, timezone
from decimal import Decimal


def full_name(data):
    """First and last name; raises on a record without a first name."""
    if data.get("first_name") is None:
        raise ValueError("no first_name")
    return f"{data['first_name']} {data.get('last_name') or ''}".strip()


def total(data):
    return Decimal(data["price"]) * data["quantity"]


def vandal(data):
    data["first_name"] = "edited"  # must not leak into the record or the next function
    return 1


def sees_first_name(data):
    return data.get("first_name")


def sees_computed(data):
    return "full_name" in data


def opaque(data):
    return object()


def when(data):
    return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def big(data):
    return 2**80


NOT_CALLABLE = 42
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"sw_user_compute_{next(_module_ids)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def rec(data: dict[str, Any], key: str = "k", op: str = "upsert") -> Record:
    return Record(key=key, data=data, op=op)


def setter(**fields: Any) -> SetProcessor:
    return SetProcessor(SetConfig.model_validate({"type": "set", "fields": fields}))


def computer(**fields: str) -> ComputeProcessor:
    return ComputeProcessor(ComputeConfig.model_validate({"type": "compute", "fields": fields}))


# -- set -----------------------------------------------------------------------------------


def test_set_writes_constants_and_replaces_same_named_fields() -> None:
    processor = setter(source_system="myusta", version=2, flag=False, nothing=None)
    out = processor.process(rec({"id": 1, "source_system": "other"}))
    assert out is not None
    assert out.data == {
        "id": 1,
        "source_system": "myusta",
        "version": 2,
        "flag": False,
        "nothing": None,
    }


def test_set_gives_each_record_its_own_copy_of_a_list_or_mapping() -> None:
    processor = setter(tags=["a"], meta={"n": [1]})
    first = processor.process(rec({}, "1"))
    second = processor.process(rec({}, "2"))
    assert first is not None and second is not None
    first.data["tags"].append("b")
    first.data["meta"]["n"].append(2)
    assert second.data == {"tags": ["a"], "meta": {"n": [1]}}
    third = processor.process(rec({}, "3"))
    assert third is not None and third.data == {"tags": ["a"], "meta": {"n": [1]}}


def test_set_applies_to_deletes_too() -> None:
    out = setter(source_system="myusta").process(rec({}, op="delete"))
    assert out is not None and out.data == {"source_system": "myusta"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "expected at least one field"),
        ({"a.b": 1}, "not dotted paths"),
        ({"": 1}, "field ''"),
    ],
)
def test_set_config_refuses_what_it_cannot_write(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SetConfig.model_validate({"type": "set", "fields": fields})


def test_set_config_refuses_a_value_without_json_form() -> None:
    with pytest.raises(ValidationError, match="field 'x': the value has no exact JSON form"):
        SetConfig.model_validate({"type": "set", "fields": {"x": Decimal("NaN")}})


# -- compute -------------------------------------------------------------------------------


def test_compute_sets_each_field_from_its_function(user_module: str) -> None:
    processor = computer(full_name=f"{user_module}:full_name", total=f"{user_module}:total")
    out = processor.process(
        rec({"first_name": "Ada", "last_name": "Lovelace", "price": "0.10", "quantity": 3})
    )
    assert out is not None
    assert out.data["full_name"] == "Ada Lovelace"
    assert out.data["total"] == Decimal("0.30")  # exact, not 0.30000000000000004
    assert type(out.data["total"]) is Decimal


def test_compute_functions_see_the_input_data_only(user_module: str) -> None:
    processor = computer(
        a=f"{user_module}:vandal",
        b=f"{user_module}:sees_first_name",
        full_name=f"{user_module}:full_name",
        c=f"{user_module}:sees_computed",
    )
    out = processor.process(rec({"first_name": "Ada"}))
    assert out is not None
    assert out.data == {
        "first_name": "Ada",
        "a": 1,
        "b": "Ada",
        "full_name": "Ada",
        "c": False,
    }


def test_compute_a_raising_function_raises_for_that_record(user_module: str) -> None:
    processor = computer(full_name=f"{user_module}:full_name")
    with pytest.raises(ValueError, match="no first_name"):
        processor.process(rec({"last_name": "x"}))


def test_compute_leaves_deletes_alone(user_module: str) -> None:
    processor = computer(full_name=f"{user_module}:full_name")  # raises without a first_name
    record = rec({}, op="delete")
    assert processor.process(record) is record and record.data == {}


def test_compute_a_result_without_json_form_is_refused(user_module: str) -> None:
    processor = computer(x=f"{user_module}:opaque")
    with pytest.raises(ComputeError, match=r"field 'x': .*:opaque returned a object"):
        processor.process(rec({}))


def test_compute_keeps_dates_and_big_numbers(user_module: str) -> None:
    out = computer(at=f"{user_module}:when", n=f"{user_module}:big").process(rec({}))
    assert out is not None
    assert out.data == {"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "n": 2**80}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "field 'f': expected 'module:function', got 'no_colon'"),
        ("sw_no_such_module_xyz:f", "field 'f': cannot import 'sw_no_such_module_xyz:f'"),
        ("NOT_CALLABLE", "is not callable"),
    ],
)
def test_compute_config_refuses_a_function_it_cannot_import(
    user_module: str, target: str, message: str
) -> None:
    if target == "NOT_CALLABLE":
        target = f"{user_module}:NOT_CALLABLE"
    with pytest.raises(ValidationError, match=message):
        ComputeConfig.model_validate({"type": "compute", "fields": {"f": target}})


def test_the_models_describe_every_setting() -> None:
    for model in (SetConfig, ComputeConfig):
        assert model.model_fields["fields"].description


def test_both_are_registered() -> None:
    assert lookup("processor", "set") is SetProcessor
    assert lookup("processor", "compute") is ComputeProcessor


def test_a_bad_compute_function_in_a_config_file_names_the_setting(tmp_path: Path) -> None:
    text = f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  p:
    source: {{type: sqlite_queue, path: "{tmp_path}/queue.db"}}
    processors:
      - {{type: set, fields: {{source_system: myusta}}}}
      - {{type: compute, fields: {{full_name: "sw_no_such_module_xyz:full_name"}}}}
    sinks: [{{type: jsonl, path: "{tmp_path}/out"}}]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    message = str(caught.value)
    assert "pipelines.p.processors[1].fields" in message
    assert "cannot import 'sw_no_such_module_xyz:full_name'" in message


# -- inside a pipeline ---------------------------------------------------------------------


async def test_a_raising_compute_dead_letters_only_that_record(
    state: SqliteStateStore, user_module: str
) -> None:
    queue = MemoryQueue(
        [
            rec({"first_name": "Ada"}, "1"),
            rec({"last_name": "x"}, "2"),
            rec({"first_name": "B"}, "3"),
        ]
    )
    sink = MemorySink()
    processors: list[Processor] = [
        setter(source_system="myusta"),
        computer(full_name=f"{user_module}:full_name"),
    ]
    settings = PipelineSettings(
        batch_size=10,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=2, delay_s=0.001, max_delay_s=0.002, jitter=0),
        breaker=BreakerPolicy(delay_s=0.01, max_delay_s=0.05),
    )
    pipeline = Pipeline("p", MemorySource(queue), [sink], processors, settings, state)
    async with pipeline:
        run = await pipeline.run_once()
    assert sink.rows == {
        "1": {"first_name": "Ada", "source_system": "myusta", "full_name": "Ada"},
        "3": {"first_name": "B", "source_system": "myusta", "full_name": "B"},
    }
    assert (run.written, run.dead_lettered) == (2, 1)
    [letter] = await state.dead_letters("p")
    assert (letter.key, letter.sink) == ("2", "processor:compute")
    assert letter.error == "ValueError: no first_name"
    assert letter.data == {"last_name": "x"}  # as the source delivered it
