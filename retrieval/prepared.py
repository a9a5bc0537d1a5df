"""A model prepared once, run every day: both towers through ONNX Runtime, images prepared in PIL and numpy.

Importing torch and open_clip costs seconds (6.8 s of an 8-photo `index` was importing open_clip); the towers
exported once per model run without either. `load_model` is the one place that chooses: a prepared model when
the run is on the CPU in fp32 or int8, prepared now (a visible step, once) if it was not yet, and the torch
encoder for everything else (bf16/fp16, CUDA, a model whose towers do not export, which gets a note).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.identity import ModelIdentity
from clipdex.retrieval.onnx_files import describes, holds, session
from clipdex.retrieval.onnx_image import IMAGE_PRECISIONS, export_image_tower, image_tower_path, run_image_tower
from clipdex.retrieval.onnx_text import OnnxTextEncoder, export_path
from clipdex.retrieval.preprocess import ImagePreprocess

# start(description, total) -> advance(n=1): how a long step shows itself (the API's progress callback)
Progress = Callable[[str, "int | None"], Callable[..., None]]


class PreparedModel:
    """The same methods as the torch Encoder that everyday commands use, without torch."""

    device = "cpu"
    runs_torch = False

    def __init__(self, image_tower, preprocess: ImagePreprocess, identity: ModelIdentity, precision: str) -> None:
        self.image_tower, self.preprocess, self.identity, self.precision = image_tower, preprocess, identity, precision
        self.notes: list[str] = []
        self._text: OnnxTextEncoder | None = None

    @property
    def text(self) -> OnnxTextEncoder:
        """The text tower, opened when a sentence is first embedded (indexing photos never needs it)."""
        if self._text is None:
            self._text = OnnxTextEncoder.for_model(self.identity)
            if self._text is None:
                raise ClipdexError(f"the prepared text tower of {self.identity.describe()} cannot be opened; "
                                   f"run `clipdex index` with the library's model to prepare it again")
        return self._text

    @property
    def tokenizer(self):
        return self.text.tokenizer

    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def logit_scale(self) -> float:
        return self.text.logit_scale

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return run_image_tower(self.image_tower, pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocess.batch([self.preprocess.pixels(im) for im in images]))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.text.encode_texts(list(texts))

    @classmethod
    def open(cls, name: str, pretrained: str | None, fingerprint: str, precision: str) -> "PreparedModel | None":
        """The prepared model for these weights, or None when it was not prepared (or its files do not say they
        hold exactly these weights: then it is made again, never trusted)."""
        path = image_tower_path(name, fingerprint, precision)
        if not path.is_file():
            return None
        try:
            tower = session(path)
            metadata = tower.get_modelmeta().custom_metadata_map
            identity = ModelIdentity(name, pretrained, fingerprint, int(metadata["clipdex_dim"]))
            if not describes(metadata, "image", identity) or metadata.get("clipdex_precision") != precision:
                return None
            preprocess = ImagePreprocess.from_json(metadata["clipdex_preprocess"])
        except Exception:  # a damaged file: prepared again
            return None
        if not holds(export_path(identity), "text", identity):  # both towers or neither: a missing or damaged
            return None  # text tower (checked by opening it only when its stamp changed) is prepared again
        return cls(tower, preprocess, identity, precision)


def runs_prepared(device: str, precision: str) -> bool:
    """Whether a run with these settings uses a prepared model: CPU (the default where no NVIDIA driver is loaded,
    told without importing torch), fp32 or int8."""
    if precision not in IMAGE_PRECISIONS:
        return False
    return device == "cpu" or (device == "auto" and not cuda_driver_loaded())


def cuda_driver_loaded() -> bool:
    return os.path.exists("/proc/driver/nvidia/version")


def prepare(encoder, precision: str = "fp32", progress: Progress | None = None) -> tuple[PreparedModel | None, list[str]]:
    """Export `encoder`'s towers for torch-free runs (each checked against torch); the prepared model, or None
    with the reason as a note (the torch encoder then does the work)."""
    from clipdex.retrieval.onnx_text import export_text_tower

    arch = getattr(encoder, "arch", encoder.identity.name)
    advance = progress(f"preparing {os.path.basename(arch)} for fast indexing and queries (once)", None) if progress else None
    try:
        text = export_text_tower(encoder)
        if text.path is None:
            return None, [text.note.replace("text queries will load torch", "this model runs through torch")]
        try:
            export_image_tower(encoder, precision)
        except ClipdexError as exc:
            return None, [f"this model runs through torch: {exc}"]
    finally:
        if advance:
            advance(1)
    identity = encoder.identity
    prepared = PreparedModel.open(identity.name, identity.pretrained, identity.fingerprint, precision)
    if prepared is None:
        return None, ["this model runs through torch: its prepared files could not be opened"]
    return prepared, []


def load_model(name: str, pretrained: str | None = None, device: str = "auto", precision: str = "fp32",
               progress: Progress | None = None, prepare_now: bool = True):
    """The model that embeds: prepared (no torch) whenever the settings allow, prepared first unless
    `prepare_now` is False, else the torch encoder."""
    from clipdex.retrieval.factory import choose_model

    if runs_prepared(device, precision):
        choice = choose_model(name, pretrained)
        prepared = PreparedModel.open(choice.name, choice.pretrained, choice.fingerprint, precision)
        if prepared is not None:
            return prepared
    from clipdex.retrieval.factory import load_encoder

    encoder = load_encoder(name, pretrained, device)
    if prepare_now and runs_prepared(encoder.device, precision):
        prepared, notes = prepare(encoder, precision, progress)
        if prepared is not None:
            return prepared
        encoder.notes += notes
    encoder.set_precision(precision)
    return encoder
