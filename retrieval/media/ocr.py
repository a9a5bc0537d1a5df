"""Reading the text in photos (OCR) with RapidOCR's PP-OCR models, which ship inside its wheel: offline,
Chinese and English.

Most photos hold no text, so each image first goes through the text detector alone at a small size (the gate);
only when it finds text is the image read properly: detection at a readable size, then the angle classifier
(upside-down lines) and recognition of the boxes found. Text too small to read at that size is not read at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.images import read_image


def require_ocr():
    """RapidOCR's engine class, or a one-line error saying why OCR cannot run here (checked before indexing, so a
    missing library never turns into one failure per photo)."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:  # OpenCV, its dependency, also needs the system's libGL
        raise ClipdexError(f"OCR needs the ocr extra: pip install 'clipdex[ocr]' ({exc})") from None
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
        """The gate: does the detector, run on a small copy, see a line of text? Indexing asks it of the image it
        already decoded for the model, so a photo without text costs one small detection and no decode. A box
        counts when it is shaped like a line of words (config.OCR_GATE_*: measured with bench/ocr_gate.py, where
        the boxes on flat shapes, stripes and dot patterns are squarish or thin and score low)."""
        return any(
            box.height >= config.OCR_GATE_MIN_HEIGHT and box.width >= config.OCR_GATE_MIN_ASPECT * box.height
            and box.score >= config.OCR_GATE_MIN_SCORE
            for box in self.boxes(image)
        )

    def boxes(self, image) -> list["TextBox"]:
        """The boxes the detector finds on the gate's small copy, with their scores: RapidOCR's TextDetector
        call, unrolled because it drops the scores (which its post-processing computes)."""
        small = image.copy()
        small.thumbnail((self.gate_side, self.gate_side))
        bgr = np.ascontiguousarray(np.asarray(small.convert("RGB"))[:, :, ::-1])
        detector = self.engine.text_det
        shape = bgr.shape[:2]
        detector.preprocess_op = detector.get_preprocess(max(shape))
        found, scores = detector.postprocess_op(detector.infer(detector.preprocess_op(bgr))[0], shape)
        boxes = []
        for corners, score in zip(found, scores):
            corners = detector.clip_det_res(detector.order_points_clockwise(corners), *shape)
            sides = (float(np.linalg.norm(corners[0] - corners[1])), float(np.linalg.norm(corners[0] - corners[3])))
            if min(sides) > 3:  # as TextDetector filters them
                boxes.append(TextBox(min(sides), max(sides), float(score), corners))
        return boxes


@dataclass(frozen=True)
class TextBox:
    """A detected box in the gate's copy: its short side (a line's height), long side, score, corners."""

    height: float
    width: float
    score: float
    corners: np.ndarray
