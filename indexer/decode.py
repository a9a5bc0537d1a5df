"""Decoding in worker processes: each file becomes model-ready pixels plus the metadata the store keeps (its
sha256 included, hashed from the very bytes decoded, so a new file is read once), or the reason it could not be
read. A bad file is an answer, never an exception that stops the run."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.images import read_image
from clipdex.retrieval.video import is_video, read_frames


@dataclass
class Decoded:
    position: int
    pixels: torch.Tensor | None
    width: int = 0
    height: int = 0
    taken_at: float | None = None
    error: str | None = None
    sha256: str | None = None
    may_have_text: bool | None = None  # the OCR gate's answer (None: not asked)
    times: list[float] | None = None  # a video: the moment of each frame in `pixels` (one row each)


_gate = None  # one small text detector per decode process, made on first use


def _may_have_text(image) -> bool:
    global _gate
    if _gate is None:
        from clipdex.retrieval.ocr import TextReader

        _gate = TextReader(threads=1)  # one core, like the rest of a decode worker
    return _gate.has_text(image)


class DecodeDataset(Dataset):
    def __init__(
        self, paths: Sequence[str], preprocess: Callable, min_side: int, text_gate: bool = False, turn=None
    ) -> None:
        """turn: an Event set while decoding may run (it waits while the encoder has the cores)."""
        self.paths, self.preprocess, self.min_side, self.text_gate = paths, preprocess, min_side, text_gate
        self.turn = turn

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> Decoded:
        path = self.paths[position]
        if self.turn is not None:
            self.turn.wait()
        if is_video(path):
            return self._video(position, path)
        try:
            with open(path, "rb") as f:
                too_large = os.fstat(f.fileno()).st_size > config.MAX_IMAGE_FILE_BYTES
                data = b"" if too_large else f.read(config.MAX_IMAGE_FILE_BYTES + 1)
            if too_large or len(data) > config.MAX_IMAGE_FILE_BYTES:
                return Decoded(position, None, error=f"{path}: file larger than "
                               f"{config.MAX_IMAGE_FILE_BYTES // 2**20} MB, refused before reading")
        except OSError as exc:
            return Decoded(position, None, error=f"cannot read {path}: {exc.strerror or exc}")
        try:
            decoded = read_image(io.BytesIO(data), max(self.min_side, config.OCR_GATE_SIDE * self.text_gate), name=path)
            pixels = self.preprocess(decoded.image)
            may_have_text = _may_have_text(decoded.image) if self.text_gate else None
        except ClipdexError as exc:
            return Decoded(position, None, error=str(exc))
        except Exception as exc:  # a transform failing on a strange image is still one bad file
            return Decoded(position, None, error=f"cannot preprocess {path}: {exc}")
        sha256 = hashlib.sha256(data).hexdigest()
        return Decoded(position, pixels, decoded.width, decoded.height, decoded.taken_at, sha256=sha256,
                       may_have_text=may_have_text)


    def _video(self, position: int, path: str) -> Decoded:
        """A video: its sampled frames, preprocessed, one row each; hashed as it is read from disk (videos are
        too large to hold in memory as photos are)."""
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            video = read_frames(path, self.min_side)
            pixels = torch.stack([self.preprocess(frame) for frame in video.frames])
        except OSError as exc:
            return Decoded(position, None, error=f"cannot read {path}: {exc.strerror or exc}")
        except ClipdexError as exc:
            return Decoded(position, None, error=str(exc))
        return Decoded(position, pixels, video.width, video.height, video.taken_at, sha256=digest.hexdigest(),
                       may_have_text=False, times=video.times)


def collate(batch: list[Decoded]) -> list[Decoded]:
    return batch


def single_thread_worker(_worker_id: int) -> None:
    """Decode workers each take one core; torch's own thread pool inside them would only fight the encoder."""
    torch.set_num_threads(1)
