"""Decoding, in worker processes that never import torch: each file becomes the model's view of it (uint8 pixels,
normalised later a batch at a time) plus the metadata the store keeps (its sha256 included, hashed from the very
bytes decoded, so a new file is read once), or the reason it could not be read. A bad file is an answer, never an
exception that stops the run; a FIFO or device under a photo's name is refused without blocking."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import warnings
from dataclasses import dataclass

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.digest import open_regular
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.media.video import is_video, read_frames


@dataclass
class Decoded:
    position: int
    pixels: np.ndarray | None  # a photo's view; a video's views, one row a frame
    width: int = 0
    height: int = 0
    taken_at: float | None = None
    error: str | None = None
    sha256: str | None = None
    may_have_text: bool | None = None  # the OCR gate's answer (None: not asked)
    times: list[float] | None = None  # a video: the moment of each frame in `pixels` (one row each)


@dataclass(frozen=True)
class DecodeSettings:
    preprocess: object  # ImagePreprocess, or encoder.TransformPreprocess: `pixels(image)` gives a view
    min_side: int
    text_gate: bool = False  # also ask the OCR gate whether the image may hold text (index --ocr)


_gate = None  # one small text detector per decode process, made on first use


def _may_have_text(image) -> bool:
    global _gate
    if _gate is None:
        from clipdex.retrieval.media.ocr import TextReader

        _gate = TextReader(threads=1)  # one core, like the rest of a decode worker
    return _gate.has_text(image)


def decode_file(position: int, path: str, settings: DecodeSettings) -> Decoded:
    if is_video(path):
        return _video(position, path, settings)
    limit = config.MAX_IMAGE_FILE_BYTES
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            # read what fstat says is there (a limit-sized buffer costs ~2.5 ms a file), one byte more to see growth
            data = b"" if size > limit else f.read(size + 1)
        if size > limit or len(data) > limit:
            return Decoded(position, None, error=f"{path}: file larger than {limit // 2**20} MB, refused before "
                                                 f"reading")
    except OSError as exc:
        return Decoded(position, None, error=f"cannot read {path}: {exc.strerror or exc}")
    try:
        decoded = read_image(io.BytesIO(data), max(settings.min_side, config.OCR_GATE_SIDE * settings.text_gate),
                             name=path)
        pixels = settings.preprocess.pixels(decoded.image)
        may_have_text = _may_have_text(decoded.image) if settings.text_gate else None
    except ClipdexError as exc:
        return Decoded(position, None, error=str(exc))
    except Exception as exc:  # a transform failing on a strange image is still one bad file
        return Decoded(position, None, error=f"cannot preprocess {path}: {exc}")
    sha256 = hashlib.sha256(data).hexdigest()
    return Decoded(position, pixels, decoded.width, decoded.height, decoded.taken_at, sha256=sha256,
                   may_have_text=may_have_text)


def _video(position: int, path: str, settings: DecodeSettings) -> Decoded:
    """A video: its sampled frames, one view a row; hashed as it is read from disk (videos are too large to hold
    in memory as photos are)."""
    try:
        digest = hashlib.sha256()
        with open_regular(path) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        video = read_frames(path, settings.min_side)
        pixels = np.stack([settings.preprocess.pixels(frame) for frame in video.frames])
    except OSError as exc:
        return Decoded(position, None, error=f"cannot read {path}: {exc.strerror or exc}")
    except ClipdexError as exc:
        return Decoded(position, None, error=str(exc))
    return Decoded(position, pixels, video.width, video.height, video.taken_at, sha256=digest.hexdigest(),
                   may_have_text=False, times=video.times)


# A worker process's settings and its turn (an Event set while decoding may run: it waits while the encoder has
# the cores), given once when the worker starts rather than with every file.
_worker: tuple[DecodeSettings, object] | None = None


def start_worker(settings: DecodeSettings, turn) -> None:
    """In a new decode worker: Ctrl-C is the parent's to handle (it ends the workers with SIGTERM), and both
    signals, blocked while the worker was forked, are let through again.

    rawpy warns (five lines, once per worker) in any forked process, since an OpenMP runtime started before a
    fork can deadlock the child; workers are forked only while that cannot be (raw.fork_is_safe), so the
    warning is silenced in them."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked while it was forked
    warnings.filterwarnings("ignore", message="rawpy is being used in a process created by multiprocessing")
    _worker = (settings, turn)


def decode_in_worker(position: int, path: str) -> Decoded:
    settings, turn = _worker
    if turn is not None:
        turn.wait()
    return decode_file(position, path, settings)
