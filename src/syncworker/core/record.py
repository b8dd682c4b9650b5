"""Record and Batch: what moves through a pipeline."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

Op = Literal["upsert", "delete"]


@dataclass(slots=True)
class Record:
    """One unit moved from a source to sinks.

    ``key`` is the stable identity sinks upsert or delete by; ``stream`` is the logical name
    (a queue, a table, a report) the record came from; ``meta`` carries the source position,
    delivery attempts and received time and is never written by sinks unless asked.
    """

    key: str
    data: dict[str, Any]
    stream: str = "default"
    op: Op = "upsert"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """Records claimed together from one source and acknowledged together.

    ``token`` is private to the source that produced the batch (claim id, delivery tags, ...);
    the runtime hands the same object back to ``ack``/``nack`` and never looks inside.
    """

    records: list[Record]
    token: Any = None

    def __len__(self) -> int:
        return len(self.records)


def key_from_bytes(raw: bytes) -> str:
    """A stable key for a payload that carries none of its own: a hash of its bytes."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def decode_payload(raw: bytes, received_at: str | float | None = None) -> dict[str, Any]:
    """A queued payload as a JSON object, or wrapped as ``{"raw", "wrapped", "received_at"}``
    (seed 000) with ``received_at`` as given (ISO text, or unix seconds; default now).

    Never raises: a payload the pipeline cannot read still reaches the sinks (and the dead
    letters, if a sink refuses it) instead of blocking the queue or vanishing.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if type(data) is dict:
        return data
    if not isinstance(received_at, str):
        seconds = time.time() if received_at is None else received_at
        received_at = datetime.fromtimestamp(seconds, UTC).isoformat()
    return {
        "raw": raw.decode("utf-8", errors="replace"),
        "wrapped": True,
        "received_at": received_at,
    }


def record_key(data: dict[str, Any], raw: bytes, key_field: str | None) -> str:
    """``str(data[key_field])`` when configured and present, else a hash of the raw payload."""
    if key_field is not None:
        value = data.get(key_field)
        if value is not None:
            return str(value)
    return key_from_bytes(raw)
