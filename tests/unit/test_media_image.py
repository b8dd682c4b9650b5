"""The image pipeline alone (no services): orientation, EXIF stripped, sizes, alpha,
animation, metadata, bad files refused as permanent, and a 40 MP photo's memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.integration import media_support as media

from syncworker.errors import PermanentError
from syncworker.jobs.kits.media.config import ImageSettings
from syncworker.jobs.kits.media.image import process_image


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def pixel(image: Image.Image, where: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(where)
    assert isinstance(value, tuple)
    return value


def test_exif_rotation_applied_then_stripped(tmp_path: Path, out: Path) -> None:
    source = media.jpeg_rotated(tmp_path / "photo.jpg", (400, 200))
    result = process_image(source, out, ImageSettings(thumbnail_sizes=[100, 50]))
    with Image.open(result.image.path) as written:
        assert written.format == "WEBP"
        assert written.size == (200, 400)  # portrait, as the camera meant
        assert not written.getexif()
        # orientation 6: the red left half of the sensor is now the top
        assert pixel(written.convert("RGB"), (100, 20))[0] > 200
        assert pixel(written.convert("RGB"), (100, 380))[2] > 200
    assert [(t.width, t.height) for t in result.thumbnails] == [(50, 100), (25, 50)]
    meta = result.metadata
    assert meta["original"] == {
        "width": 200,
        "height": 400,
        "format": "jpeg",
        "size_bytes": source.stat().st_size,
    }
    assert (meta["width"], meta["height"], meta["format"]) == (200, 400, "webp")
    assert meta["size_bytes"] == result.image.path.stat().st_size
    assert isinstance(meta["blurhash"], str) and len(meta["blurhash"]) == 28  # 4x3 components
    assert meta["dominant_color"].startswith("#") and len(meta["dominant_color"]) == 7
    json.dumps(meta)


def test_resize_to_maxima_as_jpeg(tmp_path: Path, out: Path) -> None:
    source = media.jpeg_rotated(tmp_path / "photo.jpg", (3000, 1000))
    settings = ImageSettings(max_width=600, max_height=600, format="jpeg", quality=70)
    result = process_image(source, out, settings)
    assert result.image.path.name == "image.jpg"
    assert result.image.content_type == "image/jpeg"
    with Image.open(result.image.path) as written:
        assert written.format == "JPEG"
        assert written.size == (200, 600)
        assert "exif" not in written.info


def test_png_alpha_kept_in_webp_and_flattened_white_in_jpeg(tmp_path: Path, out: Path) -> None:
    source = media.png_alpha(tmp_path / "logo.png")
    result = process_image(source, out, ImageSettings())
    with Image.open(result.image.path) as written:
        assert written.mode == "RGBA"
        assert pixel(written, (5, 5))[3] == 0
        assert pixel(written, (150, 100))[3] == 255
    assert result.metadata["has_alpha"] is True
    jpeg_out = out / "jpeg"
    jpeg_out.mkdir()
    flat = process_image(source, jpeg_out, ImageSettings(format="jpeg"))
    with Image.open(flat.image.path) as written:
        assert written.mode == "RGB"
        assert min(pixel(written, (5, 5))) > 240  # white, not black


def test_animated_gif_kept_as_animated_webp_or_first_frame(tmp_path: Path, out: Path) -> None:
    source = media.gif_animated(tmp_path / "anim.gif", frames=6, size=(400, 200))
    result = process_image(source, out, ImageSettings(max_width=200, max_height=200))
    with Image.open(result.image.path) as written:
        assert written.format == "WEBP"
        assert getattr(written, "n_frames", 1) == 6
        assert written.size == (200, 100)
    assert result.metadata["animated"] is True
    assert result.metadata["frames"] == 6
    with Image.open(result.thumbnails[0].path) as thumb:
        assert getattr(thumb, "n_frames", 1) == 1
    still_out = out / "still"
    still_out.mkdir()
    still = process_image(source, still_out, ImageSettings(animation="first_frame"))
    with Image.open(still.image.path) as written:
        assert getattr(written, "n_frames", 1) == 1
    assert still.metadata["animated"] is False


def bad_files(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n" * 20)
    return {"empty": empty, "text": text, "truncated": media.truncated_jpeg(tmp_path / "t.jpg")}


@pytest.mark.parametrize(
    ("kind", "message"),
    [("empty", "empty"), ("text", "not an image"), ("truncated", "truncated or corrupt")],
)
def test_bad_files_are_permanent_errors(tmp_path: Path, out: Path, kind: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        process_image(bad_files(tmp_path)[kind], out, ImageSettings())


@pytest.mark.parametrize("pixels", [1000, 30_000])
def test_decompression_bomb_is_permanent(tmp_path: Path, out: Path, pixels: int) -> None:
    # 200x200 = 40,000 px: over the limit (our own check) or over twice the limit (Pillow's)
    source = media.png_alpha(tmp_path / "bomb.png", (200, 200))
    with pytest.raises(PermanentError, match="decompression bomb"):
        process_image(source, out, ImageSettings(max_pixels=pixels))


PEAK_SCRIPT = """
import json, resource, sys
from pathlib import Path
from syncworker.jobs.kits.media.config import ImageSettings
from syncworker.jobs.kits.media.image import process_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] != "baseline":
    result = process_image(Path(sys.argv[1]), Path(sys.argv[2]), ImageSettings())
    size = [result.image.width, result.image.height]
else:
    size = []
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": peak, "size": size}))
"""


def peak_rss(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, *args],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout))


def test_a_40_mp_photo_stays_memory_bounded(tmp_path: Path, out: Path) -> None:
    source = media.big_jpeg(tmp_path / "big.jpg")
    baseline = peak_rss("baseline")
    measured = peak_rss(str(source), str(out))
    peak_mb = measured["peak_kb"] / 1024
    grown_mb = (measured["peak_kb"] - baseline["peak_kb"]) / 1024
    print(f"40 MP JPEG: peak RSS {peak_mb:.0f} MB, {grown_mb:.0f} MB over the imports")
    assert measured["size"] == [2048, 1537]
    # Decoded whole, 7300x5480 RGB alone is 114 MB; at the 1/2 DCT scale it is 29 MB.
    assert grown_mb < 90


def test_heic_is_read(tmp_path: Path, out: Path) -> None:
    source = tmp_path / "phone.heic"
    Image.new("RGB", (640, 480), (200, 10, 10)).save(source)  # pillow-heif's encoder
    result = process_image(source, out, ImageSettings(thumbnail_sizes=[100]))
    assert result.metadata["original"]["format"] == "heif"
    assert (result.image.width, result.image.height) == (640, 480)
    assert result.metadata["dominant_color"] != "#000000"
