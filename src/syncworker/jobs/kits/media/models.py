"""The media job's payload: the seed's ``MediaJob``, field names as its producers send them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class MediaJob(BaseModel):
    type: Literal["image", "video", "audio"] = Field(description="what the object holds")
    s3Key: str = Field(min_length=1, description="the original's key in storage")
    userId: str = Field(min_length=1, description="the sender")
    messageId: str = Field(min_length=1, description="the messages row (a UUID)")
    originalName: str | None = Field(None, description="the file name as uploaded")
