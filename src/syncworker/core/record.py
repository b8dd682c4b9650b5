"""Record and Batch: what moves through a pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

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
