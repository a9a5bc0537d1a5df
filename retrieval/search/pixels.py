"""Whether two photos that embed alike hold the same picture, checked on their pixels (duplicates.py).

CLIP calls two screenshots of different documents, or six yellow shapes, near-identical: it embeds what a photo
shows, not the photo. A pair CLIP finds close is a copy only when one photo's pixels are found in the other's:
the smaller (in area) is looked for inside the larger at a few scales (a crop keeps part of the frame, a resize or
re-encode all of it), first on small copies (the larger at COARSE pixels a side) to place it, then compared at
FINE pixels a side by the correlation of their colours (mean and contrast taken out, so a re-encode or a level
change still matches). The threshold was chosen on the planted set of bench/duplicates_quality.py.

An upscale is told from its original the same way: the larger one, brought down to the smaller's size and up
again, loses nothing an upscale ever had (its extra pixels were made from the smaller's)."""

from __future__ import annotations

import numpy as np
from PIL import Image

COARSE = 48
FINE = 320
SAME_PICTURE = 0.86  # correlation at FINE at which two photos hold the same picture (bench/duplicates_quality.py)
LOADED = 2048  # the largest side a photo is checked at
UPSCALE_FACTOR = 1.2  # an upscale is at least this much larger a side
UPSCALE_LOSS = 0.35  # of its round trip through half the size: upscales 0.21-0.28, originals 0.41-0.69 (bench)
_STEP = 0.985
_SCALES = tuple(_STEP ** n for n in range(47))  # the smaller one spans from all of the larger one down to half
_MARGIN = 6  # fine pixels around the coarse place
_REFINE = (0.985, 0.99, 0.995, 1.0, 1.005, 1.01, 1.015)  # scales around the coarse one


def load(path: str) -> Image.Image | None:
    """The photo upright in RGB at a size the checks need (None: unreadable now)."""
    from clipdex.retrieval.media.images import read_image

    try:
        image = read_image(path).image
    except Exception:  # gone or damaged since it was indexed: not confirmed
        return None
    image.thumbnail((LOADED, LOADED))  # (an upscale is told at its own pixels, up to this size)
    return image


