"""The ``syncworker`` command."""

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
from rich.table import Column, Table

from syncworker import __version__
from syncworker.config import Config, every_error, load_config, load_sources, parse_listen
from syncworker.control import Control, Needs, open_control
from syncworker.core import jsonvalue
from syncworker.core.engine import Engine
from syncworker.errors import ConfigError, SyncWorkerError
from syncworker.observe.logging import configure_logging, redact_value
from syncworker.state import DEFAULT_STATE_URL, state_store_from_url

T = TypeVar("T")
EXIT_CONFIG = 2
EXIT_FAILURE = 1
API_EXTRA_HINT = "install the api extra: pip install -e '.[api]' in the checkout (or make install)"


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
def main(log_format: str, log_level: str) -> None:
    """Keeps data moving between queues, databases, APIs, search indexes and files."""
    configure_logging(log_format, log_level)  # type: ignore[arg-type]


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


# -- run / validate -----------------------------------------------------------------------


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--once", is_flag=True, help="Run one sync of every pipeline, then exit.")
@click.option("--pipeline", "only", multiple=True, help="Run only this pipeline (repeatable).")
@click.option(
    "--api",
    "api_listen",
    metavar="HOST:PORT",
    help="Serve the control API and dashboard here (overrides api.listen).",
)
def run(file: Path, once: bool, only: tuple[str, ...], api_listen: str | None) -> None:
    """Run the pipelines of FILE until SIGTERM/SIGINT."""
    with _user_errors():
        config = load_config(file)
        sys.exit(
            asyncio.run(_run(config, once=once, only=list(only) or None, api_listen=api_listen))
        )


async def _run(
    config: Config, *, once: bool, only: list[str] | None, api_listen: str | None = None
) -> int:
    state = state_store_from_url(config.app.state)
    engine = Engine(
        config.build(state, only), state, shutdown_timeout_s=config.app.shutdown_timeout
    )
    if not once:
        _add_api(engine, config, api_listen)
    try:
        if once:
            runs = await engine.run_once(install_signal_handlers=True)
            return 0 if all(r.status == "success" for r in runs) else EXIT_FAILURE
        return await engine.run()
    except ConfigError as exc:
        if exc.file is not None:
            raise
        # A connector refused its settings when it connected: name the file it came from.
        raise ConfigError(exc.reason, file=str(config.path), path=exc.path) from exc


