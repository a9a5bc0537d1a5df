"""Reading the text in photos (OCR) with RapidOCR's PP-OCR models, which ship inside its wheel: offline,
Chinese and English.

Most photos hold no text, so each image first goes through the text detector alone at a small size (the gate);
only when it finds text is the image read properly: detection at a readable size, then the angle classifier
(upside-down lines) and recognition of the boxes found. Text too small to read at that size is not read at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.images import read_image


def require_ocr():
    """RapidOCR's engine class, or a one-line error saying why OCR cannot run here (checked before indexing, so a
    missing library never turns into one failure per photo)."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:  # OpenCV, its dependency, also needs the system's libGL
        raise ClipdexError(f"OCR cannot run: {exc}; reinstall clipdex (pip install -e .) to get rapidocr") from None
    return RapidOCR


class TextReader:
    """One OCR engine, loaded on first use (about half a second); not thread-safe, use one per worker."""

    def __init__(
        self, side: int = config.OCR_SIDE, gate_side: int = config.OCR_GATE_SIDE, threads: int | None = None
    ) -> None:
        self.side, self.gate_side, self.threads = side, gate_side, threads
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            RapidOCR = require_ocr()
            threads = {"intra_op_num_threads": self.threads} if self.threads else {}
            self._engine = RapidOCR(det_limit_type="max", det_limit_side_len=self.side,
                                    text_score=config.OCR_MIN_CONFIDENCE, **threads)
        return self._engine

    def read(self, path: Path | str | IO[bytes]) -> str:
        """The text in an image, one recognised line a line ("" when there is none). EXIF orientation is applied;
        camera-size JPEGs are decoded at a reduced scale (an eighth for the gate), never whole."""
        if not self.has_text(read_image(path, min_side=self.gate_side).image):
            return ""
        if not isinstance(path, (str, Path)):
            path.seek(0)
        image = read_image(path, min_side=self.side).image
        image.thumbnail((self.side, self.side))
        lines, _ = self.engine(image)
        return "\n".join(text.strip() for _box, text, _score in lines or () if text.strip())

    def has_text(self, image) -> bool:
        """The gate: does the detector, run on a small copy, see any text at all? Indexing asks it of the image it
        already decoded for the model, so a photo without text costs one small detection and no decode."""
        small = image.copy()
        small.thumbnail((self.gate_side, self.gate_side))
        boxes, _ = self.engine.text_det(np.ascontiguousarray(np.asarray(small.convert("RGB"))[:, :, ::-1]))
        return boxes is not None and len(boxes) > 0
