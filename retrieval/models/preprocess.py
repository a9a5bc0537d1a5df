"""A model's image preprocessing in PIL and numpy, the same pixels open_clip's torchvision transform gives.

Decode workers and every everyday command prepare images without importing torch (≈ 5 s of a cold start). The
steps are torchvision's own for the settings open_clip uses at inference: shortest side resized to the input size
(its size arithmetic, through PIL, as torchvision does for PIL images), centre crop, scale to [0, 1], normalise.
Workers hand over the cropped uint8 pixels (a quarter of float32's bytes); normalising happens once per batch.
An object with the same two methods wraps open_clip's own transform for models whose settings differ (encoder.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from PIL import Image

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_RESIZE_MODES = ("shortest", "squash")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's defaults (OpenAI CLIP's training set)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePreprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The model's view of an RGB image, resized and cropped: (size, size, 3) uint8 (what a worker sends)."""
        width, height = image.size
        if self.resize_mode == "squash":
            image = image.resize((self.size, self.size), _FILTERS[self.interpolation])
        else:
            short, long = min(width, height), max(width, height)
            scaled = (self.size, int(self.size * long / short))  # torchvision's arithmetic (truncation)
            new = scaled if width <= height else scaled[::-1]
            if new != (width, height):
                image = image.resize(new, _FILTERS[self.interpolation])
            left = int(round((image.width - self.size) / 2.0))
            top = int(round((image.height - self.size) / 2.0))
            image = image.crop((left, top, left + self.size, top + self.size))
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def batch(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Views from `pixels` → the model's input, (N, 3, size, size) float32, normalised."""
        pixels = np.stack(views).astype(np.float32) * np.float32(1 / 255)
        pixels -= np.asarray(self.mean, dtype=np.float32)
        pixels /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One image → (3, size, size) float32."""
        return self.batch([self.pixels(image)])[0]

    def to_json(self) -> str:
        """The preprocess_cfg.json of a model folder (Immich's keys)."""
        return json.dumps({**asdict(self), "size": [self.size, self.size]})

    @classmethod
    def from_settings(cls, settings: dict) -> "ImagePreprocess | None":
        """Preprocessing from open_clip's settings (a preprocess_cfg.json, or a model's), open_clip's defaults
        where one is missing; None when they ask for something not reproduced here."""
        size = settings.get("size", 224)  # (a size of 0 is no size: refused, never read as the default)
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or size[0] != size[1]:
                return None
            size = size[0]
        mean, std = settings.get("mean") or OPENAI_MEAN, settings.get("std") or OPENAI_STD
        mean = (mean,) * 3 if isinstance(mean, (int, float)) else mean
        std = (std,) * 3 if isinstance(std, (int, float)) else std
        interpolation = settings.get("interpolation") or "bicubic"
        mode = settings.get("resize_mode") or "shortest"
        try:
            found = cls(int(size), tuple(map(float, mean)), tuple(map(float, std)), str(interpolation), str(mode))
        except (TypeError, ValueError, OverflowError):  # (Infinity)
            return None
        usable = (0 < found.size <= 4096 and len(found.mean) == 3 and len(found.std) == 3 and all(found.std)
                  and found.interpolation in _FILTERS and found.resize_mode in _RESIZE_MODES)
        return found if usable else None


def from_open_clip(model) -> ImagePreprocess | None:
    """The preprocessing of an open_clip model at inference, or None when it uses settings not reproduced here
    (then its images are prepared by open_clip itself, with torch)."""
    from open_clip import get_model_preprocess_cfg

    return ImagePreprocess.from_settings(get_model_preprocess_cfg(model))