def _add_api(engine: Engine, config: Config, api_listen: str | None) -> None:
    api = config.app.api
    if api is None and api_listen is None:
        return
    try:
        host, port = parse_listen(api_listen or (api.listen if api else ""))
    except ValueError as exc:
        raise ConfigError(str(exc), path="--api") from None
    try:
        from syncworker.api.server import ApiServer
    except ImportError as exc:
        raise ConfigError(
            f"the API needs a package that is not installed ({exc.name}); {API_EXTRA_HINT}"
        ) from None
    engine.services.append(
        ApiServer(engine, host=host, port=port, token=api.token if api else None)
    )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check FILE without starting anything: every setting, and every connector built as
    `run` builds it (a transform's module imported, a lock's URL parsed), without connecting."""
    with _user_errors():
        config = load_config(file)
        config.build(state_store_from_url(config.app.state), list(config.pipelines))
        if config.app.api is not None:
            _check_api_installed(config)
    names = ", ".join(config.pipelines)
    click.echo(f"{file}: ok ({len(config.pipelines)} pipeline(s): {names})")


def _check_api_installed(config: Config) -> None:
    """What `run` refuses when the file has an `api` section and the api extra is missing."""
    try:
        import syncworker.api.server  # noqa: F401 - importing it is the check
    except ImportError as exc:
        raise ConfigError(
            f"the API needs a package that is not installed ({exc.name}); {API_EXTRA_HINT}",
            file=str(config.path),
            path="api",
            line=config.lines.get(("api",)),
        ) from None


# -- demo ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("syncworker-demo"),
    show_default=True,
    help="Workspace for the queue, the state store and the output files.",
)
@click.option("--messages", default=10_000, show_default=True, help="Sample messages to queue.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo(workdir: Path, messages: int, progress: bool) -> None:
    """Run the embedded demo: SQLite queue -> JSONL files + SQLite table, no services."""
    from syncworker.demo import run_demo

    with _user_errors():
        sys.exit(asyncio.run(run_demo(workdir, messages, progress=progress)))


# -- enqueue ------------------------------------------------------------------------------


@main.command()
@click.argument("messages", nargs=-1)
@click.option(
    "--queue",
    "queue_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite queue file.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the queue file from this config's sqlite_queue pipeline.",
)
@click.option("--pipeline", help="Which pipeline of --config (when it has several).")
@click.option("--stream", default="default", show_default=True)
@click.option(
    "--table", default=None, help="Queue table (default: the source's or the standard one)."
)
def enqueue(
    messages: tuple[str, ...],
    queue_path: Path | None,
    config_file: Path | None,
    pipeline: str | None,
    stream: str,
    table: str | None,
) -> None:
    """Queue MESSAGES (or one per line from stdin) on a SQLite queue."""
    from syncworker.connectors.sqlite.queue import DEFAULT_TABLE, SqliteQueue

    with _user_errors():
        path, config_table = _queue_target(queue_path, config_file, pipeline)
        payloads = list(messages) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
        with SqliteQueue(path, table=table or config_table or DEFAULT_TABLE) as queue:
            count = queue.enqueue(payloads, stream=stream)
    click.echo(f"queued {count} message(s) on stream {stream!r} in {path}")


def _queue_target(
    queue_path: Path | None, config_file: Path | None, pipeline: str | None
) -> tuple[Path, str | None]:
    if queue_path is not None:
        return queue_path, None
    if config_file is None:
        raise ConfigError("give --queue PATH or --config FILE")
    sources = load_sources(config_file, "sqlite_queue")
    candidates = {n: s for n, s in sources.items() if pipeline is None or n == pipeline}
    if len(candidates) != 1:
        raise ConfigError(
            "expected exactly one pipeline with a sqlite_queue source"
            + ("" if pipeline else "; choose one with --pipeline"),
            file=str(config_file),
        )
    source: Any = next(iter(candidates.values()))
    return Path(source.path), source.table


# -- status -------------------------------------------------------------------------------


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


@main.command()
@_state_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool, **target: Any) -> None:
    """Pipelines: state, health, counters (--api), or last runs and dead letters (state store)."""
    report = _control(target, lambda c: c.status())
    if as_json:
        click.echo(_json(redact_value(report)))
        return
    if report["source"] == "engine":
        _print_engine_status(report)
    else:
        _print_stored_status(report)


def _print_engine_status(report: dict[str, Any]) -> None:
    """The state store's columns, as ``status --config`` prints them, then the engine's."""
    extra = ("state", "health", "backlog", "failed in source")
    table = _status_table("syncworker engine status", extra)
    for name, p in report["pipelines"].items():
        backlog = "-" if p["backlog"] is None else str(p["backlog"])
        # Records a ``store: source`` pipeline handed back, kept failed by the source: not
        # dead letters, so they get their own column ("-": the source keeps none).
        failed = p.get("source_failed")
        kept = "-" if failed is None else str(failed)
        table.add_row(*_status_row(name, p), p["state"], p["health"]["status"], backlog, kept)
    console = _console()
    console.print(table)
    for name, p in report["pipelines"].items():
        if p["health"]["status"] != "HEALTHY":
            for line in p["health"]["recommendations"]:
                console.print(f"{name}: {line}")


def _print_stored_status(report: dict[str, Any]) -> None:
    table = _status_table("syncworker status (state store)")
    for name, item in report["pipelines"].items():
        table.add_row(*_status_row(name, item))
    _console().print(table)


def _status_table(title: str, extra: tuple[str, ...] = ()) -> Table:
    # Figures and times never fold (a folded "UTC" reads as another row); the error text may.
    columns = ("pipeline", "last run", "result", "processed", "duration", "dead letters")
    return Table(
        *(Column(name, no_wrap=True) for name in columns),
        Column("last error", overflow="fold"),
        *(Column(name, no_wrap=True) for name in extra),
        title=title,
    )


def _status_row(name: str, item: dict[str, Any]) -> list[str]:
    last = item["last_run"] or {}
    return [
        name,
        _when(last.get("finished_at")),
        last.get("status", "-"),
        str(last.get("processed", "-")),
        _ms(last.get("duration_ms")),
        str(item["dead_letters"].get("dead", 0)),
        ((item["last_error"] or {}).get("message") or "-")[:60],
    ]


@main.command()
@click.argument("pipeline")
@click.option(
    "--mode", type=click.Choice(["incremental", "full"]), default="incremental", show_default=True
)
@click.option("--no-wait", is_flag=True, help="With --api: return once the run is accepted.")
@_state_options
def sync(pipeline: str, mode: str, no_wait: bool, **target: Any) -> None:
    """Run one sync of PIPELINE now: in the running engine (--api) or here (--config)."""
    result = _control(target, lambda c: c.sync(pipeline, mode, not no_wait), needs="config")
    click.echo(_json(redact_value(result)))
    if result.get("status") not in (None, "success"):
        sys.exit(EXIT_FAILURE)


@main.command()
@click.argument("pipeline")
@_state_options
def start(pipeline: str, **target: Any) -> None:
    """Start PIPELINE in the running engine (--api)."""
    result = _control(target, lambda c: c.start(pipeline), needs="engine")
    click.echo(f"{result['pipeline']}: {result['state']}")


@main.command()
@click.argument("pipeline")
@_state_options
def stop(pipeline: str, **target: Any) -> None:
    """Stop PIPELINE in the running engine (--api); in-flight batches finish first."""
    result = _control(target, lambda c: c.stop(pipeline), needs="engine")
    click.echo(f"{result['pipeline']}: {result['state']}")


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


# -- dead letters -------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Dead letters: records no sink would take, kept with their error."""


