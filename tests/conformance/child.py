"""The child process of the crash cases.

``python -m tests.conformance.child source TYPE CONFIG_JSON LIMIT`` opens the source, claims
until it holds ``LIMIT`` records, prints their keys as one JSON line and sleeps until it is
killed (SIGKILL: no ack, no nack, no close).

``slow`` is a processor for the sink crash case: it keeps each batch claimed (and the
child busy) long enough for the kill to land while a batch is in flight.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from syncworker.core import registry
from syncworker.core.record import Record


def slow(record: Record) -> Record:
    time.sleep(0.003)
    return record


async def hold_claim(type_name: str, config: dict[str, object], limit: int) -> None:
    cls = registry.lookup("source", type_name)
    source = cls(cls.config_model.model_validate(config), name="crash-child")
    await source.open()
    keys: list[str] = []
    deadline = time.monotonic() + 20
    while len(keys) < limit and time.monotonic() < deadline:
        batch = await source.claim(limit - len(keys))
        if batch is None or not batch.records:
            await asyncio.sleep(0.02)
            continue
        keys += [record.key for record in batch.records]
    sys.stdout.write(orjson.dumps(keys).decode() + "\n")
    sys.stdout.flush()
    await asyncio.sleep(120)


if __name__ == "__main__":
    _, kind, type_name, config_json, limit = sys.argv
    assert kind == "source"
    asyncio.run(hold_claim(type_name, orjson.loads(config_json), int(limit)))
