"""``verify --repair``: re-sync exactly the keys a comparison found, then check them again.

1. ``request_resync(keys)`` on the pg_table source: one ``R`` row per key in its change log
   (missing and different keys are read again and upserted; an extra key, gone from the
   source, becomes a delete);
2. unless an engine already runs the pipeline (it reads its change log by itself), the
   pipeline runs once here to apply them;
3. the same keys are compared again, row by row, until they match or ``timeout_s`` passes
   (with an engine the changes land a moment later): ``repaired`` and ``failed`` keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from syncworker.errors import SyncWorkerError
from syncworker.reconcile.report import RepairResult, VerifyReport
from syncworker.reconcile.sides import Key, Side

log = structlog.get_logger(__name__)

Resync = Callable[[list[str]], Awaitable[int]]
Apply = Callable[[], Awaitable[Any]]


def keys_to_repair(report: VerifyReport) -> list[Key]:
    """Every key listed in the report (missing, extra, different)."""
    return [*report.missing.keys, *report.extra.keys, *report.different.keys]


async def repair(
    report: VerifyReport,
    resync: Resync,
    source: Side,
    target: Side,
    *,
    apply: Apply | None,
    timeout_s: float = 30.0,
    poll_s: float = 0.5,
) -> RepairResult:
    """Re-sync the report's keys through ``resync``, apply them (``apply``: run the pipeline
    once; ``None``: a running engine does), then re-check them on ``source``/``target``
    (opened sides). The result is also set on ``report.repair``. A failing step is kept in
    ``RepairResult.error`` and every key counted as failed."""
    keys = keys_to_repair(report)
    result = RepairResult(requested=len(keys), applied_by="run-once" if apply else "engine")
    report.repair = result
    if not keys:
        return result
    try:
        queued = await resync([str(k) for k in keys])
        log.info("verify_repair_requested", pipeline=report.pipeline, keys=len(keys), queued=queued)
        if apply is not None:
            await apply()
        result.failed = await _recheck(keys, source, target, timeout_s, poll_s, wait=apply is None)
    except SyncWorkerError as exc:
        result.error = str(exc)
        result.failed = list(keys)
    failed = set(result.failed)
    result.repaired = [k for k in keys if k not in failed]
    log.info(
        "verify_repair_finished",
        pipeline=report.pipeline,
        repaired=len(result.repaired),
        failed=len(result.failed),
    )
    return result


async def still_different(keys: Sequence[Key], source: Side, target: Side) -> list[Key]:
    """The keys whose compared values differ between the sides (or present on one only)."""
    a, b = await asyncio.gather(source.rows(keys), target.rows(keys))
    return [k for k in keys if a.get(k) != b.get(k)]


async def _recheck(
    keys: list[Key], source: Side, target: Side, timeout_s: float, poll_s: float, *, wait: bool
) -> list[Key]:
    deadline = time.monotonic() + timeout_s
    pending = await still_different(keys, source, target)
    # A running engine applies the re-syncs a moment later: look again until they match.
    while wait and pending and time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
        pending = await still_different(pending, source, target)
    return pending