@dlq.command("list")
@_state_options
@click.option("--pipeline")
@click.option("--status", "status_", type=click.Choice(["dead", "requeued", "replaying"]))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(
    pipeline: str | None, status_: str | None, limit: int, as_json: bool, **target: Any
) -> None:
    """List dead letters, oldest first."""
    letters = _control(target, lambda c: c.dead_letters(pipeline, status_, limit))
    if as_json:
        click.echo(_json(redact_value(letters)))
        return
    table = Table(
        "id",
        "pipeline",
        "stream",
        "key",
        "status",
        "where",
        "error",
        title=f"{len(letters)} dead letter(s)",
    )
    for d in letters:
        table.add_row(
            str(d["id"]),
            d["pipeline"],
            d["stream"],
            d["record_key"],
            d["status"],
            d["where"] or "-",
            redact_value(d["error"])[:70],
        )
    _console().print(table)


@dlq.command("show")
@click.argument("letter_id", type=int)
@_state_options
def dlq_show(letter_id: int, **target: Any) -> None:
    """Show one dead letter whole: record, error and stack."""
    letter = _control(target, lambda c: c.dead_letter(letter_id))
    if letter is None:
        click.echo(f"error: no dead letter with id {letter_id}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(_json(redact_value(letter)))


@dlq.command("requeue")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every dead letter (of --pipeline).")
@click.option("--pipeline")
@_state_options
def dlq_requeue(
    ids: tuple[int, ...], everything: bool, pipeline: str | None, **target: Any
) -> None:
    """Send dead letters back to their pipeline; it writes them again on its next run."""
    _require_selection(ids, everything)
    count = _control(target, lambda c: c.requeue(list(ids) if ids else None, pipeline))
    click.echo(f"requeued {count} dead letter(s)")


@dlq.command("purge")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every dead letter (of --pipeline).")
@click.option("--pipeline")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --all.")
@_state_options
def dlq_purge(
    ids: tuple[int, ...], everything: bool, pipeline: str | None, yes: bool, **target: Any
) -> None:
    """Delete dead letters for good."""
    _require_selection(ids, everything)
    if everything and not yes:
        scope = f"of pipeline {pipeline!r}" if pipeline else "of every pipeline"
        click.confirm(f"Delete every dead letter {scope}?", abort=True)
    count = _control(target, lambda c: c.purge(list(ids) if ids else None, pipeline))
    click.echo(f"purged {count} dead letter(s)")


def _require_selection(ids: tuple[int, ...], everything: bool) -> None:
    if bool(ids) == everything:
        click.echo("error: give dead letter ids, or --all", err=True)
        sys.exit(EXIT_CONFIG)


# -- PostgreSQL outbox ---------------------------------------------------------------------


def _outbox_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Which outbox: from a config's pg_outbox pipeline, or given directly."""
    fn = click.option("--pipeline", help="The pg_outbox pipeline of --config.")(fn)
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Take url, queue and tables from this config's pg_outbox source.",
    )(fn)
    fn = click.option("--queue", help="Queue table [syncworker_outbox].")(fn)
    fn = click.option("--url", envvar="DATABASE_URL", show_envvar=True, help="postgresql:// URL.")(
        fn
    )
    return fn


