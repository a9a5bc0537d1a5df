"""Indexing throughput on camera-size JPEGs against this machine's limit for the work, measured in one run.

    python bench/index_throughput.py [--images 64] [--batch-size 32] [--model ViT-B-32] [--json]

For fp32, bf16 weights and the int8 image tower: the encoder alone (images/s), the decode cost (seconds of one core per image for
exactly what a decode worker does: read, hash, scaled decode, open_clip's preprocessing), the limit those two
allow on this machine's cores, and the real `index` pipeline's rate as a fraction of it:

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

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import camera_jpegs  # noqa: E402
from clipdex.indexer.decode import DecodeDataset  # noqa: E402
from clipdex.indexer.pipeline import index_folders  # noqa: E402
from clipdex.retrieval import config  # noqa: E402
from clipdex.retrieval.factory import load_encoder  # noqa: E402
from clipdex.retrieval.library import Library  # noqa: E402


def encoder_only(encoder, batch_size: int, batches: int = 4) -> float:
    pixels = torch.rand(batch_size, 3, encoder.image_size, encoder.image_size)
    encoder.encode_pixels(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batch_size * batches / (time.perf_counter() - started)


def one_core(work, items: list) -> float:
    """Seconds per item of `work`, on one core (as a decode worker runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work(items[0])  # warm-up
        started = time.perf_counter()
        for item in items:
            work(item)
        return (time.perf_counter() - started) / len(items)
    finally:
        torch.set_num_threads(threads)


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
    encoder = load_encoder(args.model, None, "cpu")
    os.environ[config.CACHE_ENV] = tempfile.mkdtemp(prefix="clipdex-bench-cache-")
    cores = config.CORES
    print(f"{args.model}, random weights, {len(files)} JPEGs 4000×3000 q90, batch {args.batch_size}, {cores} cores, "
          f"{config.DEFAULT_DECODE_WORKERS} decode workers, {torch.get_num_threads()} encoder threads")

    sample = files[: min(8, len(files))]
    dataset = DecodeDataset([str(p) for p in sample], encoder.preprocess, encoder.image_size)
    decode_s = one_core(dataset.__getitem__, list(range(len(sample))))
    full_s = one_core(full_decode, sample)
    reference = encoder.encode_pixels(torch.stack([encoder.preprocess(full_decode(p)) for p in sample]))
    ours = encoder.encode_pixels(torch.stack([dataset[i].pixels for i in range(len(sample))]))
    cosine = float((reference * ours).sum(axis=1).min())
    figures: dict = {"decode_vs_full_decode": round(decode_s / full_s, 3), "full_decode_s": round(full_s, 4),
                     "decode_cosine_to_open_clip": round(cosine, 6), "cores": cores}
    print(f"decode worker's work per image (read, hash, draft decode, preprocess): {decode_s * 1000:.1f} ms of one "
          f"core = {decode_s / full_s:.2f} × a full Pillow decode ({full_s * 1000:.0f} ms); embeddings vs open_clip's "
          f"own preprocessing of the full image: min cosine {cosine:.6f}")

    for precision in ("fp32", "bf16", "int8"):
        encoder.set_precision(precision)
        if encoder.precision != precision:
            print(f"{precision}: not used here ({'; '.join(encoder.notes)})")
            continue
        # The encoder alone is timed before and after the pipeline, and the faster taken: a busy moment on a
        # shared machine must not lower the limit the pipeline is held to.
        before = encoder_only(encoder, args.batch_size)
        index_rate = pipeline(encoder, folder, args.batch_size)
        encoder_rate = max(before, encoder_only(encoder, args.batch_size))
        limit = cores / (cores / encoder_rate + decode_s)
        figures[precision] = {"index": round(index_rate, 2), "encoder": round(encoder_rate, 2),
                              "decode_s": round(decode_s, 4), "limit": round(limit, 2),
                              "ratio_to_limit": round(index_rate / limit, 3)}
        print(f"{precision}: encoder alone {encoder_rate:.1f} images/s, limit {limit:.1f}, clipdex index "
              f"{index_rate:.1f} images/s = {index_rate / limit:.2f} of the limit")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
