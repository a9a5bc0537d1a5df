"""Model loading: project configs through open_clip's own factory, checkpoints, and clear offline failures."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.checkpoint import CheckpointInfo, save_checkpoint
from clipdex.retrieval.models.hub import hub_reachable
from clipdex.retrieval.models.openclip.factory import load_encoder
from tests.helpers import clipdex_command


def test_tiny_encodes_to_unit_vectors_of_its_dimension(tiny) -> None:
    images = [Image.new("RGB", (120, 90), colour) for colour in ("red", "blue", "white")]
    image_vectors = tiny.encode_images(images)
    text_vectors = tiny.encode_texts(["a red circle", "a blue square on a striped background"])
    assert image_vectors.shape == (3, 64) and text_vectors.shape == (2, 64)
    assert image_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1, atol=1e-5)
    assert not np.allclose(image_vectors[0], image_vectors[1])
    assert tiny.identity.dim == 64 and tiny.identity.fingerprint == "init:0"


def test_project_configs_are_open_clip_models() -> None:
    import open_clip

    load_encoder("clipdex-tiny", None, "cpu")  # registers them
    assert {"clipdex-tiny", "clipdex-small", "ViT-B-32"} <= set(open_clip.list_models())


def test_checkpoint_round_trip_gives_identical_embeddings(tiny, tmp_path: Path) -> None:
    import open_clip

    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, tiny.model, CheckpointInfo("clipdex-tiny", open_clip.get_model_config("clipdex-tiny")))
    loaded = load_encoder(str(path), None, "cpu")
    texts = ["two green stars on a black background"]
    np.testing.assert_array_equal(loaded.encode_texts(texts), tiny.encode_texts(texts))
    image = [Image.new("RGB", (64, 64), "purple")]
    np.testing.assert_array_equal(loaded.encode_images(image), tiny.encode_images(image))
    assert loaded.identity.fingerprint.startswith("sha256:")


def test_unknown_model_and_tag_are_one_line_errors() -> None:
    with pytest.raises(ClipdexError, match="unknown model"):
        load_encoder("no-such-model", None, "cpu")
    with pytest.raises(ClipdexError, match="neither a pretrained tag"):
        load_encoder("clipdex-tiny", "no-such-tag", "cpu")
    with pytest.raises(ClipdexError, match="checkpoint not found"):
        load_encoder("missing.safetensors", None, "cpu")


def test_hub_probe_gives_up_quickly() -> None:
    started = time.perf_counter()
    assert hub_reachable("https://host.invalid", seconds=1.0) is False
    assert time.perf_counter() - started < 5


@pytest.mark.slow
def test_offline_open_clip_weights_fail_in_one_clear_line(tmp_path: Path) -> None:
    """open_clip's default pretrained model without network or cache: one line, no traceback, no 46 s of retries."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run(
        clipdex_command(tmp_path / "lib", "index", str(tmp_path), "--model", "ViT-B-32"),
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: cannot get weights for ViT-B-32 (laion2b_s34b_b79k)"), result.stderr
    assert "--model sample" in result.stderr
