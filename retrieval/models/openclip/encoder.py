"""The dual encoder at inference time: pixels or sentences in, L2-normalised float32 vectors out."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.models.preprocess import from_open_clip

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = (*_DTYPES, "int8")  # int8: the image tower of the int8 model folder (ONNX Runtime); text stays fp32


class TransformPreprocess:
    """open_clip's own transform behind ImagePreprocess's two methods, for settings preprocess.py does not
    reproduce (its workers then import torch)."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def pixels(self, image: Image.Image) -> np.ndarray:
        return self.transform(image).numpy()

    def batch(self, views: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(views)

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.pixels(image)


class Encoder:
    """One loaded open_clip model with its preprocessing and tokenizer; its identity says what made it."""


    def __init__(
        self,
        model: torch.nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        device: str,
        identity: ModelIdentity,
        arch: str,
    ) -> None:
        self.model = model
        self.transform = transform  # open_clip's, tensors out: what training feeds the model
        self.preprocess = from_open_clip(model) or TransformPreprocess(transform)
        self.tokenizer = tokenizer
        self.device = device
        self.arch = arch
        self.precision = "fp32"
        self.image_tower = None  # an ONNX Runtime session when the precision is int8
        self.notes: list[str] = []
        self.identity = replace(identity, dim=self._output_dim())
        # Padding can be cut from a text query only when no kept position can see it (causal attention) and
        # the pooled token is the end-of-text one, which the cut keeps.
        self.trims_text = (
            getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) in ("argmax", "eos")
            and hasattr(model, "positional_embedding")
        )

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

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (int8 leaves them fp32: only the image tower's export is int8)."""
        return _DTYPES.get(self.precision, torch.float32)

    @torch.inference_mode()
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a batch already preprocessed to the model's input (N, 3, H, W) float32."""
        if self.image_tower is not None:
            return self.image_tower.encode_pixels(pixels)
        features = self.model.encode_image(torch.from_numpy(pixels).to(self.device, self.dtype), normalize=True)
        return _unit_float32(features)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocess.batch([self.preprocess.pixels(im) for im in images]))

    needs_language = False  # (open_clip's own tokenizers are told no language)

    def read_in(self, language: str | None) -> None:
        """Nothing to tell: texts are read as they are."""

    def load_runtime(self) -> None:
        """torch is in memory already."""

    def use_threads(self, threads: int) -> None:
        torch.set_num_threads(threads)

    def ready_for_images(self, images: int | None = None) -> None:
        """The model is in memory already (a model folder opens its image tower here)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of the text with its start and end tokens, before truncation (0 when the tokenizer won't say)."""
        encode = getattr(self.tokenizer, "encode", None)
        return len(encode(text)) + 2 if encode else 0

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], trim: bool = True) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        if trim and self.trims_text:
            features = self._encode_trimmed(tokens)
        else:
            features = self.model.encode_text(tokens, normalize=True)
        return _unit_float32(features)

    def _encode_trimmed(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's text forward over only the positions up to the last end-of-text token.

        A one-line query uses a few of the 77 positions; the rest is padding that, under a causal mask, no
        kept position attends to. Same result, a fraction of the work."""
        model = self.model
        eos = getattr(model, "text_eos_id", None)
        ends = (tokens == eos).int().argmax(dim=-1) if model.text_pool_type == "eos" else tokens.argmax(dim=-1)
        return self.text_forward(tokens[:, : int(ends.max()) + 1])

    @property
    def logit_scale(self) -> float:
        """The temperature CLIP's softmax over captions was trained at (exp of the learnt log scale)."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().exp()) if isinstance(scale, torch.Tensor) else config.DEFAULT_LOGIT_SCALE

    def text_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit text vectors for tokens of any length up to the context (the graph the ONNX export traces)."""
        from open_clip.transformer import text_global_pool

        model = self.model
        length = tokens.shape[1]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        pooled = text_global_pool(model.ln_final(x), tokens, model.text_pool_type, getattr(model, "text_eos_id", None))
        projection = model.text_projection
        if projection is not None:
            pooled = projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection
        return torch.nn.functional.normalize(pooled, dim=-1)

    def set_precision(self, precision: str) -> None:
        """Cast the weights (not autocast, which re-casts every call and is slower than fp32 on CPU), or for int8
        run the image tower's int8 export, keeping the change only when its embeddings match fp32 to
        config.MIN_PRECISION_COSINE on a probe batch."""
        if precision not in PRECISIONS:
            raise ClipdexError(f"unknown precision {precision!r}: use fp32, bf16, int8 (CPU) or fp16 (CUDA)")
        if precision == self.precision:
            return
        if precision == "fp16" and self.device == "cpu":
            raise ClipdexError("fp16 is for CUDA; on CPU use --precision bf16 or int8")
        if precision == "int8" and self.device != "cpu":
            raise ClipdexError("int8 is for the CPU; on CUDA use --precision fp16")
        self._use("fp32")
        if precision == "fp32":  # back to the reference itself: nothing to compare
            return
        generator = torch.Generator().manual_seed(0)
        probe = torch.rand(4, 3, self.image_size, self.image_size, generator=generator).numpy()
        texts = ["a photo of a dog on a beach", "two red circles", "a city at night", "snow"]
        reference = np.concatenate([self.encode_pixels(probe), self.encode_texts(texts)])
        try:
            self._use(precision)
        except ClipdexError as exc:
            self.notes.append(f"{exc}; using fp32")
            return
        cast = np.concatenate([self.encode_pixels(probe), self.encode_texts(texts)])
        worst = float((reference * cast).sum(axis=1).min())
        if worst < config.MIN_PRECISION_COSINE:
            self._use("fp32")
            self.notes.append(f"{precision} embeddings matched fp32 only to cosine {worst:.4f}; using fp32")

    def _use(self, precision: str) -> None:
        if precision == "int8":
            from clipdex.retrieval.models.prepared import prepare_folder
            from clipdex.retrieval.models.model_folder import FolderModel

            try:
                folder = prepare_folder(self, "int8")
            except ClipdexError as exc:
                raise ClipdexError(f"the int8 image tower cannot be made: {exc}") from None
            self.image_tower = FolderModel(folder, self.identity).image
        else:
            self.image_tower = None
            self.model.to(_DTYPES[precision])
        self.precision = precision


def _unit_float32(features: "torch.Tensor") -> np.ndarray:
    """Unit rows in float32: normalised again after the cast, since a bf16 or fp16 norm is only good to about
    0.5 % (the store keeps unit vectors only, to ± 0.001)."""
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

