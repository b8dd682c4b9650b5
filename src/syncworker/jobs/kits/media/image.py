"""Images with Pillow: orient, strip, resize, re-encode, thumbnails, metadata.

Blocking from end to end: the kit runs ``process_image`` in a thread. Memory stays bounded
for large photos: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
covers the output size (``Image.draft``), so a 40 MP photo never exists at full size.

Animations (GIF, animated WebP) with ``animation: keep`` and WebP output stay animated,
every frame resized, frame durations and loop count kept; with JPEG output, ``first_frame``,
or frames past ``max_animation_pixels`` in all, only the first frame is kept. Thumbnails
are always still (the first frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pillow_heif
from blurhash._functions import ffi as _ffi
from blurhash._functions import lib as _lib
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from syncworker.errors import PermanentError
from syncworker.jobs.kits.media.config import ImageSettings

pillow_heif.register_heif_opener()

_ROTATED = {5, 6, 7, 8}
"""EXIF orientations that swap width and height."""
_EXIF_ORIENTATION = 0x0112
_CONTENT_TYPES = {"webp": "image/webp", "jpeg": "image/jpeg"}
_SUFFIXES = {"webp": ".webp", "jpeg": ".jpg"}
_BLURHASH_EDGE_PX = 32


class BadMedia(PermanentError):
    """The file is not media this kit can read (empty, truncated, not an image, a bomb)."""


@dataclass(slots=True)
class Rendition:
    path: Path
    width: int
    height: int
    content_type: str
    size_bytes: int = 0


@dataclass(slots=True)
class ImageResult:
    image: Rendition
    thumbnails: list[Rendition]
    metadata: dict[str, Any] = field(default_factory=dict)


def size_of(path: Path) -> int:
    """A local temp file's size (a stat: cheap enough for the event loop)."""
    return path.stat().st_size


def configure_limits(settings: ImageSettings) -> None:
    """Pillow's bomb limit is process-wide: the kit sets it once from its settings."""
    Image.MAX_IMAGE_PIXELS = settings.max_pixels


