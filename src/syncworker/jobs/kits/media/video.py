"""Video with ffmpeg: H.264 + AAC in an MP4 with ``+faststart`` (the index first, so a
player starts before the download ends), a poster frame, metadata from ffprobe, progress
from ``-progress pipe:1``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from PIL import Image

from syncworker.jobs.kits.media import ffmpeg
from syncworker.jobs.kits.media.config import VideoSettings
from syncworker.jobs.kits.media.image import BadMedia, Rendition, size_of

Report = Callable[[dict[str, Any]], Awaitable[None]]


async def process_video(
    source: Path,
    out_dir: Path,
    settings: VideoSettings,
    *,
    tools: tuple[str, str] = ("ffmpeg", "ffprobe"),
    report: Report | None = None,
) -> tuple[Rendition, Rendition, dict[str, Any]]:
    """(the MP4, the poster, metadata); ``BadMedia`` for a file that is empty, unreadable
    or has no video stream."""
    ffmpeg_bin, ffprobe_bin = tools
    if size_of(source) == 0:
        raise BadMedia("video: the file is empty (0 bytes)")
    original = await ffmpeg.probe(ffprobe_bin, source, "video")
    video_streams = ffmpeg.streams(original, "video")
    if not video_streams:
        raise BadMedia("video: the file has no video stream")
    duration = ffmpeg.duration_s(original)
    output = out_dir / "video.mp4"
    await _transcode(ffmpeg_bin, source, output, settings, duration, report)
    encoded = await ffmpeg.probe(ffprobe_bin, output, "video")
    poster = await _poster(ffmpeg_bin, output, out_dir, settings, ffmpeg.duration_s(encoded))
    video = _rendition(output, encoded, "video/mp4")
    metadata = _metadata(source, original, video_streams[0], encoded, video, poster)
    return video, poster, metadata


def transcode_args(
    ffmpeg_bin: str, source: Path, output: Path, settings: VideoSettings
) -> list[str]:
    # Only ever scaled down; even sizes, as yuv420p needs.
    scale = (
        f"scale='min({settings.max_width},iw)':'min({settings.max_height},ih)'"
        ":force_original_aspect_ratio=decrease:force_divisible_by=2"
    )
    return [
        ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-i", str(source),
        "-map", "0:v:0", "-map", "0:a:0?",
        "-vf", scale, "-c:v", "libx264", "-preset", settings.preset,
        "-crf", str(settings.crf), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", settings.audio_bitrate,
        "-movflags", "+faststart", "-threads", str(settings.threads),
        "-progress", "pipe:1", "-nostats", str(output),
    ]  # fmt: skip


async def _transcode(
    ffmpeg_bin: str,
    source: Path,
    output: Path,
    settings: VideoSettings,
    duration: float | None,
    report: Report | None,
) -> None:
    progress = _Progress(duration, settings.progress_interval, report)
    done = await ffmpeg.run(
        transcode_args(ffmpeg_bin, source, output, settings), on_progress=progress.line
    )
    if done.returncode != 0:
        raise ffmpeg.failure("video", "transcoding", done)
    await progress.finish()


class _Progress:
    """ffmpeg's ``out_time_us`` as a fraction of the duration, reported at most every
    ``interval_s`` (ffmpeg writes a block about twice a second)."""

    def __init__(self, duration: float | None, interval_s: float, report: Report | None):
        self.duration = duration
        self.interval_s = interval_s
        self.report = report
        self.last_at = 0.0
        self.fraction = 0.0

    async def line(self, key: str, value: str) -> None:
        if key == "out_time_us" and self.duration:
            try:
                self.fraction = min(1.0, max(0.0, int(value) / 1e6 / self.duration))
            except ValueError:
                return
        elif key == "progress" and self.report is not None:
            now = time.monotonic()
            if now - self.last_at >= self.interval_s and value == "continue":
                self.last_at = now
                await self.report({"stage": "transcode", "fraction": round(self.fraction, 3)})

    async def finish(self) -> None:
        if self.report is not None:
            await self.report({"stage": "transcode", "fraction": 1.0})


async def _poster(
    ffmpeg_bin: str,
    video: Path,
    out_dir: Path,
    settings: VideoSettings,
    duration: float | None,
) -> Rendition:
    # Never past the middle: a seek to the very end of a short clip decodes no frame.
    at_s = min(settings.poster_at_s, duration / 2) if duration else 0.0
    if settings.poster_format == "jpeg":
        path = out_dir / "poster.jpg"
        # -q:v runs 2 (best) .. 31 (worst)
        codec = ["-q:v", str(round(2 + (100 - settings.poster_quality) * 29 / 99))]
    else:
        path = out_dir / "poster.webp"
        codec = ["-c:v", "libwebp", "-quality", str(settings.poster_quality)]
    args = [
        ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-ss", f"{at_s:.3f}", "-i", str(video),
        "-frames:v", "1", *codec, str(path),
    ]  # fmt: skip
    done = await ffmpeg.run(args)
    if done.returncode != 0 or not path.exists():
        raise ffmpeg.failure("video", "the poster frame", done)
    content_type = "image/jpeg" if settings.poster_format == "jpeg" else "image/webp"
    with Image.open(path) as image:
        width, height = image.size
    return Rendition(path, width, height, content_type, path.stat().st_size)


def _rendition(path: Path, info: dict[str, Any], content_type: str) -> Rendition:
    stream = ffmpeg.streams(info, "video")[0]
    return Rendition(
        path, int(stream["width"]), int(stream["height"]), content_type, path.stat().st_size
    )


def _metadata(
    source: Path,
    original: dict[str, Any],
    original_video: dict[str, Any],
    encoded: dict[str, Any],
    video: Rendition,
    poster: Rendition,
) -> dict[str, Any]:
    audio = ffmpeg.streams(encoded, "audio")
    original_audio = ffmpeg.streams(original, "audio")
    duration = ffmpeg.duration_s(encoded)
    return {
        "width": video.width,
        "height": video.height,
        "format": "mp4",
        "size_bytes": video.size_bytes,
        "duration_s": round(duration, 3) if duration else None,
        "video_codec": ffmpeg.streams(encoded, "video")[0].get("codec_name"),
        "audio_codec": audio[0].get("codec_name") if audio else None,
        "poster": {"width": poster.width, "height": poster.height},
        "original": {
            "width": original_video.get("width"),
            "height": original_video.get("height"),
            "format": (original.get("format") or {}).get("format_name"),
            "video_codec": original_video.get("codec_name"),
            "audio_codec": original_audio[0].get("codec_name") if original_audio else None,
            "size_bytes": size_of(source),
        },
    }
