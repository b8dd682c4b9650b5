"""``syncworker verify``: compare a pipeline's source (after filter and mapping) with its
target exactly, and with ``--repair`` re-sync what differs.

Exit codes (the README's table): 0 consistent (after ``--repair``: every key repaired),
1 differences remain (or a database stayed unreachable), 2 a configuration mistake.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from syncworker.cli import main
from syncworker.cli.common import EXIT_FAILURE, _json, _user_errors
from syncworker.config import load_config
from syncworker.reconcile.config import DEFAULT_SEGMENTS
from syncworker.reconcile.report import VerifyReport

if TYPE_CHECKING:
    from syncworker.reconcile.engine import Progress as VerifyProgress
    from syncworker.reconcile.verify import VerifyOptions

_PHASES = {
    "bounds": "key range",
    "hash": "hashing segments",
    "fetch": "fetching rows of differing segments",
    "recheck": "re-checking recent keys",
    "done": "done",
}


@main.command()
@click.argument("pipeline")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The config file holding PIPELINE.",
)
@click.option("--repair", is_flag=True, help="Re-sync the keys that differ, then re-check them.")
@click.option(
    "--ignore-recent",
    "ignore_recent_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Leave out rows changed in the last SECONDS (still in flight) "
    "[the pipeline's verify.ignore_recent, else 0].",
)
@click.option(
    "--segments",
    type=click.IntRange(1, 100_000),
    default=None,
    help=f"Key-range segments of the first pass [verify.segments, else {DEFAULT_SEGMENTS}].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--sink", default=None, help="The postgres sink to compare (by name) [the first].")
@click.option(
    "--engine-running",
    is_flag=True,
    help="With --repair: an engine runs this pipeline and applies the re-syncs; wait for "
    "them instead of running the pipeline here.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [on a terminal].")
def verify(
    pipeline: str,
    config_file: Path,
    repair: bool,
    ignore_recent_s: float | None,
    segments: int | None,
    as_json: bool,
    sink: str | None,
    engine_running: bool,
    progress: bool | None,
) -> None:
    """Compare PIPELINE's source with its target: counts, and the exact missing, extra and
    different keys."""
    with _user_errors():
        config = load_config(config_file)
        options = _options(config, pipeline, ignore_recent_s, segments)
        options = replace(options, repair=repair, sink=sink, engine_running=engine_running)
        console = Console(stderr=True)
        show = progress if progress is not None else console.is_terminal
        report = asyncio.run(_run(config, pipeline, options, console if show else None))
    if as_json:
        click.echo(_json(report.to_json()))
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(_exit_code(report))


def _options(
    config: object, pipeline: str, ignore_recent_s: float | None, segments: int | None
) -> VerifyOptions:
    """Command-line values first, then the pipeline's ``verify:`` section, then defaults."""
    from syncworker.reconcile.verify import VerifyOptions

    spec = getattr(config, "pipelines", {}).get(pipeline)
    scheduled = getattr(getattr(spec, "config", None), "verify", None)
    return VerifyOptions(
        segments=segments or (scheduled.segments if scheduled else DEFAULT_SEGMENTS),
        ignore_recent_s=(
            ignore_recent_s
            if ignore_recent_s is not None
            else (scheduled.ignore_recent if scheduled else 0.0)
        ),
    )


def _exit_code(report: VerifyReport) -> int:
    if report.status == "consistent":
        return 0
    if report.repair is not None and not report.repair.failed and not report.repair.error:
        return 0
    return EXIT_FAILURE


async def _run(
    config: object, pipeline: str, options: VerifyOptions, console: Console | None
) -> VerifyReport:
    # Imported when run: the other commands need no PostgreSQL driver.
    from syncworker.reconcile.verify import verify_pipeline

    if console is None:
        return await verify_pipeline(config, pipeline, options)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"verify {pipeline}", total=None)

        def show(p: VerifyProgress) -> None:
            bar.update(
                task,
                description=f"verify {pipeline}: {_PHASES.get(p.phase, p.phase)}",
                completed=p.segments_done,
                total=p.segments_total or None,
            )

        return await verify_pipeline(config, pipeline, options, show)