def process_image(source: Path, out_dir: Path, settings: ImageSettings) -> ImageResult:
    """The output image and thumbnails written under ``out_dir``, with their metadata;
    ``BadMedia`` for input that can never be processed."""
    size_bytes = source.stat().st_size
    if size_bytes == 0:
        raise BadMedia("image: the file is empty (0 bytes)")
    try:
        with Image.open(source) as opened:
            return _process(opened, out_dir, settings, size_bytes)
    except UnidentifiedImageError:
        raise BadMedia("image: not an image Pillow can read (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadMedia(f"image: refused as a decompression bomb: {exc}") from None
    except OSError as exc:
        if exc.errno is not None:
            raise  # the disk, not the image: worth retrying
        raise BadMedia(f"image: cannot decode ({exc}); truncated or corrupt") from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise BadMedia(f"image: cannot decode ({type(exc).__name__}: {exc})") from None


def _process(
    opened: Image.Image, out_dir: Path, settings: ImageSettings, size_bytes: int
) -> ImageResult:
    source_format = (opened.format or "unknown").lower()
    width, height = opened.size
    if width * height > settings.max_pixels:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that.
        raise BadMedia(
            f"image: {width}x{height} is {width * height} pixels, more than max_pixels "
            f"{settings.max_pixels}: refused as a decompression bomb"
        )
    original_w, original_h = _oriented_size(opened, width, height)
    frames = int(getattr(opened, "n_frames", 1))
    box = (settings.max_width, settings.max_height)
    animated = frames > 1 and _keeps_animation(opened, frames, box, settings)
    if animated:
        image, first = _animated(opened, out_dir, box, settings)
    else:
        first = _still(opened, box)
        path = out_dir / f"image{_SUFFIXES[settings.format]}"
        image = _save(first, path, settings.format, settings.quality)
    thumbnails = [_thumbnail(first, edge, out_dir, settings) for edge in settings.thumbnail_sizes]
    metadata = {
        "width": image.width,
        "height": image.height,
        "format": settings.format,
        "size_bytes": image.size_bytes,
        "original": {
            "width": original_w,
            "height": original_h,
            "format": source_format,
            "size_bytes": size_bytes,
        },
        "has_alpha": first.mode == "RGBA" and settings.format == "webp",
        "animated": animated,
        "frames": frames,
        "blurhash": _blurhash(first, settings),
        "dominant_color": _dominant_color(first),
    }
    return ImageResult(image=image, thumbnails=thumbnails, metadata=metadata)


def _oriented_size(opened: Image.Image, width: int, height: int) -> tuple[int, int]:
    orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _ROTATED else (width, height)


def _keeps_animation(
    opened: Image.Image, frames: int, box: tuple[int, int], settings: ImageSettings
) -> bool:
    if settings.animation != "keep" or settings.format != "webp":
        return False
    out_w, out_h = _fit(opened.size, box)
    return frames * out_w * out_h <= settings.max_animation_pixels


def _fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled down (never up) to fit ``box``, aspect kept."""
    width, height = size
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _still(opened: Image.Image, box: tuple[int, int]) -> Image.Image:
    """The first frame, upright, in RGB or RGBA, fitted to ``box``."""
    if opened.format == "JPEG":
        width, height = _oriented_size(opened, *opened.size)
        target_w, target_h = _fit((width, height), box)
        if (width, height) != opened.size:
            target_w, target_h = target_h, target_w
        # The DCT scale that still covers the target: a 40 MP photo decodes at 1/2..1/8.
        opened.draft("RGB", (target_w, target_h))
    upright = ImageOps.exif_transpose(opened)
    frame = _normal_mode(upright)
    frame.thumbnail(box, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return frame


def _normal_mode(image: Image.Image) -> Image.Image:
    if _has_alpha(image):
        return image.convert("RGBA") if image.mode != "RGBA" else image
    return image.convert("RGB") if image.mode != "RGB" else image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )


def _save(image: Image.Image, path: Path, fmt: str, quality: int) -> Rendition:
    """Written without EXIF or XMP (nothing of the source's metadata but its colour profile)."""
    icc = image.info.get("icc_profile")
    options: dict[str, Any] = {"quality": quality}
    if icc:
        options["icc_profile"] = icc
    if fmt == "jpeg":
        image = _flatten(image)
        options.update(optimize=False, progressive=True)
    else:
        options.update(method=4)
    image.info = {}
    image.save(path, format=fmt.upper(), **options)
    return Rendition(
        path=path,
        width=image.width,
        height=image.height,
        content_type=_CONTENT_TYPES[fmt],
        size_bytes=path.stat().st_size,
    )


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: transparent pixels become white, not black."""
    if image.mode != "RGBA":
        return image
    white = Image.new("RGB", image.size, (255, 255, 255))
    white.paste(image, mask=image.getchannel("A"))
    return white


def _animated(
    opened: Image.Image, out_dir: Path, box: tuple[int, int], settings: ImageSettings
) -> tuple[Rendition, Image.Image]:
    size = _fit(opened.size, box)
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(opened):
        durations.append(int(frame.info.get("duration", 100)) or 100)
        frames.append(frame.convert("RGBA").resize(size, Image.Resampling.LANCZOS))
    path = out_dir / "image.webp"
    frames[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=int(opened.info.get("loop", 0)),
        quality=settings.quality,
        method=4,
    )
    rendition = Rendition(
        path=path,
        width=size[0],
        height=size[1],
        content_type="image/webp",
        size_bytes=path.stat().st_size,
    )
    return rendition, frames[0]


def _thumbnail(first: Image.Image, edge: int, out_dir: Path, settings: ImageSettings) -> Rendition:
    thumb = first.copy()
    thumb.thumbnail((edge, edge), Image.Resampling.LANCZOS, reducing_gap=2.0)
    path = out_dir / f"thumb_{edge}{_SUFFIXES[settings.format]}"
    return _save(thumb, path, settings.format, settings.thumbnail_quality)


def _blurhash(first: Image.Image, settings: ImageSettings) -> str:
    small = _flatten(first.copy())
    small.thumbnail((_BLURHASH_EDGE_PX, _BLURHASH_EDGE_PX), Image.Resampling.BILINEAR)
    return blurhash_of(small.convert("RGB"), *settings.blurhash_components)


def blurhash_of(rgb: Image.Image, x_components: int, y_components: int) -> str:
    """blurhash-python's C encoder fed the pixels as bytes: its own ``encode`` reads them
    through ``Image.getdata``, deprecated in Pillow 13 (a warning on every call)."""
    width, height = rgb.size
    pixels = _ffi.new("uint8_t[]", rgb.tobytes())
    destination = _ffi.new("char[]", 2 + 4 + (9 * 9 - 1) * 2 + 1)
    result = _lib.create_hash_from_pixels(
        _ffi.cast("int", x_components),
        _ffi.cast("int", y_components),
        _ffi.cast("int", width),
        _ffi.cast("int", height),
        pixels,
        _ffi.cast("size_t", width * 3),
        destination,
    )
    if result == _ffi.NULL:
        raise ValueError(f"blurhash: invalid components {x_components}x{y_components}")
    return str(_ffi.string(result).decode())


def _dominant_color(first: Image.Image) -> str:
    """The most common of 5 colours after quantising a 64 px copy, as ``#rrggbb``."""
    small = _flatten(first.copy())
    small.thumbnail((64, 64), Image.Resampling.BILINEAR)
    palette_image = small.convert("RGB").quantize(colors=5)
    counts = palette_image.getcolors() or [(1, 0)]
    _, found = max(counts)
    index = int(found)  # type: ignore[call-overload]  # a palette image counts indices
    palette = palette_image.getpalette() or [0, 0, 0]
    red, green, blue = palette[index * 3 : index * 3 + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"


def content_type_of(fmt: str) -> str:
    return _CONTENT_TYPES[fmt]
