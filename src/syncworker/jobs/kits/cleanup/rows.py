"""The row clean-ups: expired stories, inactive sessions, old messages, temporary files,
stale websocket sessions. Each is one ``sweep`` with its own batch action."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from syncworker.connectors.postgres.client import Connection
from syncworker.jobs.kits.cleanup import queries
from syncworker.jobs.kits.cleanup.archive import JsonlArchive
from syncworker.jobs.kits.cleanup.sweep import Rows, Run, sweep


def media_keys(run: Run, rows: Rows, first: int = 1, last: int = 2) -> list[str]:
    """The storage keys the URLs in columns ``first..last`` name, each once. A URL that is
    not this store's (or any URL when no store is configured) is counted as skipped."""
    keys: set[str] = set()
    for row in rows:
        for url in row[first : last + 1]:
            if url is None:
                continue
            key = run.storage.key_of(url) if run.storage is not None else None
            if key is None:
                run.add("objects_skipped")
            else:
                keys.add(key)
    return sorted(keys)


async def delete_objects(run: Run, keys: list[str]) -> None:
    """Deletes ``keys`` (a dry run counts them: it cannot tell an object already gone)."""
    if not keys or run.storage is None:
        return
    removed = len(keys) if run.dry_run else await run.storage.delete(keys)
    run.add("objects_deleted", removed)


def ids(rows: Rows) -> list[object]:
    return [row[0] for row in rows]


async def stories(run: Run) -> None:
    cutoff = await run.cutoff(run.config.stories_max_age)
    run.counts.update(rows_deleted=0, objects_deleted=0)

    async def batch(conn: Connection, rows: Rows) -> None:
        # The objects go while the rows are locked: should the delete fail, the rows stay
        # and the next run deletes their (by then missing) objects again.
        await delete_objects(run, media_keys(run, rows))
        if not run.dry_run:
            await conn.execute(queries.delete_ids("stories"), {"ids": ids(rows)})
        run.add("rows_deleted", len(rows))

    await sweep(
        run,
        "stories",
        queries.MEDIA_COLUMNS,
        queries.STORIES_EXPIRED,
        {"cutoff": cutoff},
        batch,
    )


async def sessions(run: Run) -> None:
    cutoff = await run.cutoff(run.config.sessions_max_inactive)
    run.counts.update(rows_deleted=0)

    async def batch(conn: Connection, rows: Rows) -> None:
        if not run.dry_run:
            await conn.execute(queries.delete_ids("user_sessions"), {"ids": ids(rows)})
        run.add("rows_deleted", len(rows))

    await sweep(
        run,
        "user_sessions",
        queries.NO_COLUMNS,
        queries.SESSIONS_INACTIVE,
        {"cutoff": cutoff},
        batch,
    )


async def websockets(run: Run) -> None:
    cutoff = await run.cutoff(run.config.websocket_stale_after)
    run.counts.update(sessions_deactivated=0)

    async def batch(conn: Connection, rows: Rows) -> None:
        if not run.dry_run:
            await conn.execute(queries.DEACTIVATE_SESSIONS, {"ids": ids(rows)})
        run.add("sessions_deactivated", len(rows))

    await sweep(
        run,
        "user_sessions",
        queries.NO_COLUMNS,
        queries.WEBSOCKETS_STALE,
        {"cutoff": cutoff},
        batch,
    )


async def messages(run: Run) -> None:
    config = run.config
    cutoff = await run.cutoff(config.messages_max_age)
    action = config.messages_action
    run.extra["action"] = action
    run.counts.update(rows_deleted=0)
    if config.messages_delete_media:
        run.counts.update(objects_deleted=0)
    if action != "delete":
        run.counts.update(rows_archived=0)
    archive: JsonlArchive | None = None
    if action == "archive_jsonl" and not run.dry_run:
        assert config.archive_dir is not None
        job_id = run.ctx.job.id if run.ctx is not None else None
        archive = JsonlArchive(config.archive_dir, "messages", job_id)
    if action == "archive_table" and not run.dry_run:
        async with run.pool.connection() as conn:
            await conn.execute(queries.create_archive(config.archive_table))

    async def batch(conn: Connection, rows: Rows) -> None:
        if config.messages_delete_media:
            await delete_objects(run, media_keys(run, rows))
        if archive is not None:
            # On disk and fsynced before the delete: a crash after this point leaves the
            # rows in place (archived twice next run), never deleted unarchived.
            await archive.write([row[3] for row in rows])
            run.extra["archive_file"] = str(archive.path)
        if not run.dry_run and action == "archive_table":
            await conn.execute(queries.archive_messages(config.archive_table), {"ids": ids(rows)})
        elif not run.dry_run:
            await conn.execute(queries.delete_ids("messages"), {"ids": ids(rows)})
        if action != "delete":
            run.add("rows_archived", len(rows))
        run.add("rows_deleted", len(rows))

    columns = queries.MESSAGE_ROW_COLUMNS if archive is not None else queries.MEDIA_COLUMNS
    await sweep(run, "messages", columns, queries.MESSAGES_OLD, {"cutoff": cutoff}, batch)


async def temp_files(run: Run) -> None:
    cutoff = await run.cutoff(run.config.temp_files_max_age)
    run.counts.update(
        rows_deleted=0, files_deleted=0, files_missing=0, files_refused=0, files_failed=0
    )
    root = run.config.temp_files_root

    async def batch(conn: Connection, rows: Rows) -> None:
        outcomes = await asyncio.to_thread(remove_files, rows, root, run.dry_run)
        gone = [row_id for row_id, outcome in outcomes if outcome in ("deleted", "missing")]
        for _, outcome in outcomes:
            run.add(f"files_{outcome}")
        if gone and not run.dry_run:
            await conn.execute(queries.delete_ids("temporary_files"), {"ids": gone})
        run.add("rows_deleted", len(gone))

    await sweep(
        run,
        "temporary_files",
        queries.TEMP_FILE_COLUMNS,
        queries.TEMP_FILES_OLD,
        {"cutoff": cutoff},
        batch,
    )


def remove_files(rows: Rows, root: Path | None, dry_run: bool) -> list[tuple[object, str]]:
    """``(row id, outcome)`` per row: ``deleted``, ``missing`` (the row goes too),
    ``refused`` (outside ``root``) or ``failed`` (not removable): those two rows stay."""
    base = os.path.abspath(root) if root is not None else None
    outcomes: list[tuple[object, str]] = []
    for row_id, file_path in rows:
        path = os.path.normpath(os.path.join(base or os.getcwd(), file_path))
        if base is not None and (path == base or os.path.commonpath([base, path]) != base):
            outcomes.append((row_id, "refused"))
            continue
        outcomes.append((row_id, _remove(path, dry_run)))
    return outcomes


def _remove(path: str, dry_run: bool) -> str:
    if dry_run:
        if not os.path.lexists(path):
            return "missing"
        return "deleted" if not os.path.isdir(path) or os.path.islink(path) else "failed"
    try:
        os.unlink(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "failed"
    return "deleted"
