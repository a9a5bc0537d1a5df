"""Indexing throughput on camera-size JPEGs against this machine's limit for the work, measured in one run.

    python bench/index_throughput.py [--images 64] [--batch-size 32] [--model ViT-B-32] [--json]

For the prepared model (the default: ONNX Runtime, fp32), its int8 image tower, and torch with bf16 weights: the
encoder alone (images/s), the decode cost (seconds of one core per image for exactly what a decode worker does:
read, hash, scaled decode, the numpy preprocessing), the limit those two allow on this machine's cores, and the
real `index` pipeline's rate as a fraction of it:

    limit = cores ÷ (cores ÷ encoder rate + decode seconds per image)

(every core either decodes or encodes; nothing faster is possible without making one of them cheaper). Also the
decode cost against a full Pillow decode of the same file, and the cosine of the pipeline's embeddings to open_clip's
own preprocessing of the fully decoded image. Random weights (speed does not depend on them); the JPEGs (4000×3000,
q90) are made once under $TMPDIR. The last line of stdout is one JSON object with every figure (with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import camera_jpegs  # noqa: E402
from clipdex.indexer.decode import DecodeSettings, decode_file  # noqa: E402
from clipdex.indexer.pipeline import index_folders  # noqa: E402
from clipdex.retrieval import config
from clipdex.retrieval.models.openclip.factory import load_encoder  # noqa: E402
from clipdex.retrieval.library import Library  # noqa: E402
from clipdex.retrieval.models.loading import load_model  # noqa: E402


def encoder_only(encoder, batch_size: int, batches: int = 4) -> float:
    pixels = np.random.default_rng(0).random((batch_size, 3, encoder.image_size, encoder.image_size), np.float32)
    encoder.encode_pixels(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batch_size * batches / (time.perf_counter() - started)


def one_core(work, items: list) -> float:
    """Seconds per item of `work`, on one core (as a decode worker runs: PIL and numpy use one thread)."""
    work(items[0])  # warm-up
    started = time.perf_counter()
    for item in items:
        work(item)
    return (time.perf_counter() - started) / len(items)


def pipeline(encoder, folder: Path, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "lib", create=True)
        report = index_folders(library, [folder], encoder, batch_size=batch_size)
        assert report.added == len(list(folder.iterdir())), report
        return report.added / report.seconds


def full_decode(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    folder = camera_jpegs(args.images)
    files = sorted(folder.iterdir())
    os.environ[config.CACHE_ENV] = tempfile.mkdtemp(prefix="clipdex-bench-cache-")
    started = time.perf_counter()
    models = {precision: load_model(args.model, None, "cpu", precision) for precision in ("fp32", "int8")}
    print(f"prepared {args.model} (fp32 and int8 image towers, text tower) in {time.perf_counter() - started:.0f} s")
    torch_model = load_encoder(args.model, None, "cpu")
    torch_model.set_precision("bf16")
    models["bf16"] = torch_model
    encoder = models["fp32"]
    cores = config.CORES
    print(f"{args.model}, random weights, {len(files)} JPEGs 4000×3000 q90, batch {args.batch_size}, {cores} cores, "
          f"{config.DEFAULT_DECODE_WORKERS} decode workers")

    sample = files[: min(8, len(files))]
    settings = DecodeSettings(encoder.preprocess, encoder.image_size)
    decode_s = one_core(lambda path: decode_file(0, str(path), settings), sample)
    full_s = one_core(full_decode, sample)
    fp32_torch = load_encoder(args.model, None, "cpu")
    reference = fp32_torch.encode_pixels(np.stack([fp32_torch.transform(full_decode(p)).numpy() for p in sample]))
    ours = encoder.encode_pixels(encoder.preprocess.batch([decode_file(0, str(p), settings).pixels for p in sample]))
    cosine = float((reference * ours).sum(axis=1).min())
    del fp32_torch
    figures: dict = {"decode_vs_full_decode": round(decode_s / full_s, 3), "full_decode_s": round(full_s, 4),
                     "decode_cosine_to_open_clip": round(cosine, 6), "cores": cores}
    print(f"decode worker's work per image (read, hash, draft decode, preprocess): {decode_s * 1000:.1f} ms of one "
          f"core = {decode_s / full_s:.2f} × a full Pillow decode ({full_s * 1000:.0f} ms); embeddings vs torch fp32 "
          f"with open_clip's own preprocessing of the full image: min cosine {cosine:.6f}")

    for precision, model in models.items():
        if model.precision != precision:
            print(f"{precision}: not used here ({'; '.join(model.notes)})")
            continue
        # The encoder alone is timed before and after the pipeline, and the faster taken: a busy moment on a
        # shared machine must not lower the limit the pipeline is held to.
        before = encoder_only(model, args.batch_size)
        index_rate = pipeline(model, folder, args.batch_size)
        encoder_rate = max(before, encoder_only(model, args.batch_size))
        limit = cores / (cores / encoder_rate + decode_s)
        name = {"fp32": "onnx_fp32", "int8": "onnx_int8", "bf16": "torch_bf16"}[precision]
        figures[name] = {"index": round(index_rate, 2), "encoder": round(encoder_rate, 2),
                         "decode_s": round(decode_s, 4), "limit": round(limit, 2),
                         "ratio_to_limit": round(index_rate / limit, 3)}
        print(f"{name}: encoder alone {encoder_rate:.1f} images/s, limit {limit:.1f}, clipdex index "
              f"{index_rate:.1f} images/s = {index_rate / limit:.2f} of the limit")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
