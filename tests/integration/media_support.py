"""Media files generated for the tests (nothing binary is committed): Pillow for images,
ffmpeg's lavfi test sources for video and sound; and readers of what the kit wrote
(ffprobe, the MP4 top-level box order)."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

EXIF_ORIENTATION = 0x0112


def jpeg_rotated(path: Path, size: tuple[int, int] = (400, 200)) -> Path:
    """A landscape JPEG whose EXIF says "rotate 90° clockwise to view" (orientation 6): it
    shows upright as portrait. The left half is red, so the rotation can be checked."""
    image = Image.new("RGB", size, (0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 2, size[1]), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    exif[0x010F] = "TestCamera"  # Make: must not survive
    image.save(path, format="JPEG", exif=exif.tobytes(), quality=90)
    return path


def png_alpha(path: Path, size: tuple[int, int] = (300, 200)) -> Path:
    """Transparent, with an opaque green square in the middle."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((100, 50, 200, 150), fill=(0, 200, 0, 255))
    image.save(path, format="PNG")
    return path


def gif_animated(path: Path, frames: int = 6, size: tuple[int, int] = (120, 80)) -> Path:
    images = [
        Image.new("RGB", size, (index * 40 % 256, 255 - index * 40 % 256, 60))
        for index in range(frames)
    ]
    images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0)
    return path


def truncated_jpeg(path: Path) -> Path:
    jpeg_rotated(path, (800, 600))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


def big_jpeg(path: Path, width: int = 7300, height: int = 5480) -> Path:
    """A 40 MP JPEG, made by ffmpeg so the test process never holds it decoded."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={width}x{height}", "-frames:v", "1", str(path))
    return path


def make_video(
    path: Path, *, seconds: int = 2, size: str = "320x240", sound: bool = True, codec: str = ""
) -> Path:
    """An MP4 (H.264) or WebM (VP8/Vorbis... by extension) from the lavfi test sources."""
    args = ["-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate=25"]
    if sound:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    if path.suffix == ".webm":
        args += ["-c:v", "libvpx", "-b:v", "200k", "-deadline", "realtime", "-cpu-used", "8"]
        args += ["-c:a", "libopus"] if sound else []
    else:
        args += ["-c:v", codec or "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        args += ["-c:a", "aac"] if sound else []
    ffmpeg(*args, "-shortest", str(path))
    return path


def voice_note(path: Path, seconds: int = 3) -> Path:
    """A voice note as phones send it: Opus in Ogg, mono, a 440 Hz tone fading out."""
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-af", f"afade=t=out:st=1:d={seconds - 1}",
        "-ac", "1", "-c:a", "libopus", "-b:a", "24k", str(path),
    )  # fmt: skip
    return path


def sound_only(path: Path, seconds: int = 2) -> Path:
    """An M4A (AAC) with no video stream."""
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", str(path))
    return path


def probe(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def codecs(path: Path) -> dict[str, str]:
    """Stream kind -> codec name (``{"video": "h264", "audio": "aac"}``)."""
    return {s["codec_type"]: s["codec_name"] for s in probe(path)["streams"]}


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order (faststart: 'moov' before 'mdat')."""
    boxes: list[str] = []
    with path.open("rb") as file:
        while header := file.read(8):
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", file.read(8))[0]
                file.seek(size - 16, 1)
            elif size == 0:
                boxes.append(kind.decode("latin-1"))
                break
            else:
                file.seek(size - 8, 1)
            boxes.append(kind.decode("latin-1"))
    return boxes