def _outbox_target(
    url: str | None, queue: str | None, config_file: Path | None, pipeline: str | None
) -> tuple[str, str, list[str], dict[str, str]]:
    """(url, queue, tables, key_columns) from the options, else the config's source."""
    from syncworker.connectors.postgres.outbox import DEFAULT_QUEUE_TABLE

    if config_file is not None:
        # Only the pg_outbox source is read: these commands touch PostgreSQL alone, so the
        # sinks' settings (ALGOLIA_APP_ID...) need not be set.
        sources = load_sources(config_file, "pg_outbox")
        found = [s for n, s in sources.items() if pipeline in (None, n)]
        if len(found) != 1:
            raise ConfigError(
                "expected exactly one pipeline with a pg_outbox source"
                + ("" if pipeline else "; choose one with --pipeline"),
                file=str(config_file),
            )
        source: Any = found[0]
        return (
            url or source.url,
            queue or source.queue_table,
            list(source.tables),
            dict(source.key_columns),
        )
    if not url:
        raise ConfigError("give --url (or DATABASE_URL) or --config FILE", path="--url")
    return url, queue or DEFAULT_QUEUE_TABLE, [], {}


@contextmanager
def _postgres_errors(url: str, queue: str) -> Iterator[None]:
    """What PostgreSQL refuses as one line: a missing outbox says how to install it."""
    import psycopg

    from syncworker.connectors.postgres.client import describe, describe_url

    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as exc:
        raise SyncWorkerError(
            f"outbox {queue!r} is not installed in {describe_url(url)} ({describe(exc)}); "
            "install it with: syncworker pg install"
        ) from None
    except psycopg.Error as exc:
        raise SyncWorkerError(f"PostgreSQL {describe_url(url)}: {describe(exc)}") from None


@main.group()
def pg() -> None:
    """PostgreSQL: install the outbox (queue table, triggers, stats view, log, clean-up)."""


@pg.command("install")
@_outbox_options
@click.option("--table", "tables", multiple=True, help="Source table to watch (repeatable).")
@click.option("--print", "print_only", is_flag=True, help="Print the SQL instead of applying.")
def pg_install(
    url: str | None,
    queue: str | None,
    config_file: Path | None,
    pipeline: str | None,
    tables: tuple[str, ...],
    print_only: bool,
) -> None:
    """Create (or update) the outbox; running it again is harmless."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, watched, keys = _outbox_target(url, queue, config_file, pipeline)
        watched = list(tables) or watched
        if print_only:
            click.echo(outbox.install_script(queue, watched, key_columns=keys))
            return
        with _postgres_errors(url, queue):
            asyncio.run(outbox.install(url, queue, watched, key_columns=keys))
    click.echo(f"outbox {queue!r} installed; watching {', '.join(watched) or 'no table yet'}")


@main.group("outbox")
def outbox_group() -> None:
    """The PostgreSQL outbox: stats, failed rows, clean-up."""


@outbox_group.command("stats")
@_outbox_options
def outbox_stats(
    url: str | None, queue: str | None, config_file: Path | None, pipeline: str | None
) -> None:
    """Rows per status, oldest pending age, completed in the last hour."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, _, _ = _outbox_target(url, queue, config_file, pipeline)
        with _postgres_errors(url, queue):
            figures = asyncio.run(outbox.stats(url, queue))
    click.echo(_json(figures, default=str))


