"""``syncworker discrepancy-check``: compare a grouped pipeline's source with its sink group
by group (seed 002: Zoho Creator's registrations of each event against Redis), exactly, by
record content; with ``--repair`` re-sync what differs and check again.

Here (``--config``): the pipeline is built from the file; ``--repair`` asks its source to
re-send the ids found and runs the pipeline once to apply them. With ``--api URL``: the
running engine checks (and repairs through its own pipeline).

Exit codes, as ``verify``'s: 0 consistent (after ``--repair``: nothing left), 1 differences
remain (or a dependency stayed unreachable), 2 a configuration mistake.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from syncworker.cli import main
from syncworker.cli.common import EXIT_FAILURE, _json, _user_errors
from syncworker.config import load_config
from syncworker.errors import ConfigError, SyncWorkerError


@main.command("discrepancy-check")
@click.argument("pipeline")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The config file holding PIPELINE (checked here).",
)
@click.option(
    "--api",
    "api_url",
    metavar="URL",
    help="A running engine's API instead: it checks (and repairs) with its own pipeline.",
)
@click.option("--token", envvar="SYNCWORKER_API_TOKEN", show_envvar=True, help="API token.")
@click.option("--repair", is_flag=True, help="Re-sync the ids that differ, then check again.")
@click.option(
    "--ignore-recent",
    "ignore_recent_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Report records changed in the last SECONDS as in flight, not as differences [0].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def discrepancy_check(
    pipeline: str,
    config_file: Path | None,
    api_url: str | None,
    token: str | None,
    repair: bool,
    ignore_recent_s: float | None,
    as_json: bool,
) -> None:
    """Compare PIPELINE's source and sink group by group: the exact missing, extra and
    different ids per group, with totals."""
    with _user_errors():
        if api_url:
            body = asyncio.run(_remote(api_url, token, pipeline, repair, ignore_recent_s))
            lines = None
        elif config_file is not None:
            report = asyncio.run(_local(config_file, pipeline, repair, ignore_recent_s))
            body, lines = report.to_json(), report.lines()
        else:
            raise ConfigError("discrepancy-check needs --config FILE or --api URL")
    if as_json or lines is None:
        click.echo(_json(body))
    else:
        for line in lines:
            click.echo(line)
    sys.exit(_exit_code(body))


def _exit_code(body: dict[str, Any]) -> int:
    if body["status"] == "consistent":
        return 0
    repair = body.get("repair") or {}
    if repair.get("error") is None and repair.get("remaining") == 0:
        return 0
    return EXIT_FAILURE


async def _local(config_file: Path, name: str, repair: bool, ignore_recent_s: float | None) -> Any:
    from syncworker.reconcile.groups import check_pipeline, sides_for
    from syncworker.state import state_store_from_url

    config = load_config(config_file)
    if name not in config.pipelines:
        raise ConfigError(
            f"no pipeline named {name!r}; the config has {', '.join(config.pipelines)}",
            file=str(config_file),
        )
    state = state_store_from_url(config.app.state)
    await state.open()
    try:
        [pipeline] = config.build(state, [name])
        try:
            sides = sides_for(pipeline)
            if sides is None:
                raise ConfigError(
                    f"pipeline {name!r} cannot be checked group by group: it needs a grouped "
                    "http source and a redis sink with an index (use syncworker verify for "
                    "pg_table pipelines)",
                    file=str(config_file),
                )
            return await check_pipeline(
                pipeline, sides, repair=repair, ignore_recent_s=ignore_recent_s
            )
        finally:
            await pipeline.close()
    finally:
        await state.close()


async def _remote(
    url: str, token: str | None, name: str, repair: bool, ignore_recent_s: float | None
) -> dict[str, Any]:
    import httpx

    from syncworker.core import jsonvalue
    from syncworker.observe.logging import redact_url

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params: dict[str, Any] = {"repair": "true" if repair else "false"}
    if ignore_recent_s is not None:
        params["ignore_recent"] = ignore_recent_s
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=600) as client:
        try:
            answer = await client.get(f"/pipelines/{name}/discrepancies", params=params)
        except httpx.HTTPError as exc:
            raise SyncWorkerError(f"api {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
    if answer.status_code >= 400:
        try:
            error = answer.json().get("error", answer.text)
        except ValueError:
            error = answer.text[:200]
        raise SyncWorkerError(f"api discrepancies {name}: {answer.status_code}: {error}")
    body: dict[str, Any] = jsonvalue.loads(answer.content)
    return body
