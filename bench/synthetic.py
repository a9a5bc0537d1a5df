"""Synthetic embeddings for index benchmarks, shaped like real ones: unit vectors around random centres, spread
mostly within a low-dimensional subspace (real embeddings have an intrinsic dimension far below 512; isotropic
noise in 512-d makes every neighbour equidistant, which no index, exact or not, can rank meaningfully).
Deterministic per seed, so a 10M set can be regenerated chunk by chunk instead of held in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

FIXED_SEED = 12345
INTRINSIC_DIM = 48


def clustered(n: int, dim: int, seed: int, clusters: int = 2000) -> np.ndarray:
    fixed = np.random.default_rng(FIXED_SEED)
    centres = fixed.standard_normal((clusters, dim)).astype(np.float32)
    basis = fixed.standard_normal((INTRINSIC_DIM, dim)).astype(np.float32) / np.sqrt(INTRINSIC_DIM)
    rng = np.random.default_rng(seed)
    spread = 0.7 * rng.standard_normal((n, INTRINSIC_DIM), dtype=np.float32) @ basis  # ~0.7 of a centre's norm
    x = centres[rng.integers(0, clusters, n)] + spread + 0.15 * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill_library(library, dim: int, images: int, chunk: int = 10_000, seed: int = 0) -> None:
    """`images` rows of clustered unit vectors shaped like real embeddings (an approximate index is tuned on them
    as on a real library), written as indexing writes them: a transaction a chunk."""
    from clipdex.retrieval.storage.store import IMAGE, NewItem

    for start in range(0, images, chunk):
        vectors = clustered(min(chunk, images - start), dim, seed=seed + start)
        library.store.write(inserts=[NewItem(IMAGE, f"/photos/{start + i:07d}.jpg", v) for i, v in enumerate(vectors)])


def camera_jpegs(count: int) -> Path:
    """A folder of exactly `count` 4000×3000 q90 JPEGs (smooth colour fields with noise: they compress like
    photos, ~3 MB), made once under $TMPDIR and reused."""
    from PIL import Image

    folder = Path(tempfile.gettempdir()) / f"clipdex-bench-jpegs-{count}"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        noise_seed = int(rng.integers(0, 2**31))
        path = folder / f"{i:04d}.jpg"
        if not path.exists():
            big = Image.fromarray(small).resize((4000, 3000), Image.Resampling.BICUBIC)
            noise = np.random.default_rng(noise_seed).integers(-12, 12, (3000, 4000, 3), dtype=np.int16)
            pixels = np.clip(np.asarray(big, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
    return folder