@outbox_group.command("retry-failed")
@_outbox_options
@click.option("--id", "ids", type=int, multiple=True, help="Only this queue row (repeatable).")
@click.option("--table", help="Only rows of this source table.")
def outbox_retry_failed(
    url: str | None,
    queue: str | None,
    config_file: Path | None,
    pipeline: str | None,
    ids: tuple[int, ...],
    table: str | None,
) -> None:
    """Put rows that ran out of retries back to pending (attempts from zero)."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, _, _ = _outbox_target(url, queue, config_file, pipeline)
        with _postgres_errors(url, queue):
            count = asyncio.run(outbox.retry_failed(url, queue, ids=list(ids) or None, table=table))
    click.echo(f"{count} failed row(s) back to pending")


@outbox_group.command("cleanup")
@_outbox_options
@click.option("--days", default=7, show_default=True, help="Keep this many days.")
def outbox_cleanup(
    url: str | None, queue: str | None, config_file: Path | None, pipeline: str | None, days: int
) -> None:
    """Delete completed rows and log rows older than --days."""
    from syncworker.connectors.postgres import outbox

    with _user_errors():
        url, queue, _, _ = _outbox_target(url, queue, config_file, pipeline)
        with _postgres_errors(url, queue):
            count = asyncio.run(outbox.cleanup(url, queue, days))
    click.echo(f"deleted {count} row(s) older than {days} day(s)")


# -- Algolia ------------------------------------------------------------------------------


@main.group()
def algolia() -> None:
    """Algolia: rebuild an index from its PostgreSQL table."""


@algolia.command("reindex")
@click.argument("table")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A config with a pg_outbox -> algolia pipeline for TABLE.",
)
@click.option("--pipeline", help="Which pipeline of --config (when several fit).")
def algolia_reindex(table: str, config_file: Path, pipeline: str | None) -> None:
    """Rebuild TABLE's index into a temporary index, then move it into place at once."""
    with _user_errors():
        result = asyncio.run(_reindex(table, config_file, pipeline))
    click.echo(
        f"{table}: {result.written} object(s) written to {result.temporary_index}, "
        f"moved onto {result.index}; {len(result.failed)} refused"
    )


async def _reindex(table: str, config_file: Path, pipeline: str | None) -> Any:
    from psycopg import AsyncConnection, sql

    from syncworker.core import registry
    from syncworker.core.record import Record

    config = load_config(config_file)
    fits = [
        s
        for n, s in config.pipelines.items()
        if pipeline in (None, n)
        and s.source.type == "pg_outbox"
        and table in getattr(s.source, "tables", ())
        and any(k.type == "algolia" for k in s.sinks)
    ]
    if len(fits) != 1:
        raise ConfigError(
            f"expected exactly one pipeline reading {table!r} from pg_outbox "
            "into an algolia sink" + ("" if pipeline else "; use --pipeline"),
            file=str(config_file),
        )
    spec = fits[0]
    source: Any = spec.source
    sink_config = next(k for k in spec.sinks if k.type == "algolia")
    sink = registry.lookup("sink", "algolia")(sink_config, name="algolia")
    key_column = source.key_columns.get(table, "id")
    query = sql.SQL("SELECT {key}::text, to_jsonb(t) FROM {table} AS t").format(
        key=sql.Identifier("t", key_column), table=sql.Identifier(*table.split("."))
    )

    async def rows() -> Any:
        async with (
            await AsyncConnection.connect(source.url) as conn,
            conn.cursor(name="syncworker_reindex") as cursor,
        ):
            await cursor.execute(query)
            async for key, data in cursor:
                yield Record(key=key, data=data, stream=table)

    await sink.open()
    try:
        return await sink.reindex(table, rows())
    finally:
        await sink.close()


if __name__ == "__main__":  # pragma: no cover
    main()
