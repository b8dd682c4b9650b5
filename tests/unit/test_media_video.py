"""Video and audio through ffmpeg alone (no services): codecs, faststart, poster, metadata,
progress, waveform, bad files permanent, and a cancelled encode leaving no process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.integration import media_support as media
from tests.waiting import eventually

from syncworker.errors import PermanentError
from syncworker.jobs.kits.media import ffmpeg
from syncworker.jobs.kits.media.audio import process_audio
from syncworker.jobs.kits.media.config import AudioSettings, VideoSettings
from syncworker.jobs.kits.media.video import process_video


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("name", ["clip.mp4", "clip.webm"])
async def test_video_to_h264_aac_faststart_with_poster(
    tmp_path: Path, out: Path, name: str
) -> None:
    source = media.make_video(tmp_path / name, seconds=2)
    reports: list[dict[str, Any]] = []

    async def report(value: dict[str, Any]) -> None:
        reports.append(value)

    settings = VideoSettings(preset="ultrafast", progress_interval="1ms")
    video, poster, meta = await process_video(source, out, settings, report=report)
    assert media.codecs(video.path) == {"video": "h264", "audio": "aac"}
    boxes = media.top_level_boxes(video.path)
    assert boxes.index("moov") < boxes.index("mdat")
    assert (video.width, video.height) == (320, 240)
    with Image.open(poster.path) as image:
        assert image.format == "JPEG"
        assert image.size == (320, 240)
    assert meta["video_codec"] == "h264" and meta["audio_codec"] == "aac"
    assert meta["duration_s"] == pytest.approx(2.0, abs=0.2)
    assert meta["original"]["video_codec"] == ("vp8" if name.endswith("webm") else "h264")
    assert reports[-1] == {"stage": "transcode", "fraction": 1.0}


async def test_video_scaled_down_to_maxima_even_sizes(tmp_path: Path, out: Path) -> None:
    source = media.make_video(tmp_path / "wide.mp4", seconds=1, size="640x360", sound=False)
    settings = VideoSettings(
        preset="ultrafast", max_width=300, max_height=300, poster_format="webp"
    )
    video, poster, meta = await process_video(source, out, settings)
    assert (video.width, video.height) == (300, 168)  # 168.75 made even
    assert media.codecs(video.path) == {"video": "h264"}
    assert meta["audio_codec"] is None
    assert poster.path.name == "poster.webp"


@pytest.mark.parametrize("kind", ["empty", "text", "sound_only"])
async def test_bad_video_is_permanent(tmp_path: Path, out: Path, kind: str) -> None:
    source = tmp_path / "bad.mp4"
    if kind == "empty":
        source.write_bytes(b"")
    elif kind == "text":
        source.write_text("no video here\n" * 50)
    else:
        source = media.sound_only(tmp_path / "sound.m4a")
    expected = {"empty": "empty", "text": "ffprobe can", "sound_only": "no video stream"}[kind]
    with pytest.raises(PermanentError, match=expected):
        await process_video(source, out, VideoSettings())


def ffmpeg_children() -> list[int]:
    """Processes named ffmpeg whose parent is this test process."""
    mine = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = stat[stat.rindex(")") + 2 :].split()[1]
        if name == "ffmpeg" and parent == mine:
            found.append(int(entry))
    return found


async def test_cancel_kills_the_process_group(tmp_path: Path) -> None:
    # An endless source: only the kill ends it.
    args = ["ffmpeg", "-nostdin", "-f", "lavfi", "-re", "-i", "testsrc=size=320x240:rate=25",
            "-progress", "pipe:1", "-f", "null", "-"]  # fmt: skip
    lines: list[str] = []

    async def on_progress(key: str, value: str) -> None:
        lines.append(key)

    run = asyncio.create_task(ffmpeg.run(args, on_progress=on_progress))
    await eventually(lambda: "progress" in lines and ffmpeg_children())
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert ffmpeg_children() == []


async def test_voice_note_to_mp3_with_waveform(tmp_path: Path, out: Path) -> None:
    source = media.voice_note(tmp_path / "voice.ogg", seconds=3)
    mp3, meta = await process_audio(source, out, AudioSettings(waveform_peaks=50))
    assert media.codecs(mp3.path) == {"audio": "mp3"}
    assert mp3.content_type == "audio/mpeg"
    assert meta["duration_s"] == pytest.approx(3.0, abs=0.1)
    waveform = meta["waveform"]
    assert len(waveform) == 50
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in waveform)
    assert max(waveform) == 1.0
    assert waveform[-1] < waveform[5]  # it fades out
    assert meta["original"]["audio_codec"] == "opus"


async def test_audio_waveform_default_peaks_and_video_soundtrack(tmp_path: Path, out: Path) -> None:
    source = media.make_video(tmp_path / "clip.mp4", seconds=1)
    mp3, meta = await process_audio(source, out, AudioSettings())
    assert len(meta["waveform"]) == 100
    assert media.codecs(mp3.path) == {"audio": "mp3"}


@pytest.mark.parametrize("kind", ["empty", "text", "silent_video"])
async def test_bad_audio_is_permanent(tmp_path: Path, out: Path, kind: str) -> None:
    source = tmp_path / "bad.ogg"
    if kind == "empty":
        source.write_bytes(b"")
    elif kind == "text":
        source.write_text("no sound here\n" * 50)
    else:
        source = media.make_video(tmp_path / "mute.mp4", seconds=1, sound=False)
    expected = {"empty": "empty", "text": "ffprobe can", "silent_video": "no audio stream"}[kind]
    with pytest.raises(PermanentError, match=expected):
        await process_audio(source, out, AudioSettings())
