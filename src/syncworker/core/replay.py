"""Requeued dead letters, read back as a source so they go through the same loop.

``syncworker dlq requeue`` marks dead letters ``requeued``; the pipeline they came from claims
them at the start of each run (and between batches in stream mode), writes them to every sink
again, and deletes them once written. This works for every source, including those that
cannot take a message back (a table, a REST API).
"""

from __future__ import annotations

import asyncio

from syncworker.core.record import Batch, Record
from syncworker.state.base import StateStore


class DeadLetterReplay:
    """A ``Source`` over one pipeline's requeued dead letters."""

    def __init__(self, state: StateStore, pipeline: str) -> None:
        self.name = f"{pipeline}:dead-letters"
        self._state = state
        self._pipeline = pipeline

    async def open(self) -> None:
        recover = getattr(self._state, "recover_replaying", None)
        if recover is not None:
            await recover(self._pipeline)

    async def claim(self, limit: int) -> Batch | None:
        letters = await self._state.claim_requeued(self._pipeline, limit)
        if not letters:
            return None
        records = [
            Record(
                key=letter.key,
                data=letter.data,
                stream=letter.stream,
                op="delete" if letter.op == "delete" else "upsert",
                meta={
                    **letter.meta,
                    "dead_letter_id": letter.id,
                    "dead_letter_attempts": letter.attempts,
                },
            )
            for letter in letters
        ]
        return Batch(records, token=[letter.id for letter in letters])

    async def wait(self, timeout_s: float) -> None:
        await asyncio.sleep(0)

    async def ack(self, batch: Batch) -> None:
        await self._state.delete_dead_letters(list(batch.token))

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        await self._state.release_requeued(list(batch.token))

    async def close(self) -> None:
        return None
