"""``map`` (pick and rename fields), ``filter`` (keep records matching a condition) and
``python`` (any callable, imported by ``module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from syncworker.core.protocols import ConnectorConfig
from syncworker.core.record import Record

_MISSING = object()


def get_path(data: dict[str, Any], path: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; ``_MISSING`` when any step is absent."""
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


class MapConfig(ConnectorConfig):
    type: Literal["map"] = "map"
    fields: dict[str, str] = Field(
        description="output field -> input field path (dotted for nested fields)"
    )
    keep_unmapped: bool = Field(
        False, description="keep input fields that are not mapped, next to the mapped ones"
    )
    key: str | None = Field(None, description="set the record key from this input field path")


class MapProcessor:
    """Builds each record's data from the mapped fields; missing inputs become null."""

    config_model: ClassVar[type[ConnectorConfig]] = MapConfig

    def __init__(self, config: MapConfig, *, name: str = "map") -> None:
        self.name = name
        self._fields = list(config.fields.items())
        self._keep = config.keep_unmapped
        self._key = config.key

    def process(self, record: Record) -> Record | None:
        data = dict(record.data) if self._keep else {}
        for output, path in self._fields:
            value = get_path(record.data, path)
            data[output] = None if value is _MISSING else value
        if self._key is not None:
            key = get_path(record.data, self._key)
            if key is not _MISSING and key is not None:
                record.key = str(key)
        record.data = data
        return record


class FilterConfig(ConnectorConfig):
    type: Literal["filter"] = "filter"
    field: str = Field(description="input field path the condition looks at")
    equals: Any = Field(None, description="keep records whose field equals this value")
    one_of: list[Any] | None = Field(None, description="keep records whose field is one of these")
    exists: bool | None = Field(None, description="keep records that have (true) or lack the field")
    streams: list[str] | None = Field(None, description="only filter records of these streams")

    @model_validator(mode="after")
    def _one_condition(self) -> FilterConfig:
        # model_fields_set, not "is not None": `equals: null` is a real condition.
        given = [c for c in ("equals", "one_of", "exists") if c in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("expected exactly one of equals, one_of, exists")
        return self


class FilterProcessor:
    """Drops records that do not match (they are acked, and counted as filtered)."""

    config_model: ClassVar[type[ConnectorConfig]] = FilterConfig

    def __init__(self, config: FilterConfig, *, name: str = "filter") -> None:
        self.name = name
        self._config = config

    def process(self, record: Record) -> Record | None:
        config = self._config
        if config.streams is not None and record.stream not in config.streams:
            return record
        value = get_path(record.data, config.field)
        if config.exists is not None:
            keep = (value is not _MISSING) == config.exists
        elif config.one_of is not None:
            keep = any(_same(value, wanted) for wanted in config.one_of)
        else:
            keep = value is not _MISSING and _same(value, config.equals)
        return record if keep else None


def _same(value: Any, wanted: Any) -> bool:
    """Equality as YAML means it: true is not 1 and false is not 0 (Python's == says so)."""
    return value == wanted and isinstance(value, bool) == isinstance(wanted, bool)


class PythonConfig(ConnectorConfig):
    type: Literal["python"] = "python"
    function: str = Field(
        description="'module:function' taking a Record, returning a Record or None (drop)"
    )

    @field_validator("function")
    @classmethod
    def _importable(cls, value: str) -> str:
        load_function(value)
        return value


def load_function(target: str) -> Callable[[Record], Record | None]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'module:function', got {target!r}")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {target!r}: {exc}") from exc
    if not callable(function):
        raise ValueError(f"{target!r} is not callable")
    return function  # type: ignore[no-any-return]


class PythonProcessor:
    """Calls a user function on each record."""

    config_model: ClassVar[type[ConnectorConfig]] = PythonConfig

    def __init__(self, config: PythonConfig, *, name: str = "python") -> None:
        self.name = name
        self._function = load_function(config.function)

    def process(self, record: Record) -> Record | None:
        return self._function(record)
