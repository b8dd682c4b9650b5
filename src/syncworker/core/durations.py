"""Durations in config: ``500ms``, ``10s``, ``5m``, ``1h``, ``1d`` or a bare number of ms."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_s(value: Any) -> float:
    """Seconds from a duration; a bare number (or numeric string) is milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 10s, 5m, 1h or a number of ms")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("expected a duration >= 0")
        return float(value) / 1000.0
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            number, unit = match.groups()
            return float(number) * _UNITS_S[unit or "ms"]
    raise ValueError(
        f"expected a duration like 500ms, 10s, 5m, 1h or a number of ms, got {value!r}"
    )


DurationS = Annotated[float, BeforeValidator(parse_duration_s)]
"""A pydantic field type: accepts any duration form, holds seconds as a float."""


def format_seconds(value_s: float) -> str:
    """Seconds for people, in logs and recommendations: whole from 10 s (``52``), two
    significant digits below (``0.49``, ``5.2``)."""
    return f"{value_s:.0f}" if value_s >= 10 else f"{value_s:.2g}"