def _array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(image.resize((max(1, size[0]), max(1, size[1])), Image.Resampling.BOX), dtype=np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    flat_a, flat_b = float(a.std()) < 1.0, float(b.std()) < 1.0
    if flat_a or flat_b:  # a flat picture is the same only as another flat one of its colour
        return 1.0 if flat_a and flat_b and float(np.abs(a.mean((0, 1)) - b.mean((0, 1))).max()) < 4.0 else 0.0
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _windows(big: np.ndarray, patch: np.ndarray) -> tuple[float, int, int]:
    """The best correlation of `patch` over every place in `big` (both H×W×channels), with where."""
    from numpy.lib.stride_tricks import sliding_window_view

    ph, pw = patch.shape[:2]
    views = sliding_window_view(big, patch.shape)[:, :, 0]  # (oy, ox, ph, pw, channels)
    p = patch - patch.mean()
    centred = views - views.mean(axis=(2, 3, 4), keepdims=True)
    top = np.einsum("yxhwc,hwc->yx", centred, p)
    spread = np.sqrt(np.einsum("yxhwc,yxhwc->yx", centred, centred) * float((p * p).sum())) + 1e-6
    score = top / spread
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return float(score[y, x]), int(y), int(x)


def _soften(values: np.ndarray) -> np.ndarray:
    """A 3×3 box average (edges wrap: the border pixels are few)."""
    return sum(np.roll(values, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9


def _edges(pixels: np.ndarray) -> np.ndarray:
    """Where the picture changes: the gradient magnitude of its grey levels, softened so that a pixel's shift (a
    resize's rounding) still agrees (H×W×1)."""
    grey = pixels.mean(axis=2)
    dy, dx = np.diff(grey, axis=0, append=grey[-1:]), np.diff(grey, axis=1, append=grey[:, -1:])
    return _soften(np.hypot(dx, dy))[:, :, None]


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The lower of the correlation of two same-sized pictures' colours and that of their edges."""
    return min(_correlation(a, b), _correlation(_edges(a), _edges(b)))


def similarity(a: Image.Image, b: Image.Image) -> float:
    """How well the smaller photo's pixels are found in the larger's (1.0: the same picture): placed on small
    copies, then at FINE pixels a side, within a few pixels and scales of that place, the lower of the correlation
    of their colours and that of their edges (where the picture changes: a circle and a square of one colour on
    one background agree in colour almost everywhere, and not in their edges)."""
    small, big = sorted((a, b), key=lambda im: im.width * im.height)
    if abs(small.width / small.height - big.width / big.height) < 0.02 * small.width / small.height:
        size = _fine_size(small, 1.0)  # the whole frame of both (a re-encode, a resize, an upscale)
        whole = _agreement(_array(big, size), _array(small, size))
        if whole >= SAME_PICTURE:
            return whole
    coarse = COARSE / max(big.size)
    big_coarse = _array(big, (round(big.width * coarse), round(big.height * coarse)))
    best = (-1.0, 1.0, 0, 0)
    for scale in _SCALES:  # the smaller one spans `scale` of the larger's width (or height, whichever binds)
        fit = min(big.width / small.width, big.height / small.height) * scale
        pw, ph = round(small.width * fit * coarse), round(small.height * fit * coarse)
        if pw < 4 or ph < 4:
            break
        found, y, x = _windows(big_coarse, _array(small, (pw, ph)))
        if found > best[0]:
            best = (found, fit, y, x)
    _, fit, y, x = best
    result = -1.0
    spans = [fit * step for step in _REFINE] + ([1.0] if abs(fit - 1.0) < 0.03 else [])  # (1.0: a crop as it was)
    for span in spans:  # the coarse scale, refined
        size = _fine_size(small, 1.0)
        fine = size[0] / (small.width * span)  # the larger one's pixels → fine pixels
        if size[0] > round(big.width * fine) or size[1] > round(big.height * fine):
            continue
        big_fine = _array(big, (round(big.width * fine), round(big.height * fine)))
        left, top = round(x / coarse * fine), round(y / coarse * fine)
        margin = _MARGIN
        y0, x0 = max(0, top - margin), max(0, left - margin)
        window = big_fine[y0 : min(big_fine.shape[0], top + size[1] + margin),
                          x0 : min(big_fine.shape[1], left + size[0] + margin)]
        if window.shape[0] < size[1] or window.shape[1] < size[0]:
            continue
        patch = _array(small, size)
        _, dy, dx = _windows(_edges(window), _edges(patch))
        placed = window[dy : dy + size[1], dx : dx + size[0]]
        result = max(result, _agreement(placed, patch))
    return result


def _fine_size(small: Image.Image, scale: float) -> tuple[int, int]:
    """Where two pictures are compared: FINE pixels a side, never more than the smaller one has."""
    side = min(FINE, max(small.size)) / max(small.size)
    return max(4, round(small.width * side)), max(4, round(small.height * side))


def _round_trip_loss(image: Image.Image, size: tuple[int, int]) -> float:
    back = image.resize(size, Image.Resampling.BOX).resize(image.size, Image.Resampling.BICUBIC)
    return float(np.abs(np.asarray(back, dtype=np.float32) - np.asarray(image, dtype=np.float32)).mean())


def is_upscale(big: Image.Image, small: Image.Image, big_size: tuple[int, int], small_size: tuple[int, int]) -> bool:
    """Whether `big` (`big_size` pixels; loaded as `big`) is only `small` (`small_size`) made larger: of one frame,
    at least UPSCALE_FACTOR larger, and brought down to the smaller's size and up again it loses almost nothing,
    next to what it loses through half that size (a real original loses its own detail at both)."""
    if not (small_size[0] and small_size[1] and big_size[0] and big_size[1]):
        return False
    ratio = small_size[0] / big_size[0]
    if ratio > 1 / UPSCALE_FACTOR or abs(small_size[1] / big_size[1] - ratio) > 0.02 * ratio:
        return False
    down = (max(1, round(big.width * ratio)), max(1, round(big.height * ratio)))
    half = (max(1, down[0] // 2), max(1, down[1] // 2))
    return _round_trip_loss(big, down) < UPSCALE_LOSS * max(1e-6, _round_trip_loss(big, half))
