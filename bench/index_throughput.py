"""Indexing throughput on camera-size JPEGs: naive loop vs encoder alone vs the real `index` pipeline,
measured side by side in one run, plus bf16 against fp32 and the cosine between their embeddings.

    python bench/index_throughput.py [--images 64] [--batch-size 32] [--model ViT-B-32]

Random weights (speed does not depend on them). The JPEGs (4000×3000, q90) are generated once into
$TMPDIR/clipdex-bench-jpegs. The text tower is exported before timing (indexing does that once per model).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipdex.api import export_text_tower  # noqa: E402
from clipdex.indexer.pipeline import index_folders  # noqa: E402
from clipdex.retrieval.factory import load_encoder  # noqa: E402
from clipdex.retrieval.library import Library  # noqa: E402


def camera_jpegs(count: int) -> Path:
    folder = Path(tempfile.gettempdir()) / "clipdex-bench-jpegs"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"{i:04d}.jpg"
        if not path.exists():  # smooth colour fields with noise: compresses like a photo (~2–4 MB)
            small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
            big = Image.fromarray(small).resize((4000, 3000), Image.Resampling.BICUBIC)
            noise = rng.integers(-12, 12, (3000, 4000, 3), dtype=np.int16)
            Image.fromarray(np.clip(np.asarray(big, dtype=np.int16) + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
    return folder


def encoder_only(encoder, batch_size: int, batches: int = 3) -> float:
    pixels = torch.rand(batch_size, 3, encoder.image_size, encoder.image_size)
    encoder.encode_pixels(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batch_size * batches / (time.perf_counter() - started)


def naive(encoder, files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        with Image.open(path) as im:
            image = im.convert("RGB")
        encoder.encode_images([image])
    return len(files) / (time.perf_counter() - started)


def pipeline(encoder, folder: Path, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "lib", create=True)
        report = index_folders(library, [folder], encoder, batch_size=batch_size)
        assert report.added == len(list(folder.iterdir())), report
        return report.added / report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="ViT-B-32")
    args = parser.parse_args()
    folder = camera_jpegs(args.images)
    files = sorted(folder.iterdir())[: args.images]
    encoder = load_encoder(args.model, None, "cpu")
    os.environ["CLIPDEX_CACHE"] = tempfile.mkdtemp(prefix="clipdex-bench-cache-")
    export_text_tower(encoder)
    print(f"{args.model}, random weights, {len(files)} JPEGs 4000×3000, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores")

    rows = [("naive loop (full decode, one at a time)", naive(encoder, files[: max(4, len(files) // 8)]))]
    fp32_encoder = encoder_only(encoder, args.batch_size)
    rows.append(("encoder only, fp32", fp32_encoder))
    rows.append(("clipdex index, fp32", pipeline(encoder, folder, args.batch_size)))

    probe = [Image.open(p).convert("RGB").resize((256, 192)) for p in files[:8]]
    reference = encoder.encode_images(probe)
    encoder.set_precision("bf16")
    cosine = float((reference * encoder.encode_images(probe)).sum(axis=1).min()) if encoder.precision == "bf16" else float("nan")
    bf16_encoder = encoder_only(encoder, args.batch_size)
    rows.append(("encoder only, bf16 weights", bf16_encoder))
    rows.append(("clipdex index, bf16", pipeline(encoder, folder, args.batch_size)))

    print(f"{'path':<42} {'images/s':>9}")
    for name, rate in rows:
        print(f"{name:<42} {rate:>9.1f}")
    print(f"index / encoder-only, fp32: {rows[2][1] / fp32_encoder:.2f}   bf16: {rows[4][1] / bf16_encoder:.2f}")
    print(f"index fp32 / naive loop: {rows[2][1] / rows[0][1]:.1f}×   bf16 encoder / fp32 encoder: {bf16_encoder / fp32_encoder:.2f}×")
    print(f"bf16 vs fp32 embeddings, min cosine over 8 photos: {cosine:.5f}")


if __name__ == "__main__":
    main()
