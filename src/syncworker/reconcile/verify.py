"""Verify one pipeline of a config: its pg_table source (after filter and mapping) against
its postgres sink's table, and with ``repair`` re-sync what differs. Used by
``syncworker verify`` and by the scheduled verify inside a running engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncworker.errors import ConfigError, ConnectorError
from syncworker.reconcile.config import DEFAULT_SEGMENTS
from syncworker.reconcile.engine import CompareSettings, ProgressCallback, both, compare
from syncworker.reconcile.mapping import TableMapping, from_spec
from syncworker.reconcile.postgres import table_sides
from syncworker.reconcile.repair import Apply, repair
from syncworker.reconcile.report import VerifyReport


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    segments: int = DEFAULT_SEGMENTS
    ignore_recent_s: float = 0.0
    repair: bool = False
    # An engine runs the pipeline: it applies re-syncs itself (no run here).
    engine_running: bool = False
    repair_timeout_s: float = 30.0
    sink: str | None = None


def mapping_for(config: Any, name: str, sink: str | None = None) -> TableMapping:
    """The ``TableMapping`` of pipeline ``name``; ``ConfigError`` when there is no such
    pipeline or verify cannot follow it."""
    spec = config.pipelines.get(name)
    if spec is None:
        raise ConfigError(
            f"no pipeline named {name!r}; the config has {', '.join(config.pipelines)}",
            file=str(config.path) if config.path else None,
        )
    try:
        return from_spec(spec, sink)
    except ConfigError as exc:
        if exc.file is None and config.path is not None:
            raise ConfigError(exc.reason, file=str(config.path), path=exc.path) from None
        raise


async def verify_pipeline(
    config: Any,
    name: str,
    options: VerifyOptions,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Compare pipeline ``name``'s source and target; with ``options.repair``, re-sync the
    keys found and re-check them (``report.repair``)."""
    mapping = mapping_for(config, name, options.sink)
    source, target = table_sides(mapping)
    settings = CompareSettings(segments=options.segments, ignore_recent_s=options.ignore_recent_s)
    report = await compare(source, target, settings, progress, pipeline=name)
    if options.repair and report.differences:
        await _repair(config, name, mapping, report, options)
    return report


async def _repair(
    config: Any, name: str, mapping: TableMapping, report: VerifyReport, options: VerifyOptions
) -> None:
    import psycopg

    from syncworker.connectors.postgres.client import describe
    from syncworker.connectors.postgres.table_capture import request_resync

    async def resync(keys: list[str]) -> int:
        assert mapping.change_table is not None
        try:
            return await request_resync(
                mapping.source_url, mapping.change_table, keys, channel=mapping.channel
            )
        except psycopg.Error as exc:  # e.g. the capture is not installed: no change log
            raise ConnectorError(
                f"verify --repair: cannot queue re-syncs in {mapping.change_table} "
                f"(is the capture installed? syncworker pg install): {describe(exc)}"
            ) from None

    apply: Apply | None = None if options.engine_running else _run_once(config, name)
    source, target = table_sides(mapping)
    try:
        await both(source.open(), target.open())
        await repair(
            report, resync, source, target, apply=apply, timeout_s=options.repair_timeout_s
        )
    finally:
        await source.close()
        await target.close()


def _run_once(config: Any, name: str) -> Apply:
    async def run() -> None:
        from syncworker.state import state_store_from_url

        state = state_store_from_url(config.app.state)
        await state.open()
        try:
            [pipeline] = config.build(state, [name])
            try:
                await pipeline.run_once("incremental")
            finally:
                await pipeline.close()
        finally:
            await state.close()

    return run
