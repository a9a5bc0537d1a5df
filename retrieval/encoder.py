"""The dual encoder at inference time: pixels or sentences in, L2-normalised float32 vectors out."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from retrieval.factory import ModelIdentity


class Encoder:
    """One loaded open_clip model with its preprocessing and tokenizer; its identity says what made it."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        device: str,
        identity: ModelIdentity,
        arch: str,
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.arch = arch
        self.identity = replace(identity, dim=self._output_dim())

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))

    def _output_dim(self) -> int:
        dim = getattr(self.model.visual, "output_dim", None)
        return int(dim) if dim else int(self.encode_texts([""]).shape[1])

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a batch already preprocessed to the model's input (N, 3, H, W)."""
        features = self.model.encode_image(pixels.to(self.device), normalize=True)
        return features.float().cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(torch.stack([self.preprocess(im) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()
