"""A progress bar per pipeline whose source reports a snapshot (``source_status.snapshot``,
pg_table), drawn on the terminal while ``run --once`` works. Only on a terminal: piped or
logged output gets the usual log lines and nothing else."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
REFRESH_S = 0.25


class _HasStatus(Protocol):
    def status(self) -> dict[str, Any]: ...


def snapshot_figures(
    status: Mapping[str, Any], since: float = 0.0
) -> tuple[int, int | None, bool] | None:
    """(rows acked, rows expected or None, done) of a pipeline status whose source reports
    a snapshot under way or finished after ``since`` (unix time); None otherwise. The
    planner's estimate can be low (a table never analyzed): the rows read are a floor."""
    source = status.get("source_status")
    snapshot = source.get("snapshot") if isinstance(source, Mapping) else None
    if not isinstance(snapshot, Mapping):
        return None
    done = bool(snapshot.get("done"))
    if done and float(snapshot.get("finished_at") or 0.0) < since:
        return None  # finished before: nothing to show
    rows = int(snapshot.get("rows") or 0)
    floor = max(rows, int(snapshot.get("rows_read") or 0))
    estimate = snapshot.get("rows_estimate")
    total = max(int(estimate), floor) if estimate is not None else None
    return rows, (rows if done else total), done


async def with_snapshot_progress(pipelines: Mapping[str, _HasStatus], work: Awaitable[T]) -> T:
    """Await ``work``, drawing a bar for each pipeline with a snapshot under way (on stderr,
    when it is a terminal)."""
    if not sys.stderr.isatty():
        return await work
    task = asyncio.ensure_future(work)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bars: dict[str, TaskID] = {}
    since = time.time()
    with Progress(*columns, console=Console(stderr=True)) as progress:
        while not task.done():
            _draw(progress, bars, pipelines, since)
            await asyncio.wait({task}, timeout=REFRESH_S)
        _draw(progress, bars, pipelines, since)
    return task.result()


def _draw(
    progress: Progress, bars: dict[str, TaskID], pipelines: Mapping[str, _HasStatus], since: float
) -> None:
    for name, pipeline in pipelines.items():
        figures = snapshot_figures(pipeline.status(), since)
        if figures is None:
            continue
        rows, total, _ = figures
        if name not in bars:
            bars[name] = progress.add_task(f"{name}: snapshot", total=total)
        progress.update(bars[name], completed=rows, total=total)
