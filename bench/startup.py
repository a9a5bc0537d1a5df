"""What a `clipdex index` command costs beyond the work itself, each run a new process as a user runs it.

    python bench/startup.py [--images 64] [--model ViT-B-32] [--runs 3] [--json]

- noop index: `clipdex index` of a library in which nothing changed (nothing to embed): all start-up.
- first index: a whole first-time `clipdex index` of camera JPEGs into a new library with a prepared model, as a
  rate, against the rate of the pipeline alone (index_folders in a process that already holds the model), the
  same images.

The model is loaded from a weights file (--pretrained FILE, random weights saved once), as a downloaded model is:
the weights' fingerprint counts. The model is prepared before timing (its towers exported: a step of the first
index with a new model, once per model; its time is printed on its own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.synthetic import camera_jpegs  # noqa: E402
from clipdex.retrieval import config


def weights_file(model: str, folder: Path) -> Path:
    """Random weights of `model` saved as a plain open_clip state dict, as a downloaded checkpoint is."""
    import torch
    from safetensors.torch import save_file

    from clipdex.retrieval.models.openclip.factory import load_encoder

    path = folder / f"{model}-random.safetensors"
    if not path.exists():
        state = load_encoder(model, None, "cpu").model.state_dict()
        save_file({k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}, str(path))
    return path


def clipdex(library: Path, *args: str) -> float:
    """Wall seconds of one `clipdex` command in a new process."""
    command = [sys.executable, "-m", "clipdex", "-L", str(library), *args, "--json"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def pipeline_alone(model: str, weights: Path, folder: Path) -> float:
    """Images/s of index_folders in a process that already holds the (prepared) model."""
    from clipdex.indexer.pipeline import index_folders
    from clipdex.retrieval.library import Library
    from clipdex.retrieval.models.loading import load_model

    encoder = load_model(model, str(weights), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "lib", create=True)
        report = index_folders(library, [folder], encoder)
    return report.added / report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    folder = camera_jpegs(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ[config.CACHE_ENV] = str(tmp / "cache")
        weights = weights_file(args.model, Path(tempfile.gettempdir()))
        model = ["--model", args.model, "--pretrained", str(weights)]
        export_s = clipdex(tmp / "warm-up", "index", str(folder), *model)  # also prepares the model
        print(f"{args.model} from a {weights.stat().st_size / 2**20:.0f} MB weights file, {args.images} JPEGs "
              f"4000×3000; a first index with a new model (prepared too: towers exported): {export_s:.1f} s")

        noop = [clipdex(tmp / "warm-up", "index", str(folder), *model) for _ in range(args.runs)]
        first = []
        for run in range(args.runs):
            first.append(clipdex(tmp / f"new-{run}", "index", str(folder), *model))
        alone = pipeline_alone(args.model, weights, folder)
        bare = clipdex(tmp / "warm-up", "status")
    noop_s, first_s = statistics.median(noop), statistics.median(first)
    ratio = args.images / first_s / alone
    print(f"noop index (nothing changed): {noop_s:.2f} s (median of {args.runs}); `clipdex status`: {bare:.2f} s")
    print(f"first index of {args.images} JPEGs: {first_s:.2f} s = {args.images / first_s:.1f} images/s; the pipeline "
          f"alone {alone:.1f} images/s; ratio {ratio:.2f} (start-up {first_s - args.images / alone:.2f} s)")
    if args.json:
        print(json.dumps({"noop_index_s": round(noop_s, 3), "first_index_ratio": round(ratio, 3),
                          "first_index_s": round(first_s, 2), "pipeline_alone": round(alone, 2),
                          "first_index_with_export_s": round(export_s, 1), "status_s": round(bare, 3)}))


if __name__ == "__main__":
    main()
