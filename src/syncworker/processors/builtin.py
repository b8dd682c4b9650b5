"""``map`` (pick and rename fields), ``filter`` (keep records matching a condition),
``set`` (constant fields), ``compute`` (fields computed by Python callables) and ``python``
(any callable, imported by ``module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from syncworker.core import jsonvalue
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
    """The callable named ``'module:function'``; ValueError saying why it cannot be had."""
    return load_callable(target)


def load_callable(target: str) -> Callable[..., Any]:
    """Any callable named ``'module:function'``; ValueError saying why it cannot be had."""
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


_FIELD_NAME_HELP = "output field names are top-level names in record.data, not dotted paths"


def _field_names(fields: dict[str, Any]) -> None:
    if not fields:
        raise ValueError("expected at least one field")
    for name in fields:
        if not name or "." in name:
            raise ValueError(f"field {name!r}: {_FIELD_NAME_HELP}")


class SetConfig(ConnectorConfig):
    type: Literal["set"] = "set"
    fields: dict[str, Any] = Field(
        description="output field -> constant value (any YAML value: text, number, boolean, "
        "null, list, mapping), written into every record's data, replacing a field of that "
        "name; e.g. {source_system: myusta}"
    )

    @field_validator("fields")
    @classmethod
    def _valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        _field_names(value)
        for name, constant in value.items():
            if not jsonvalue.encodable(constant):
                raise ValueError(f"field {name!r}: the value has no exact JSON form")
        return value


class SetProcessor:
    """Writes the same constant fields into every record (upserts and deletes alike)."""

    config_model: ClassVar[type[ConnectorConfig]] = SetConfig

    def __init__(self, config: SetConfig, *, name: str = "set") -> None:
        self.name = name
        self._fields = dict(config.fields)

    def process(self, record: Record) -> Record | None:
        # A fresh copy of mutable constants per record: a later processor or sink that
        # edits one record's list must not edit every other record's.
        record.data.update(
            (k, v if not isinstance(v, dict | list) else _copy(v)) for k, v in self._fields.items()
        )
        return record


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class ComputeConfig(ConnectorConfig):
    type: Literal["compute"] = "compute"
    fields: dict[str, str] = Field(
        description="output field -> 'module:function' called with the record's data (a "
        "dict, as it reached this processor) and returning the field's value (text, number, "
        "boolean, null, date/time, list, mapping: anything with an exact JSON form); a "
        "function that raises dead-letters that record with the error. Every function sees "
        "the data before any of this processor's fields are set, so their order does not "
        "matter. Deletes pass unchanged (a row being removed has nothing to compute from). "
        "Declared here, so verify knows which target columns it cannot compute in SQL"
    )

    @field_validator("fields")
    @classmethod
    def _importable(cls, value: dict[str, str]) -> dict[str, str]:
        _field_names(value)
        for name, target in value.items():
            try:
                load_callable(target)
            except ValueError as exc:
                raise ValueError(f"field {name!r}: {exc}") from None
        return value


class ComputeError(ValueError):
    """A computed field's function returned a value with no exact JSON form."""


class ComputeProcessor:
    """Sets each declared field to its function's result on the record's data (upserts
    only: a delete carries no data to compute from)."""

    config_model: ClassVar[type[ConnectorConfig]] = ComputeConfig

    def __init__(self, config: ComputeConfig, *, name: str = "compute") -> None:
        self.name = name
        self._fields = [
            (field, target, load_callable(target)) for field, target in config.fields.items()
        ]

    def process(self, record: Record) -> Record | None:
        """Raises what a function raises (the record is dead-lettered with it), or
        ``ComputeError`` for a result that cannot be written exactly."""
        if record.op == "delete":
            return record
        computed: dict[str, Any] = {}
        for field, target, function in self._fields:
            # Each call gets its own shallow copy: a function editing its argument changes
            # neither the record nor what the next function sees.
            value = function(dict(record.data))
            if not jsonvalue.encodable(value):
                raise ComputeError(
                    f"field {field!r}: {target} returned a {type(value).__name__} that has "
                    "no exact JSON form"
                )
            computed[field] = value
        record.data.update(computed)
        return record
