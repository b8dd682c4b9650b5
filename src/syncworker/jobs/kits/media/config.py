"""The settings of ``jobs.kits.media`` (pydantic only: importing this loads no driver)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator

from syncworker.core.durations import DurationS
from syncworker.core.fields import StrictModel
from syncworker.jobs.kits.storage.config import StorageConfig

if TYPE_CHECKING:
    from syncworker.jobs.kits.base import Kit


class ImageSettings(StrictModel):
    max_width: int = Field(2048, ge=16, le=16384, description="widest output image, in pixels")
    max_height: int = Field(2048, ge=16, le=16384, description="tallest output image, in pixels")
    format: Literal["webp", "jpeg"] = Field(
        "webp",
        description="output format: webp keeps alpha and animation; jpeg flattens alpha onto "
        "white and keeps an animation's first frame",
    )
    quality: int = Field(82, ge=1, le=100, description="encoder quality of the output image")
    thumbnail_sizes: list[Annotated[int, Field(ge=8, le=4096)]] = Field(
        default_factory=lambda: [320],
        min_length=1,
        description="thumbnails to make, each the longest edge in pixels; the first is the "
        "messages row's thumbnail_url",
    )
    thumbnail_quality: int = Field(70, ge=1, le=100, description="encoder quality of thumbnails")
    max_pixels: int = Field(
        64_000_000,
        ge=1,
        description="largest image accepted (width x height; Pillow's MAX_IMAGE_PIXELS); "
        "bigger is a decompression bomb: permanent error",
    )
    animation: Literal["keep", "first_frame"] = Field(
        "keep",
        description="animated GIF/WebP: keep the animation (webp output, resized frame by "
        "frame) or keep only the first frame",
    )
    max_animation_pixels: int = Field(
        16_000_000,
        ge=1,
        description="an animation whose output frames hold more pixels than this in all "
        "(frames x width x height) keeps only its first frame (bounds memory and time)",
    )
    blurhash_components: tuple[
        Annotated[int, Field(ge=1, le=9)], Annotated[int, Field(ge=1, le=9)]
    ] = Field((4, 3), description="blurhash components (x, y), each 1..9")


class VideoSettings(StrictModel):
    max_width: int = Field(1280, ge=16, le=7680, description="widest output video, in pixels")
    max_height: int = Field(720, ge=16, le=4320, description="tallest output video, in pixels")
    crf: int = Field(23, ge=0, le=51, description="libx264 constant rate factor (lower: better)")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = (
        Field("veryfast", description="libx264 preset (speed against size)")
    )
    audio_bitrate: str = Field(
        "128k", pattern=r"^\d+k$", description="AAC bitrate of the output's sound track"
    )
    threads: int = Field(0, ge=0, le=64, description="ffmpeg threads (0: ffmpeg decides)")
    poster_at_s: float = Field(
        1.0, ge=0, description="where the poster frame is taken (the start when shorter)"
    )
    poster_format: Literal["jpeg", "webp"] = Field("jpeg", description="poster image format")
    poster_quality: int = Field(80, ge=1, le=100, description="poster encoder quality")
    progress_interval: DurationS = Field(
        1.0, gt=0, description="how often encoding progress is recorded on the job (1s)"
    )


class AudioSettings(StrictModel):
    bitrate: str = Field("96k", pattern=r"^\d+k$", description="MP3 bitrate (libmp3lame)")
    channels: int = Field(1, ge=1, le=2, description="output channels (1: voice notes)")
    waveform_peaks: int = Field(
        100, ge=1, le=10_000, description="how many peaks the waveform has (values 0..1)"
    )
    waveform_sample_rate: int = Field(
        8000, ge=1000, le=48000, description="rate the sound is decoded at for the waveform"
    )


class MediaKitConfig(StrictModel):
    storage: StorageConfig = Field(
        description="where originals are read (the job's s3Key) and results written: "
        "{type: s3, bucket, ...} or {type: local, path}"
    )
    database: SecretStr | None = Field(
        None,
        description="PostgreSQL URL of the seed's messages table (e.g. ${DATABASE_URL}); "
        "results go to the job's messages row; unset: results are only returned",
    )
    pool_size: int = Field(4, ge=1, le=100, description="database connections at most")
    connect_timeout: DurationS = Field(
        10.0, gt=0, description="how long open waits for the database (10s)"
    )
    key_prefix: str = Field(
        "media",
        pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="results are stored as {key_prefix}/{userId}/{messageId}/{name}",
    )
    tmp_dir: Path | None = Field(
        None, description="where each job's temporary directory goes (default: the system's)"
    )
    ffmpeg: str = Field("ffmpeg", description="the ffmpeg program (a name on PATH or a path)")
    ffprobe: str = Field("ffprobe", description="the ffprobe program (a name on PATH or a path)")
    image: ImageSettings = Field(default_factory=ImageSettings, description="image settings")
    video: VideoSettings = Field(default_factory=VideoSettings, description="video settings")
    audio: AudioSettings = Field(default_factory=AudioSettings, description="audio settings")

    @field_validator("database", "tmp_dir", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # ``${DATABASE_URL:-}`` with the variable unset is "": no database, not an empty URL.
        return None if isinstance(value, str) and not value.strip() else value

    def build(self) -> Kit:
        from syncworker.jobs.kits.media.kit import MediaKit

        return MediaKit(self)
