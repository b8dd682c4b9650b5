"""The seed's transform for the products index, as a plain function (the sink's `transform`).

It gets the row as JSON (to_jsonb: numeric as a number, timestamps as ISO text) and returns
the object to index; the sink sets objectID from the row's key. Raising refuses the record:
with `dead_letter: {store: source}` that is a failed attempt kept in the queue table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def product(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "description": row.get("description") or "",
        "price": float(row["price"]),
        "category_id": row.get("category_id"),
        "in_stock": bool(row.get("in_stock", True)),
        # Algolia sorts and filters on numbers: a Unix timestamp, as the seed's transform did
        "updated_at": int(datetime.fromisoformat(row["updated_at"]).timestamp()),
    }
