"""Every fast path gives the answer of the slow one: trimmed text, reduced precision, draft decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.factory import load_encoder
from retrieval.images import read_image

CAUSAL_CONFIGS = ("clipdex-tiny", "clipdex-small", "ViT-B-32")
TEXTS = ["a dog", "a small red circle left of a large green circle on a dotted background", "word " * 120, ""]


@pytest.mark.parametrize("name", CAUSAL_CONFIGS)
def test_trimmed_text_equals_untrimmed(name: str) -> None:
    encoder = load_encoder(name, None, "cpu")
    assert encoder.trims_text
    trimmed, full = encoder.encode_texts(TEXTS, trim=True), encoder.encode_texts(TEXTS, trim=False)
    assert np.abs(trimmed - full).max() < 1e-4


def test_bf16_embeddings_match_fp32(tiny) -> None:
    encoder = load_encoder("clipdex-small", None, "cpu")
    images = [Image.new("RGB", (80, 60), c) for c in ("red", "navy", "yellow")]
    reference = np.concatenate([encoder.encode_images(images), encoder.encode_texts(TEXTS)])
    encoder.set_precision("bf16")
    assert encoder.precision == "bf16", encoder.notes
    cast = np.concatenate([encoder.encode_images(images), encoder.encode_texts(TEXTS)])
    assert (reference * cast).sum(axis=1).min() >= 0.99


def test_draft_decoded_jpeg_embeds_like_full_decode(tmp_path: Path) -> None:
    """A camera-size JPEG decoded in draft mode gives nearly the embedding of a full decode."""
    encoder = load_encoder("clipdex-small", None, "cpu")
    rng = np.random.default_rng(0)
    big = Image.fromarray(np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((100, 100, 1), dtype=np.uint8)))
    path = tmp_path / "camera.jpg"
    big.save(path, quality=90)
    draft = read_image(path, encoder.image_size)
    full = read_image(path)
    assert draft.image.width < full.image.width / 4  # the draft really decoded at a reduced scale
    assert (draft.width, draft.height) == (full.width, full.height) == (4000, 3000)
    cosine = float((encoder.encode_images([draft.image]) * encoder.encode_images([full.image])).sum())
    assert cosine > 0.99
