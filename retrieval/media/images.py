"""Opening one image the way every part of clipdex sees it: upright (EXIF), RGB, first frame, bomb-checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from clipdex.retrieval import config
from clipdex.retrieval.digest import NotRegularFile, open_regular
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.raw import NotRaw, is_raw, read_raw

_heif_ready = False


def register_heif() -> None:
    """HEIC/HEIF from phones, registered with Pillow on first use rather than on import."""
    global _heif_ready
    if not _heif_ready:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _heif_ready = True

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_ORIENTATION = 0x0112
_SIDEWAYS = {5, 6, 7, 8}  # orientations that swap width and height


class ImageTooLarge(Exception):
    def __init__(self, width: int, height: int) -> None:
        super().__init__(f"{width}×{height}")
        self.width, self.height = width, height


@dataclass
class DecodedImage:
    image: Image.Image
    width: int  # of the upright original, before any draft reduction
    height: int
    taken_at: float | None  # EXIF DateTimeOriginal as a POSIX time, when present and sane


def _exif(im: Image.Image) -> Image.Exif:
    """The image's EXIF, or none at all when it is damaged: bad metadata must not cost a good picture."""
    try:
        exif = im.getexif()
        exif.get_ifd(_EXIF_IFD)
        return exif
    except Exception:
        return Image.Exif()


def _taken_at(exif: Image.Exif) -> float | None:
    raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)
    try:
        return datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # an orientation tag Pillow cannot apply: keep the pixels as stored
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB. Pillow's own conversion clips 16-bit grey at 255 (a nearly white picture), so those are scaled."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.getextrema()[1] > 255):
        values = np.asarray(im, dtype=np.float32) / 257.0
        im = Image.fromarray(values.clip(0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def open_media(path: str | Path) -> IO[bytes]:
    """A photo or video opened through the regular-file check: a FIFO put where one was never blocks a reader."""
    try:
        return open_regular(path)
    except NotRegularFile:
        raise ClipdexError(f"{path}: not a regular file (a FIFO, socket or device)") from None


def read_image(
    path: Path | IO[bytes],
    min_side: int | None = None,
    name: str | None = None,
    max_pixels: int = config.MAX_IMAGE_PIXELS,
) -> DecodedImage:
    """Decode `path` (or an open binary stream, e.g. an upload, called `name` in errors); with `min_side`, JPEGs
    decode at a reduced scale that still covers it (draft mode), several times faster for camera-size files and
    nothing the model could see is lost.

    The pixel count is checked from the header, before any pixel is decoded: a small file can declare a huge
    canvas, and decoding it is what costs the memory. (Pillow's own, process-wide limit stays as it is; it only
    matters above clipdex's cap.)"""
    name = name or (str(path) if isinstance(path, (str, Path)) else "the image")  # never "<_io.BytesIO at 0x…>"
    if isinstance(path, (str, Path)):
        with open_media(path) as stream:
            return read_image(stream, min_side, name, max_pixels)
    if is_raw(name):
        try:
            return _read_raw(path, min_side, name, max_pixels)
        except NotRaw:  # e.g. a JPEG saved under a RAW name: read it as what it is
            if not isinstance(path, (str, Path)):
                path.seek(0)
    register_heif()
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLarge(width, height)
            exif = _exif(im)
            if exif.get(_ORIENTATION) in _SIDEWAYS:
                width, height = height, width
            if min_side and im.format == "JPEG":
                im.draft("RGB", (min_side, min_side))
            image = _to_rgb(_upright(im))
            return DecodedImage(image, width, height, _taken_at(exif))
    except ImageTooLarge as exc:
        raise ClipdexError(
            f"{name}: image too large ({exc.width}×{exc.height} pixels, over {max_pixels:,}), refused"
        ) from None
    except Image.DecompressionBombError:
        raise ClipdexError(f"{name}: image too large (over {max_pixels:,} pixels), refused") from None
    except Exception as exc:  # Pillow raises many types for damaged files; each one means "unreadable"
        reason = str(exc).replace(f" {path!r}", "")  # Pillow names a stream by its repr: "<_io.BytesIO at 0x…>"
        raise ClipdexError(f"cannot read image {name}: {reason}") from None


def _read_raw(path: Path | IO[bytes], min_side: int | None, name: str, max_pixels: int) -> DecodedImage:
    image, width, height = read_raw(path, min_side, name, max_pixels)
    try:  # the date: RAW formats built on TIFF carry EXIF that Pillow reads without decoding pixels
        if not isinstance(path, (str, Path)):
            path.seek(0)
        with Image.open(path) as im:
            taken = _taken_at(_exif(im))
    except Exception:
        taken = None
    return DecodedImage(image, width, height, taken)


def open_image(path: Path | IO[bytes], min_side: int | None = None) -> Image.Image:
    return read_image(path, min_side).image
