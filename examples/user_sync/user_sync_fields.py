"""Computed fields of the user sync (the `compute` processor of syncworker.yaml).

Each function gets the source row as a dict (column -> value) and returns the field's
value. A function that raises dead-letters that record with the error (and writes it to
sync_errors); the rest of the batch flows on.
"""

from __future__ import annotations

from typing import Any


def full_name(row: dict[str, Any]) -> str | None:
    """"First Last" from the names that are set; None when neither is."""
    parts = [str(row[name]).strip() for name in ("first_name", "last_name") if row.get(name)]
    joined = " ".join(part for part in parts if part)
    return joined or None
