"""The media kit on a local directory store with no database (Python use alone): keys
from the job, a cancelled video leaves no ffmpeg and no temporary file, bad ids refused."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from tests.integration import media_support as media
from tests.unit.test_media_video import ffmpeg_children
from tests.waiting import eventually

from syncworker.errors import PermanentError
from syncworker.jobs.kits.media.config import MediaKitConfig
from syncworker.jobs.kits.media.kit import MediaKit
from syncworker.jobs.kits.media.models import MediaJob


def kit_for(tmp_path: Path, **extra: object) -> MediaKit:
    config = MediaKitConfig.model_validate(
        {
            "storage": {"type": "local", "path": str(tmp_path / "store")},
            "tmp_dir": str(tmp_path / "work"),
            **extra,
        }
    )
    return MediaKit(config)


def upload(tmp_path: Path, source: Path, key: str) -> str:
    target = tmp_path / "store" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return key


async def test_image_to_local_store_without_a_database(tmp_path: Path) -> None:
    async with kit_for(tmp_path) as kit:
        key = upload(tmp_path, media.png_alpha(tmp_path / "a.png"), "up/a.png")
        job = MediaJob(type="image", s3Key=key, userId="u1", messageId="m1")
        result = await kit.process(job)
        assert kit.handlers().keys() == {"image", "video", "audio", "process"}
    assert result["media_url"] == (tmp_path / "store/media/u1/m1/image.webp").resolve().as_uri()
    assert result["thumbnail_url"].endswith("/media/u1/m1/thumb_320.webp")
    assert result["metadata"]["has_alpha"] is True
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"), [("userId", "../etc"), ("messageId", "a/b"), ("userId", "..")]
)
async def test_ids_that_are_not_key_parts_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    fields = {"type": "image", "s3Key": "up/a.png", "userId": "u1", "messageId": "m1"}
    fields[field] = value
    async with kit_for(tmp_path) as kit:
        with pytest.raises(PermanentError, match="cannot be part of a storage key"):
            await kit.image(MediaJob.model_validate(fields))


async def test_a_storage_key_leaving_the_store_is_permanent(tmp_path: Path) -> None:
    async with kit_for(tmp_path) as kit:
        job = MediaJob(type="image", s3Key="../secrets.jpg", userId="u1", messageId="m1")
        with pytest.raises(PermanentError, match="invalid storage key"):
            await kit.image(job)


async def test_cancelling_a_video_job_kills_ffmpeg_and_removes_its_files(tmp_path: Path) -> None:
    source = media.make_video(tmp_path / "long.mp4", seconds=20, size="640x480", sound=False)
    async with kit_for(tmp_path, video={"preset": "slow"}) as kit:
        key = upload(tmp_path, source, "up/long.mp4")
        job = MediaJob(type="video", s3Key=key, userId="u1", messageId="m1")
        running = asyncio.create_task(kit.video(job))
        await eventually(lambda: ffmpeg_children() and any((tmp_path / "work").rglob("video.mp4")))
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert ffmpeg_children() == []
    assert list((tmp_path / "work").iterdir()) == []
    assert not (tmp_path / "store" / "media").exists()


def test_config_reads_blank_variables_as_unset_and_hides_the_database_url() -> None:
    config = MediaKitConfig.model_validate(
        {"storage": {"type": "local", "path": "/srv/media"}, "database": "", "tmp_dir": ""}
    )
    assert config.database is None and config.tmp_dir is None
    secret = MediaKitConfig.model_validate(
        {"storage": {"type": "local", "path": "/srv"}, "database": "postgresql://u:pw@h/db"}
    )
    assert "pw" not in repr(secret)
    with pytest.raises(ValueError, match="expected type 'local' or 's3'"):
        MediaKitConfig.model_validate({"storage": {"type": "ftp"}})
    with pytest.raises(ValueError, match="greater than or equal to 8"):
        MediaKitConfig.model_validate(
            {"storage": {"type": "local", "path": "/srv"}, "image": {"thumbnail_sizes": [0]}}
        )
