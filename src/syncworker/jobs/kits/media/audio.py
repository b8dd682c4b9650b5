"""Voice messages with ffmpeg: MP3 (libmp3lame), the duration, and a waveform of a fixed
number of peaks computed from decoded PCM as it streams out of ffmpeg (never the whole
sound in memory)."""

from __future__ import annotations

import math
import sys
from array import array
from pathlib import Path
from typing import Any

from syncworker.jobs.kits.media import ffmpeg
from syncworker.jobs.kits.media.config import AudioSettings
from syncworker.jobs.kits.media.image import BadMedia, Rendition, size_of

_FINE_PER_PEAK = 8
"""Fine buckets kept per output peak when the duration is known (more when it is not)."""
_UNKNOWN_BUCKET_S = 0.01


async def process_audio(
    source: Path,
    out_dir: Path,
    settings: AudioSettings,
    *,
    tools: tuple[str, str] = ("ffmpeg", "ffprobe"),
) -> tuple[Rendition, dict[str, Any]]:
    """(the MP3, metadata with ``duration_s`` and ``waveform``); ``BadMedia`` for a file
    that is empty, unreadable or has no audio stream."""
    ffmpeg_bin, ffprobe_bin = tools
    if size_of(source) == 0:
        raise BadMedia("audio: the file is empty (0 bytes)")
    original = await ffmpeg.probe(ffprobe_bin, source, "audio")
    audio_streams = ffmpeg.streams(original, "audio")
    if not audio_streams:
        raise BadMedia("audio: the file has no audio stream")
    output = out_dir / "audio.mp3"
    done = await ffmpeg.run(_mp3_args(ffmpeg_bin, source, output, settings))
    if done.returncode != 0:
        raise ffmpeg.failure("audio", "encoding to MP3", done)
    peaks, decoded_s = await waveform(ffmpeg_bin, source, settings, ffmpeg.duration_s(original))
    mp3 = Rendition(output, 0, 0, "audio/mpeg", size_of(output))
    metadata = {
        "format": "mp3",
        "size_bytes": mp3.size_bytes,
        "duration_s": round(decoded_s, 3),
        "bitrate": settings.bitrate,
        "channels": settings.channels,
        "waveform": peaks,
        "original": {
            "format": (original.get("format") or {}).get("format_name"),
            "audio_codec": audio_streams[0].get("codec_name"),
            "size_bytes": size_of(source),
        },
    }
    return mp3, metadata


def _mp3_args(ffmpeg_bin: str, source: Path, output: Path, settings: AudioSettings) -> list[str]:
    return [
        ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-i", str(source), "-map", "0:a:0",
        "-vn", "-c:a", "libmp3lame", "-b:a", settings.bitrate, "-ac", str(settings.channels),
        str(output),
    ]  # fmt: skip


async def waveform(
    ffmpeg_bin: str, source: Path, settings: AudioSettings, duration_s: float | None
) -> tuple[list[float], float]:
    """``waveform_peaks`` peaks (0..1, the loudest 1) and the decoded duration."""
    rate = settings.waveform_sample_rate
    if duration_s:
        fine_count = settings.waveform_peaks * _FINE_PER_PEAK
        bucket = max(1, math.ceil(duration_s * rate / fine_count))
    else:
        bucket = max(1, round(rate * _UNKNOWN_BUCKET_S))
    peaks = _PeakReader(bucket)
    args = [
        ffmpeg_bin, "-hide_banner", "-nostdin", "-i", str(source), "-map", "0:a:0", "-vn",
        "-ac", "1", "-ar", str(rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
    ]  # fmt: skip
    done = await ffmpeg.run(args, on_stdout=peaks.feed)
    if done.returncode != 0:
        raise ffmpeg.failure("audio", "decoding for the waveform", done)
    fine = peaks.finish()
    if not fine:
        raise BadMedia("audio: no sound could be decoded")
    return _reduce(fine, settings.waveform_peaks), peaks.samples / rate


class _PeakReader:
    """The largest |sample| of every ``bucket`` samples, fed PCM chunks of any length."""

    def __init__(self, bucket: int) -> None:
        self.bucket = bucket
        self.fine: list[int] = []
        self.samples = 0
        self._carry = b""
        self._current = 0
        self._in_current = 0

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        values = array("h")
        values.frombytes(data[:usable])
        if sys.byteorder == "big":
            values.byteswap()
        self.samples += len(values)
        start = 0
        while start < len(values):
            take = min(self.bucket - self._in_current, len(values) - start)
            part = values[start : start + take]
            self._current = max(self._current, max(part), -min(part))
            self._in_current += take
            start += take
            if self._in_current == self.bucket:
                self.fine.append(self._current)
                self._current, self._in_current = 0, 0

    def finish(self) -> list[int]:
        if self._in_current:
            self.fine.append(self._current)
        return self.fine


def _reduce(fine: list[int], count: int) -> list[float]:
    """``count`` peaks from the fine ones (max over equal slices; repeated when there are
    fewer fine buckets than peaks), scaled so the loudest is 1."""
    peaks = []
    for index in range(count):
        start = index * len(fine) // count
        end = max(start + 1, (index + 1) * len(fine) // count)
        peaks.append(max(fine[start:end]))
    loudest = max(peaks) or 1
    return [round(min(1.0, peak / loudest), 4) for peak in peaks]
