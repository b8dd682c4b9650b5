"""What every command family shares: where a command acts, user errors, printing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from syncworker.config import every_error
from syncworker.control import Control, Needs, open_control
from syncworker.core import jsonvalue
from syncworker.errors import ConfigError, SyncWorkerError
from syncworker.observe.logging import redact_value
from syncworker.state import DEFAULT_STATE_URL

T = TypeVar("T")
EXIT_CONFIG = 2
EXIT_FAILURE = 1


@contextmanager
def _user_errors() -> Iterator[None]:
    """A mistake the user can fix is one line on stderr and a non-zero exit, not a trace."""
    try:
        yield
    except ConfigError as exc:
        for error in every_error(exc):
            click.echo(f"config error: {redact_value(str(error))}", err=True)
        sys.exit(EXIT_CONFIG)
    except SyncWorkerError as exc:
        click.echo(f"error: {redact_value(str(exc))}", err=True)
        sys.exit(EXIT_FAILURE)


def _state_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where the command acts: a running engine (--api), or the state store directly."""
    fn = click.option(
        "--token", envvar="SYNCWORKER_API_TOKEN", show_envvar=True, help="Bearer token of the API."
    )(fn)
    fn = click.option(
        "--api",
        "api_url",
        metavar="URL",
        help="A running engine's API, e.g. http://127.0.0.1:8080.",
    )(fn)
    fn = click.option("--state", "state_url", help=f"State store URL [{DEFAULT_STATE_URL}]")(fn)
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Take the state store (and pipelines) from this config file.",
    )(fn)
    return fn


def _control(
    options: dict[str, Any], work: Callable[[Control], Awaitable[T]], needs: Needs = "state"
) -> T:
    command = click.get_current_context().info_name or "this command"

    async def go() -> T:
        async with open_control(
            options["api_url"],
            options["token"],
            options["config_file"],
            options["state_url"],
            needs,
            command,
        ) as control:
            return await work(control)

    with _user_errors():
        return asyncio.run(go())


def _json(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``value`` indented for people, numbers exactly as kept (``core.jsonvalue``)."""
    return jsonvalue.dumps(value, indent=True, default=default).decode()


def _console() -> Console:
    """Rich's console; piped output gets a wide page instead of rich's 80-column guess, so
    names and errors are not folded into fragments."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f} s"
