"""Speed of each catalogue architecture on this machine's CPU, as clipdex runs it (ONNX Runtime, fp32): images/s
through the image tower and the milliseconds of one short text query through the text tower.

    python bench/model_speed.py [--archs ViT-B-32,ViT-B-16-SigLIP2] [--batch 16] [--json]

Random weights (speed does not depend on them: the real ones cannot be fetched here); each tower exported to ONNX
with the exporter model folders are made with, then timed: the image tower on a batch after a warm-up, the text
tower on a query of 8 tokens padded as the folder's context asks, median of 15. Text towers that open_clip builds
from Hugging Face transformers (XLM-RoBERTa, NLLB) are not measured (transformers is not installed here): their
entries say so. The figures go into retrieval/models/catalogue.py and docs/performance.md by hand. The last line
of stdout is one JSON object (with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipdex.retrieval.models.onnx_runtime import session  # noqa: E402
from clipdex.retrieval.models.openclip.folder_export import _export_graph  # noqa: E402

ARCHS = ("ViT-B-32", "ViT-B-32-SigLIP2-256", "ViT-B-16-SigLIP2", "nllb-clip-base-siglip")


def _unit(encode, input_name: str):
    """A tower with unit-length output, as model folders export it; its argument named as the graph's input."""
    import torch

    class Image(torch.nn.Module):
        def forward(self, image):
            return encode(image, normalize=True)

    class Text(torch.nn.Module):
        def forward(self, text):
            return encode(text, normalize=True)

    return Image() if input_name == "image" else Text()


def measure(arch: str, batch: int, work: Path) -> dict:
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None).eval()
    size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
    found: dict = {"arch": arch, "image_size": size}
    target = work / f"{arch}-visual.onnx"
    _export_graph(_unit(model.encode_image, "image"), torch.zeros(2, 3, size, size), target, "image",
                  {0: torch.export.Dim("batch", min=1, max=1024)})
    tower = session(target, optimised=False)
    pixels = np.random.default_rng(0).random((batch, 3, size, size), np.float32)
    tower.run(None, {"image": pixels})
    started = time.perf_counter()
    for _ in range(3):
        tower.run(None, {"image": pixels})
    found["images_per_second"] = round(3 * batch / (time.perf_counter() - started), 1)
    del tower
    if hasattr(model, "transformer"):  # open_clip's own text transformer (not a transformers model)
        context = model.context_length
        target = work / f"{arch}-textual.onnx"
        _export_graph(_unit(model.encode_text, "text"), torch.zeros(2, context, dtype=torch.int64), target, "text",
                      {0: torch.export.Dim("batch", min=1, max=1024)})
        tower = session(target, optimised=False, prepack=False)
        ids = np.zeros((1, context), np.int64)
        ids[0, :8] = np.arange(1, 9)
        tower.run(None, {"text": ids})
        times = []
        for _ in range(15):
            started = time.perf_counter()
            tower.run(None, {"text": ids})
            times.append(time.perf_counter() - started)
        found["query_ms"] = round(1000 * statistics.median(times), 1)
    else:
        found["query_ms"] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for arch in args.archs.split(","):
            found = measure(arch, args.batch, Path(work))
            results.append(found)
            if not args.json:
                print(f"{arch:24s} {found['images_per_second']:7.1f} images/s   query "
                      f"{found['query_ms'] if found['query_ms'] is not None else '–'} ms", flush=True)
    summary = {"machine": f"{os.cpu_count()} cores", "batch": args.batch, "models": results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
