"""What the benchmarks share: a child process that reports its figures as one JSON line, and
the medians with min-max of repeated runs, with their text."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterable
from typing import Any


def run_child(script: str, name: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh interpreter; the JSON object its last line of
    output holds. Exits with the child's error output when it fails."""
    result = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


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
