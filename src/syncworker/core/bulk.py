"""Settling a ``BulkBatch``: rows a source copies straight into the pipeline's only sink,
never as records (the PostgreSQL snapshot fast path, ``connectors/postgres/bulk.py``).

The pipeline offers its sink to a ``CopiesInBulk`` source when records would reach it
unchanged (no processor, one sink); the source may then claim ``BulkBatch`` pages, which the
pipeline settles here instead of delivering records: load, then ack, with the same counters
and ``batch_committed`` event as a batch of records. A page the sink refuses
(``PermanentError``) is handed back with that error, without tripping the breaker: the source
serves its rows again as records, and the record path names and dead-letters the bad ones. A
dependency that is down rolls the page back like any batch; a refused configuration stops the
pipeline.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from syncworker.core.protocols import BulkBatch, Source
from syncworker.errors import PermanentError, stops_pipeline
from syncworker.observe.logging import redact_url

if TYPE_CHECKING:
    from syncworker.core.pipeline import Pipeline, RunStats

log = structlog.get_logger(__name__)


async def settle_bulk(
    pipeline: Pipeline, source: Source, batch: BulkBatch, stats: RunStats
) -> None:
    """Copy ``batch`` into the sink and ack it; or hand it back (refused data, shutdown), roll
    it back (a dependency down), or stop the pipeline (a refused configuration)."""
    if batch.load is None:
        raise TypeError(f"pipeline {pipeline.name!r}: a BulkBatch without load()")
    started = time.monotonic()
    try:
        written = await batch.load()
    except asyncio.CancelledError:
        await asyncio.shield(pipeline._nack(source, [batch]))
        raise
    except PermanentError as exc:
        log.warning(
            "bulk_page_refused",
            pipeline=pipeline.name,
            rows=batch.rows,
            error=redact_url(f"{type(exc).__name__}: {exc}"),
            action="served again as records",
        )
        await pipeline._nack(source, [batch], exc)
        return
    except Exception as exc:
        if stops_pipeline(exc):
            await pipeline._nack(source, [batch])
            stats.failed_batches += 1
            stats.error = redact_url(f"{type(exc).__name__}: {exc}")
            await pipeline._halt(exc, pipeline.sinks[0].name)
            return
        await pipeline._rollback(source, [batch], stats, exc)
        return
    await pipeline._ack(source, [batch], {})
    pipeline._breaker.succeed()
    _count(stats, batch, written)
    pipeline._last_commit_at = time.time()
    if pipeline.events.has("batch_committed"):
        sink = pipeline.sinks[0].name
        streams = {batch.stream: written}
        payload = {
            "pipeline": pipeline.name,
            "records": written,
            "streams": streams,
            "written": {sink: streams},
            "refused": {sink: 0},
            "dead_lettered": {},
            "kept_by_source": {},
            "filtered": 0,
            "duration_s": time.monotonic() - started,
        }
        await pipeline.events.emit("batch_committed", payload)
    log.debug("batch_committed", pipeline=pipeline.name, records=written, bulk=True)


def _count(stats: RunStats, batch: BulkBatch, written: int) -> None:
    stats.batches += 1
    stats.processed += written
    stats.written += written
    stats.streams[batch.stream] += written
