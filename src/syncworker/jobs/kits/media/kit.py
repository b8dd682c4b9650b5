"""The media kit: ``kit:media.image``, ``.video``, ``.audio`` and ``.process`` (by the
payload's ``type``).

One job: check the messages row exists, download the original into a per-job temporary
directory, process it (Pillow in a thread, ffmpeg in subprocesses), upload the results
under keys derived from the job (``{key_prefix}/{userId}/{messageId}/{name}``, so a re-run
overwrites instead of adding objects), write the row, return what was written. The
temporary directory is removed whatever happens, cancel included.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from syncworker.errors import ConnectionFailed, PermanentError
from syncworker.jobs.context import JobContext
from syncworker.jobs.kits.base import Kit
from syncworker.jobs.kits.database import open_kit_pool
from syncworker.jobs.kits.media.config import MediaKitConfig
from syncworker.jobs.kits.media.image import Rendition, configure_limits, process_image
from syncworker.jobs.kits.media.models import MediaJob
from syncworker.jobs.kits.storage.base import Storage
from syncworker.jobs.kits.storage.config import build_storage

log = structlog.get_logger("syncworker.jobs.kits.media")

_KEY_PART = re.compile(r"^[A-Za-z0-9._-]+$")
_SELECT_ROW = "SELECT 1 FROM messages WHERE id = %s"
_UPDATE_ROW = (
    "UPDATE messages SET media_url = %s, thumbnail_url = %s, media_metadata = %s, "
    "updated_at = now() WHERE id = %s"
)


class MediaKit(Kit):
    name = "media"

    def __init__(self, config: MediaKitConfig) -> None:
        self.config = config
        self.storage: Storage = build_storage(config.storage)
        self._pool: Any = None

    async def open(self) -> None:
        configure_limits(self.config.image)
        for program in (self.config.ffmpeg, self.config.ffprobe):
            if shutil.which(program) is None:
                raise ConnectionFailed(f"media kit: {program!r} not found (install ffmpeg)")
        await self.storage.open()
        if self.config.database is not None and self._pool is None:
            self._pool = await open_kit_pool(
                "media",
                self.config.database.get_secret_value(),
                pool_size=self.config.pool_size,
                connect_timeout_s=self.config.connect_timeout,
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self.storage.close()

    def handlers(self) -> Mapping[str, Callable[..., Awaitable[Any]]]:
        return {
            "image": self.image,
            "video": self.video,
            "audio": self.audio,
            "process": self.process,
        }

    async def process(self, job: MediaJob, ctx: JobContext | None = None) -> dict[str, Any]:
        """The seed's one media queue: the payload's ``type`` picks the handler."""
        handler = {"image": self.image, "video": self.video, "audio": self.audio}[job.type]
        return await handler(job, ctx)

    async def image(self, job: MediaJob, ctx: JobContext | None = None) -> dict[str, Any]:
        return await self._run(job, "image", ctx)

    async def video(self, job: MediaJob, ctx: JobContext | None = None) -> dict[str, Any]:
        return await self._run(job, "video", ctx)

    async def audio(self, job: MediaJob, ctx: JobContext | None = None) -> dict[str, Any]:
        return await self._run(job, "audio", ctx)

    def base_key(self, job: MediaJob) -> str:
        for name, value in (("userId", job.userId), ("messageId", job.messageId)):
            if not _KEY_PART.match(value) or value in (".", ".."):
                raise PermanentError(
                    f"media: {name} {value!r} cannot be part of a storage key "
                    "(letters, digits, '.', '_', '-')"
                )
        return f"{self.config.key_prefix}/{job.userId}/{job.messageId}/"

    async def _run(self, job: MediaJob, kind: str, ctx: JobContext | None) -> dict[str, Any]:
        started = time.monotonic()
        base = self.base_key(job)
        message_id = self._message_uuid(job)
        await self._check_row(message_id)
        tmp_root = self.config.tmp_dir
        if tmp_root is not None:
            await asyncio.to_thread(tmp_root.mkdir, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"media-{kind}-", dir=tmp_root))
        try:
            result = await self._process_in(work, job, kind, base, ctx)
        finally:
            # Synchronous on purpose: a cancelled job must not leave this to a later await.
            shutil.rmtree(work, ignore_errors=True)
        await self._write_row(message_id, result)
        log.info(
            "media_processed",
            kind=kind,
            user_id=job.userId,
            message_id=job.messageId,
            media_url=result["media_url"],
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return result

    def _message_uuid(self, job: MediaJob) -> uuid.UUID | None:
        if self._pool is None:
            return None
        try:
            return uuid.UUID(job.messageId)
        except ValueError:
            raise PermanentError(
                f"media: messageId {job.messageId!r} is not a UUID (messages.id)"
            ) from None

    async def _process_in(
        self, work: Path, job: MediaJob, kind: str, base: str, ctx: JobContext | None
    ) -> dict[str, Any]:
        source = work / "original"
        out = work / "out"
        await asyncio.to_thread(out.mkdir)
        try:
            await self.storage.download(job.s3Key, source)
        except FileNotFoundError:
            raise PermanentError(f"media: the original {job.s3Key!r} is not in storage") from None
        main, thumbnails, metadata = await self._transform(kind, source, out, ctx)
        media_url = await self._upload(main, base)
        thumbs = [
            {"url": await self._upload(t, base), "width": t.width, "height": t.height}
            for t in thumbnails
        ]
        metadata = {"type": kind, **metadata, "original_name": job.originalName}
        if thumbs:
            metadata["thumbnails"] = thumbs
        return {
            "media_url": media_url,
            "thumbnail_url": thumbs[0]["url"] if thumbs else None,
            "metadata": metadata,
        }

    async def _transform(
        self, kind: str, source: Path, out: Path, ctx: JobContext | None
    ) -> tuple[Rendition, list[Rendition], dict[str, Any]]:
        tools = (self.config.ffmpeg, self.config.ffprobe)
        if kind == "image":
            done = await asyncio.to_thread(process_image, source, out, self.config.image)
            return done.image, done.thumbnails, done.metadata
        if kind == "video":
            from syncworker.jobs.kits.media.video import process_video

            report = _reporter(ctx)
            video, poster, metadata = await process_video(
                source, out, self.config.video, tools=tools, report=report
            )
            return video, [poster], metadata
        from syncworker.jobs.kits.media.audio import process_audio

        mp3, metadata = await process_audio(source, out, self.config.audio, tools=tools)
        return mp3, [], metadata

    async def _upload(self, rendition: Rendition, base: str) -> str:
        key = base + rendition.path.name
        await self.storage.upload(rendition.path, key, rendition.content_type)
        return self.storage.url(key)

    async def _check_row(self, message_id: uuid.UUID | None) -> None:
        """Before any work: a job for a message that does not exist can never succeed."""
        if message_id is None:
            return
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_SELECT_ROW, (message_id,))
            found = await cursor.fetchone()
        if found is None:
            raise PermanentError(f"media: no messages row with id {str(message_id)!r}")

    async def _write_row(self, message_id: uuid.UUID | None, result: dict[str, Any]) -> None:
        if message_id is None:
            return
        from psycopg.types.json import Jsonb

        params = (result["media_url"], result["thumbnail_url"], Jsonb(result["metadata"]))
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_UPDATE_ROW, (*params, message_id))
        if cursor.rowcount == 0:
            raise PermanentError(f"media: the messages row {str(message_id)!r} was deleted")


def _reporter(ctx: JobContext | None) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
    if ctx is None or ctx.backend is None:
        return None

    async def report(value: dict[str, Any]) -> None:
        await ctx.progress(value)

    return report
