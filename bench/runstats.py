"""What the benchmarks share to report repeated runs: medians with min-max, and their text."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any


def add_medians(row: dict[str, Any], runs: list[dict[str, Any]], keys: Iterable[str]) -> None:
    """``row[key]``, ``row[key_min]`` and ``row[key_max]`` over ``runs`` for every key: the
    median, min and max, or None when a run has no figure for it."""
    for key in keys:
        values = [run[key] for run in runs]
        if None in values:
            row[key] = row[f"{key}_min"] = row[f"{key}_max"] = None
            continue
        row[key] = statistics.median(values)
        row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)


def median_range(row: dict[str, Any], key: str, spec: str, missing: str = "-") -> str:
    """``median (min-max)`` of ``key`` in ``row`` (as ``add_medians`` left it)."""
    if row[key] is None:
        return missing
    return f"{row[key]:{spec}} ({row[f'{key}_min']:{spec}}-{row[f'{key}_max']:{spec}})"


def number(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else f"{value:{spec}}"
