"""The ``syncworker`` command: the ``main`` group and its global options.

Each command family is a module of this package that adds its commands to ``main`` when it is
imported; the import list at the end of this file is where every family registers.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from syncworker import __version__
from syncworker.observe.logging import configure_logging, env_levels


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncworker")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Log lines for people (console) or machines (json).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    envvar=["SYNCWORKER_LOG_LEVEL", "LOG_LEVEL"],
    show_envvar=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SYNCWORKER_LOG_DIR",
    show_envvar=True,
    help="Also write combined.log (every line) and error.log (errors) there, as JSON lines.",
)
def main(log_format: str, log_level: str, log_dir: Path | None) -> None:
    """Keeps data moving between queues, databases, APIs, search indexes and files.

    REDIS_LOG_LEVEL (seed 002) sets the level of the Redis connectors' own events."""
    try:
        configure_logging(
            log_format,  # type: ignore[arg-type]
            log_level,
            levels=env_levels(os.environ),
            log_dir=log_dir,
        )
    except ValueError as exc:  # an invalid REDIS_LOG_LEVEL
        raise click.BadParameter(str(exc), param_hint="REDIS_LOG_LEVEL") from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write log files in {str(log_dir)!r}: {exc.strerror or exc}",
            param_hint="--log-dir / SYNCWORKER_LOG_DIR",
        ) from None


# -- command families: importing a module registers its commands on `main`. A new family is
# one more line in this list (`    verify,`), nothing else.
from syncworker.cli import (  # noqa: E402, F401 - imported for their commands
    algolia,
    dead_letters,
    discrepancy,
    jobs,
    outbox,
    pg,
    pipelines,
    queue,
    verify,
)
