"""What every config model shares: a number is never read from ``true`` or ``false``.

pydantic's lax mode, which the file needs (``"${SYNC_BATCH_SIZE:-100}"`` is a string and must
become 100), also reads ``true`` as 1 and ``false`` as 0: ``batch.size: true`` would be a batch
of one. Strict mode would refuse the strings as well, so the models keep lax mode and refuse
booleans for numeric settings with this validator instead.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

_NUMBERS = (int, float)


def refuse_bool_for_number(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """``value`` unchanged, unless it is a boolean given to an int or float setting."""
    if not isinstance(value, bool) or info.field_name is None:
        return value
    field = model.model_fields.get(info.field_name)
    if field is not None and _is_number(field.annotation):
        raise ValueError("expected a number")
    return value


def _is_number(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool not in options and any(_is_number(a) for a in options)
    if origin is typing.Annotated:
        return _is_number(typing.get_args(annotation)[0])
    return (
        isinstance(annotation, type) and issubclass(annotation, _NUMBERS) and annotation is not bool
    )


def enabled_flag(value: Any) -> Any:
    """An ``enabled:`` value with the ``${VAR:+true}`` idiom read as meant: joined flags are
    "any of them is set" ("" off, "true" or "truetrue" on); anything else is left to the
    field's own validation."""
    if isinstance(value, str) and re.fullmatch(r"(true)*", value.strip().lower()):
        return value.strip() != ""
    return value


class StrictModel(BaseModel):
    """A config model: unknown keys refused, frozen, no number read from a boolean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_number(cls, value, info)
