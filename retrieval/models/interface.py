"""What every part of clipdex asks of a model, whichever runtime runs it: a model folder on ONNX Runtime
(`model_folder.FolderModel`) or open_clip in torch (`openclip/encoder.Encoder`). Which one runs is decided in
one place, `loading.py`; everything else holds an `ImageTextEncoder` and never asks which it is."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from clipdex.retrieval.models.identity import ModelIdentity


class ImageTextEncoder(Protocol):
    identity: ModelIdentity  # which model: what a library is bound to
    device: str  # "cpu" or "cuda"
    notes: list[str]  # what the user should know about how it runs (a precision it could not use)

    @property
    def image_size(self) -> int: ...

    @property
    def context_length(self) -> int: ...

    @property
    def logit_scale(self) -> float: ...

    @property
    def preprocess(self): ...  # pixels(image) and batch(views): the decode workers' half of encoding

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...

    @property
    def needs_language(self) -> bool: ...  # its text tower must be told the language of a text (NLLB)

    def read_in(self, language: str | None) -> None: ...  # texts from now on are in this FLORES-200 language

    def load_runtime(self) -> None: ...  # import the runtime now, where a Ctrl-C lands as an interrupt

    def ready_for_images(self, images: int | None = None) -> None: ...  # open the image tower for about N images

    def use_threads(self, threads: int) -> None: ...  # one process among several (a Ray actor): this many threads
