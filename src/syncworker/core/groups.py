"""Settling a ``GroupEnd``: a grouped source's full read of one group is complete (issue 11).

The source claims a ``GroupEnd`` (no records) once every batch of the group's read was acked.
It travels alone, like a ``BulkBatch``; the pipeline settles it here: ``finish_group`` on every
sink that ``ReplacesGroups`` (the redis sink drops the group's records the read did not
deliver and writes the group's metadata), under the write retry policy (attempts, backoff, a
``RetryableError``'s delay), then acks it. A sink still failing after its attempts rolls the
``GroupEnd`` back like any batch (the source serves it again; ``finish_group`` is idempotent)
and trips the breaker; a refused configuration stops the pipeline. What the first such sink
removed counts in the run's ``removed`` (seed 002's ``records_removed``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from syncworker.core.protocols import GroupEnd, ReplacesGroups, Source
from syncworker.errors import RetryableError, SinkUnavailable, stops_pipeline
from syncworker.observe.logging import redact_url

if TYPE_CHECKING:
    from syncworker.core.pipeline import Pipeline, RunStats

log = structlog.get_logger(__name__)


async def settle_group_end(
    pipeline: Pipeline, source: Source, end: GroupEnd, stats: RunStats
) -> None:
    """Finish ``end`` on every sink that replaces groups, then ack it; or roll it back (a
    sink down), hand it back (shutdown) or stop the pipeline (a refused configuration)."""
    started = time.monotonic()
    removed: int | None = None
    try:
        for sink in pipeline.sinks:
            if isinstance(sink, ReplacesGroups):
                count = await _finish_on(pipeline, sink, end)
                removed = count if removed is None else removed
    except asyncio.CancelledError:
        await asyncio.shield(pipeline._nack(source, [end]))
        raise
    except Exception as exc:
        if stops_pipeline(exc):
            await pipeline._nack(source, [end])
            stats.failed_batches += 1
            stats.error = redact_url(f"{type(exc).__name__}: {exc}")
            await pipeline._halt(exc, getattr(exc, "connector", None) or "sink")
            return
        await pipeline._rollback(source, [end], stats, exc)
        return
    await pipeline._ack(source, [end], {})
    pipeline._breaker.succeed()
    stats.removed += removed or 0
    stats.groups_finished += 1
    pipeline._last_commit_at = time.time()
    log.info(
        "group_finished",
        pipeline=pipeline.name,
        stream=end.stream,
        group=end.group,
        records=end.count,
        removed=removed or 0,
        duration_ms=round((time.monotonic() - started) * 1000.0, 1),
    )


async def _finish_on(pipeline: Pipeline, sink: ReplacesGroups, end: GroupEnd) -> int:
    """``finish_group`` with the write retry policy; raises ``SinkUnavailable`` once the
    attempts are spent (or the pipeline is stopping), a refused configuration at once."""
    policy = pipeline.settings.retry
    name = getattr(sink, "name", type(sink).__name__)
    for attempt in range(1, policy.attempts + 1):
        try:
            return await sink.finish_group(end)
        except Exception as exc:
            if stops_pipeline(exc):
                raise
            log.warning(
                "group_finish_failed",
                pipeline=pipeline.name,
                sink=name,
                group=end.group,
                attempt=attempt,
                error=redact_url(f"{type(exc).__name__}: {exc}"),
            )
            if attempt == policy.attempts:
                raise SinkUnavailable(name, exc) from exc
            delay_s = policy.delay_for(attempt)
            if isinstance(exc, RetryableError) and exc.delay_s is not None:
                delay_s = max(delay_s, exc.delay_s)
            if not await pipeline._sleep(delay_s):
                raise SinkUnavailable(name, RetryableError("pipeline is stopping")) from exc
    raise AssertionError("unreachable: the retry policy has at least one attempt")
