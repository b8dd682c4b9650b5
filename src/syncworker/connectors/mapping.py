"""Column mappings of the table sinks (SQLite, PostgreSQL): column -> record field path or
a special value (``$key``, ``$stream``, ...), validated the same way for every table sink."""

from __future__ import annotations

from collections.abc import Callable, Collection


def check_column_mapping(
    value: dict[str, str] | None,
    special_values: Collection[str],
    check_identifier: Callable[[str], str],
) -> dict[str, str] | None:
    """``value`` unchanged when every column name is a valid identifier and every source is a
    dotted field path or one of ``special_values``; ``ValueError`` naming the column if not."""
    if value is None:
        return None
    if not value:
        raise ValueError("columns is empty; use null for the default layout")
    for column, source in value.items():
        check_identifier(column)
        if source.startswith("$") and source not in special_values:
            raise ValueError(
                f"column {column!r}: unknown value {source!r}; "
                f"expected a field path or one of {sorted(special_values)}"
            )
        if not all(source.split(".")):
            raise ValueError(f"column {column!r}: invalid field path {source!r}")
    return value
