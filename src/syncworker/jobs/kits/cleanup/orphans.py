"""Orphaned media: objects under the configured prefixes that no row refers to.

Every URL in messages and stories (and the archive table, when there is one) is turned into
its key by the store (``key_of``) and copied into a temporary table on a connection of the
job's own; the listed objects are then checked against it a page at a time, so memory stays
bounded by the page, not by the number of objects or rows. An object younger than
``orphan_grace`` is kept whatever the rows say: its row may not be written yet.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from syncworker.connectors.postgres.client import Connection, ConnectSettings, connect
from syncworker.errors import PermanentError
from syncworker.jobs.kits.cleanup import queries
from syncworker.jobs.kits.cleanup.sweep import Run
from syncworker.jobs.kits.storage.base import Storage, StoredObject


async def orphaned_media(run: Run, settings: ConnectSettings) -> None:
    storage = run.storage
    if storage is None:
        raise PermanentError("orphaned_media needs jobs.kits.cleanup.storage (none is set)")
    run.counts.update(objects_scanned=0, objects_young=0, objects_referenced=0, objects_deleted=0)
    conn = await connect(settings, "cleanup orphaned_media")
    async with conn:
        run.extra["references"] = await _load_references(run, conn, storage)
        oldest_s = time.time() - run.config.orphan_grace
        for prefix in run.config.orphan_prefixes:
            async for page in _pages(storage.list(prefix), run.config.batch_size):
                await _check_page(run, conn, storage, page, oldest_s)


async def _load_references(run: Run, conn: Connection, storage: Storage) -> int:
    archive = run.config.archive_table
    exists = await (await conn.execute(queries.TABLE_EXISTS, {"name": archive})).fetchone()
    await conn.execute(queries.CREATE_REFS)
    references = 0
    # A named (server-side) cursor streams the URLs; keys go into the temporary table a
    # batch at a time.
    async with conn.transaction():
        cursor = conn.cursor("cleanup_media_urls")
        await cursor.execute(queries.media_references(archive if exists else None))
        while rows := await cursor.fetchmany(run.config.batch_size):
            keys = [key for (url,) in rows if (key := storage.key_of(url)) is not None]
            references += len(keys)
            await conn.execute(queries.DEDUPE_REFS, {"keys": keys})
        await cursor.close()
    return references


async def _pages(
    objects: AsyncIterator[StoredObject], size: int
) -> AsyncIterator[list[StoredObject]]:
    page: list[StoredObject] = []
    async for item in objects:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


async def _check_page(
    run: Run, conn: Connection, storage: Storage, page: list[StoredObject], oldest_s: float
) -> None:
    run.add("objects_scanned", len(page))
    old = [item.key for item in page if item.modified_at < oldest_s]
    run.add("objects_young", len(page) - len(old))
    if not old:
        return
    cursor = await conn.execute(queries.UNREFERENCED, {"keys": old})
    orphans = [key for (key,) in await cursor.fetchall()]
    run.add("objects_referenced", len(old) - len(orphans))
    if orphans:
        removed = len(orphans) if run.dry_run else await storage.delete(orphans)
        run.add("objects_deleted", removed)
    await run.progress()
