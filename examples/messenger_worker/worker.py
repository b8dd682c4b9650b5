"""Seed 003's job handlers, as a skeleton: each validates its payload (the seed's job
shapes, as pydantic models: a payload that does not fit is refused at enqueue and dead at
run) and reports what it would do. Issue 13 replaces the bodies with syncworker's media,
notification and clean-up kits (Pillow/ffmpeg to S3, FCM, SMTP, SMS, PostgreSQL clean-up).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import structlog
from pydantic import BaseModel

from syncworker.jobs import JobContext

log = structlog.get_logger("messenger_worker")


class MediaJob(BaseModel):
    type: Literal["image", "video", "audio"]
    s3Key: str  # noqa: N815 - the seed's field names, as its producers send them
    userId: str  # noqa: N815
    messageId: str  # noqa: N815
    originalName: str | None = None  # noqa: N815


class NotificationJob(BaseModel):
    type: Literal["push", "email", "sms"]
    userId: str  # noqa: N815
    title: str
    body: str
    fcmToken: str | None = None  # noqa: N815
    email: str | None = None
    phoneNumber: str | None = None  # noqa: N815
    data: dict[str, str] | None = None


class CleanupJob(BaseModel):
    type: Literal[
        "stories",
        "sessions",
        "messages",
        "temp_files",
        "prekeys",
        "orphaned_media",
        "websockets",
        "maintenance",
    ]
    data: dict[str, Any] | None = None


def _skeleton(kind: str, job: BaseModel, ctx: JobContext) -> dict[str, Any]:
    log.info("skeleton_job", kind=kind, job_id=ctx.job.id, attempt=ctx.job.attempts)
    return {"kind": kind, "skeleton": True, "job": job.model_dump(exclude_none=True)}


async def process_image(job: MediaJob, ctx: JobContext) -> dict[str, Any]:
    return _skeleton("image", job, ctx)


async def process_video(job: MediaJob, ctx: JobContext) -> dict[str, Any]:
    return _skeleton("video", job, ctx)


async def process_audio(job: MediaJob, ctx: JobContext) -> dict[str, Any]:
    return _skeleton("audio", job, ctx)


async def send_push(job: NotificationJob, ctx: JobContext) -> dict[str, Any]:
    return _skeleton("push", job, ctx)


async def send_email(job: NotificationJob, ctx: JobContext) -> dict[str, Any]:
    return _skeleton("email", job, ctx)


async def send_sms(job: NotificationJob, ctx: JobContext) -> dict[str, Any]:
    return _skeleton("sms", job, ctx)


async def cleanup(job: CleanupJob, ctx: JobContext) -> dict[str, Any]:
    return _skeleton(f"cleanup:{job.type}", job, ctx)


async def aggregate_user_stats(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    log.info("skeleton_job", kind="user_stats", job_id=ctx.job.id)
    return {"kind": "user_stats", "skeleton": True}


async def health_check(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"kind": "health", "checked_at": time.time()}
