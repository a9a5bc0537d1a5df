"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2) through LibRaw (rawpy).

A RAW file carries a preview JPEG the camera rendered; when it is at least as large as what is asked for, it is
both faster and closer to what the photographer saw than anything demosaiced here. Otherwise a half-size
demosaic (four times fewer pixels than the sensor, still far above a model's input). Either way the camera's
orientation is applied.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError

# LibRaw's orientation codes → the transpose that shows the image upright
_UPRIGHT = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


_demosaiced = False  # whether this process ran LibRaw's demosaic, and with it OpenMP's thread pool


def fork_is_safe() -> bool:
    """False once this process has demosaiced a RAW file: LibRaw runs that on OpenMP threads, and a child forked
    after them hangs at its first OpenMP region (decode workers must then start from a fresh process)."""
    return not _demosaiced


class NotRaw(ClipdexError):
    """LibRaw does not recognise the file: it may be an ordinary image under a RAW name."""


def is_raw(name: str) -> bool:
    return Path(name).suffix.lower() in config.RAW_EXTENSIONS


def read_raw(
    source: Path | str | IO[bytes], min_side: int | None, name: str, max_pixels: int
) -> tuple[Image.Image, int, int]:
    """(upright RGB image, width, height of the full upright photo); one-line errors for anything unreadable."""
    import rawpy

    global _demosaiced

    try:
        with rawpy.imread(source if isinstance(source, str) else str(source) if isinstance(source, Path)
                          else source) as raw:
            width, height = raw.sizes.width, raw.sizes.height
            if raw.sizes.raw_width * raw.sizes.raw_height > max_pixels:
                raise ClipdexError(f"{name}: RAW sensor too large ({raw.sizes.raw_width}×{raw.sizes.raw_height} "
                                   f"pixels, over {max_pixels:,}), refused")
            flip = raw.sizes.flip
            if flip in (5, 6):
                width, height = height, width
            image = _preview(raw, min_side or 0)
            if image is not None:
                image = image.transpose(_UPRIGHT[flip]) if flip in _UPRIGHT else image
            else:  # LibRaw applies the orientation itself
                _demosaiced = True
                image = Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
    except rawpy.LibRawFileUnsupportedError:
        raise NotRaw(f"{name} is not a RAW file LibRaw knows") from None
    except rawpy.LibRawError as exc:
        raise ClipdexError(f"cannot read RAW image {name}: {type(exc).__name__}: {exc}") from None
    return image.convert("RGB"), width, height


def _preview(raw, min_side: int) -> Image.Image | None:
    """The embedded preview, if there is one at least `min_side` on its shorter side."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except rawpy.LibRawError:  # none, or one LibRaw cannot unpack
        return None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = Image.open(io.BytesIO(thumb.data))
            image.load()
        else:
            image = Image.fromarray(thumb.data)
    except Exception:  # a damaged preview: the sensor data may still be fine
        return None
    return image if min(image.size) >= min_side else None
