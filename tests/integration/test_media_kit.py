"""The media kit end to end: real PostgreSQL (the seed's schema), S3 (moto's server, the
real aioboto3 client), jobs run by a real JobsService on the memory backend. Good media
lands in S3 and on the messages row, idempotently; bad media is dead after one attempt."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncworker.config import config_from_dict
from syncworker.jobs.kits.media.config import MediaKitConfig
from syncworker.jobs.kits.media.kit import MediaKit
from syncworker.jobs.kits.media.models import MediaJob
from syncworker.jobs.service import JobsService
from syncworker.queue.base import Job, JobState
from tests.fakes.s3 import S3Server, s3_server  # noqa: F401 - the fixture
from tests.integration import media_support as media
from tests.unit.test_media_video import ffmpeg_children
from tests.waiting import eventually

SCHEMA = Path(__file__).parents[2] / "examples" / "messenger_worker" / "schema.sql"


@pytest.fixture
def db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(SCHEMA.read_text())
    return pg_url


@pytest.fixture
def bucket(s3_server: S3Server) -> str:  # noqa: F811
    return s3_server.new_bucket()


def new_message(db: str) -> str:
    message_id = str(uuid.uuid4())
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO messages (id, sender_id, chat_id, updated_at) "
            "VALUES (%s, %s, %s, now() - interval '1 day')",
            (message_id, uuid.uuid4(), uuid.uuid4()),
        )
    return message_id


def row(db: str, message_id: str) -> dict[str, Any]:
    with psycopg.connect(db) as conn:
        found = conn.execute(
            "SELECT media_url, thumbnail_url, media_metadata, updated_at > now() - interval "
            "'1 hour' FROM messages WHERE id = %s",
            (message_id,),
        ).fetchone()
    assert found is not None
    return {"media_url": found[0], "thumbnail_url": found[1], "meta": found[2], "fresh": found[3]}


def kit_settings(s3: S3Server, bucket: str, db: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "storage": s3.storage_settings(bucket),
        "database": db,
        "tmp_dir": str(tmp_path / "work"),
        "image": {"max_pixels": 4_000_000, "thumbnail_sizes": [160, 64]},
        "video": {"preset": "ultrafast"},
    }


@pytest.fixture
async def service(
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    db: str,
    tmp_path: Path,
) -> AsyncIterator[JobsService]:
    raw = {
        "jobs": {
            "backend": {"type": "memory"},
            "queues": {"media": {"concurrency": 2, "timeout": "60s"}},
            "tasks": {
                "media": {
                    "handler": "kit:media.process",
                    "queue": "media",
                    "retries": 3,
                    "backoff": {"base": "10ms", "max": "50ms"},
                },
                "image": {"handler": "kit:media.image", "queue": "media", "retries": 3},
            },
            "kits": {"media": kit_settings(s3_server, bucket, db, tmp_path)},
        }
    }
    config = config_from_dict(raw)
    assert config.app.jobs is not None
    jobs = JobsService.from_config(config.app.jobs)
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.stop()


def put(s3: S3Server, bucket: str, path: Path, key: str) -> str:
    s3.client().upload_file(str(path), bucket, key)
    return key


async def finished(service: JobsService, job_id: str) -> Job:
    async def done() -> Job | None:
        job = await service.backend.get(job_id)
        if job is not None and job.state in (JobState.COMPLETED, JobState.DEAD):
            return job
        return None

    return await eventually(done, f"job {job_id} finished", timeout_s=90)


def bucket_keys(s3: S3Server, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in listed)


async def test_image_job_writes_s3_and_the_row_and_a_rerun_overwrites(
    service: JobsService,
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    db: str,
    tmp_path: Path,
) -> None:
    message_id = new_message(db)
    key = put(s3_server, bucket, media.jpeg_rotated(tmp_path / "p.jpg", (400, 200)), "up/p.jpg")
    payload = {"type": "image", "s3Key": key, "userId": "u1", "messageId": message_id,
               "originalName": "IMG_0001.JPG"}  # fmt: skip
    job = await finished(service, await service.jobs.enqueue("media", payload))
    assert job.state is JobState.COMPLETED, job.error
    base = f"media/u1/{message_id}/"
    written = row(db, message_id)
    assert written["media_url"] == f"s3://{bucket}/{base}image.webp"
    assert written["thumbnail_url"] == f"s3://{bucket}/{base}thumb_160.webp"
    assert written["fresh"] is True
    meta = written["meta"]
    assert (meta["type"], meta["width"], meta["height"]) == ("image", 200, 400)
    assert meta["original_name"] == "IMG_0001.JPG"
    assert [t["width"] for t in meta["thumbnails"]] == [80, 32]
    assert job.result == {
        "media_url": written["media_url"],
        "thumbnail_url": written["thumbnail_url"],
        "metadata": meta,
    }
    keys = bucket_keys(s3_server, bucket)
    assert keys == sorted(
        [key, f"{base}image.webp", f"{base}thumb_160.webp", f"{base}thumb_64.webp"]
    )
    again = await finished(service, await service.jobs.enqueue("image", payload))
    assert again.state is JobState.COMPLETED, again.error
    assert bucket_keys(s3_server, bucket) == keys  # overwritten, never duplicated
    assert list((tmp_path / "work").iterdir()) == []


async def test_video_and_voice_note_jobs(
    service: JobsService,
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    db: str,
    tmp_path: Path,
) -> None:
    clip = put(s3_server, bucket, media.make_video(tmp_path / "c.webm", seconds=1), "up/c.webm")
    voice = put(s3_server, bucket, media.voice_note(tmp_path / "v.ogg", seconds=2), "up/v.ogg")
    video_id, voice_id = new_message(db), new_message(db)
    ids = [
        await service.jobs.enqueue(
            "media", {"type": kind, "s3Key": key, "userId": "u2", "messageId": message_id}
        )
        for kind, key, message_id in [("video", clip, video_id), ("audio", voice, voice_id)]
    ]
    for job_id in ids:
        job = await finished(service, job_id)
        assert job.state is JobState.COMPLETED, job.error
    video_job = await service.backend.get(ids[0])
    assert video_job is not None
    assert video_job.progress == {"stage": "transcode", "fraction": 1.0}  # ctx.progress
    video_row = row(db, video_id)
    assert video_row["media_url"].endswith(f"/media/u2/{video_id}/video.mp4")
    assert video_row["thumbnail_url"].endswith(f"/media/u2/{video_id}/poster.jpg")
    assert video_row["meta"]["video_codec"] == "h264"
    downloaded = tmp_path / "back.mp4"
    s3_server.client().download_file(bucket, f"media/u2/{video_id}/video.mp4", str(downloaded))
    assert media.codecs(downloaded) == {"video": "h264", "audio": "aac"}
    boxes = media.top_level_boxes(downloaded)
    assert boxes.index("moov") < boxes.index("mdat")
    voice_row = row(db, voice_id)
    assert voice_row["media_url"].endswith(f"/media/u2/{voice_id}/audio.mp3")
    assert voice_row["thumbnail_url"] is None
    assert len(voice_row["meta"]["waveform"]) == 100
    assert voice_row["meta"]["duration_s"] > 1.5


def bad_inputs(tmp_path: Path, s3: S3Server, bucket: str) -> dict[str, tuple[str, str, str]]:
    """name -> (type, s3Key, what the error says)."""
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image at all\n" * 30)
    cases = {
        "truncated": ("image", media.truncated_jpeg(tmp_path / "t.jpg"), "truncated or corrupt"),
        "not_an_image": ("image", text, "not an image"),
        "bomb": ("image", media.png_alpha(tmp_path / "b.png", (3000, 2000)), "decompression bomb"),
        "empty": ("image", empty, "empty"),
        "no_video_stream": ("video", media.sound_only(tmp_path / "s.m4a"), "no video stream"),
    }
    found = {name: (kind, put(s3, bucket, path, f"bad/{name}"), why)
             for name, (kind, path, why) in cases.items()}  # fmt: skip
    found["missing_key"] = ("image", "bad/never-uploaded.jpg", "is not in storage")
    return found


async def test_bad_media_is_dead_after_one_attempt(
    service: JobsService,
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    db: str,
    tmp_path: Path,
) -> None:
    cases = bad_inputs(tmp_path, s3_server, bucket)
    ids = {}
    for name, (kind, key, _why) in cases.items():
        payload = {"type": kind, "s3Key": key, "userId": "u3", "messageId": new_message(db)}
        ids[name] = await service.jobs.enqueue("media", payload)
    no_row = {"type": "image", "s3Key": "bad/truncated", "userId": "u3",
              "messageId": str(uuid.uuid4())}  # fmt: skip
    ids["no_message_row"] = await service.jobs.enqueue("media", no_row)
    cases["no_message_row"] = ("image", "", "no messages row")
    for name, job_id in ids.items():
        job = await finished(service, job_id)
        assert job.state is JobState.DEAD, name
        assert job.attempts == 1, name
        assert job.error is not None and cases[name][2] in job.error, (name, job.error)
    assert list((tmp_path / "work").iterdir()) == []
    assert [k for k in bucket_keys(s3_server, bucket) if k.startswith("media/")] == []


async def test_the_kit_alone_from_python(
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    db: str,
    tmp_path: Path,
) -> None:
    config = MediaKitConfig.model_validate(kit_settings(s3_server, bucket, db, tmp_path))
    message_id = new_message(db)
    key = put(s3_server, bucket, media.gif_animated(tmp_path / "a.gif"), "up/a.gif")
    async with MediaKit(config) as kit:
        result = await kit.image(
            MediaJob(type="image", s3Key=key, userId="u4", messageId=message_id)
        )
    assert result["metadata"]["animated"] is True
    assert row(db, message_id)["media_url"] == result["media_url"]


async def test_a_timed_out_video_job_kills_ffmpeg_and_leaves_no_file(
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    db: str,
    tmp_path: Path,
) -> None:
    settings = kit_settings(s3_server, bucket, db, tmp_path)
    settings["video"] = {"preset": "slow"}
    raw = {
        "jobs": {
            "backend": {"type": "memory"},
            "queues": {"media": {"concurrency": 1}},
            "tasks": {
                "video": {"handler": "kit:media.video", "queue": "media", "timeout": "1500ms",
                          "retries": 0},
            },
            "kits": {"media": settings},
        }
    }  # fmt: skip
    config = config_from_dict(raw)
    assert config.app.jobs is not None
    source = media.make_video(tmp_path / "long.mp4", seconds=30, size="640x480", sound=False)
    key = put(s3_server, bucket, source, "up/long.mp4")
    payload = {"type": "video", "s3Key": key, "userId": "u5", "messageId": new_message(db)}
    jobs = JobsService.from_config(config.app.jobs)
    await jobs.start()
    try:
        job = await finished(jobs, await jobs.jobs.enqueue("video", payload))
    finally:
        await jobs.stop()
    assert job.state is JobState.DEAD
    assert job.error is not None and "timed out" in job.error, job.error
    assert ffmpeg_children() == []
    assert list((tmp_path / "work").iterdir()) == []
    assert [k for k in bucket_keys(s3_server, bucket) if k.startswith("media/")] == []
