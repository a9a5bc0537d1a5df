"""A query's cost with the default architecture as the hub publishes it, beside the same weights as clipdex
prepares them: the text tower opened in a new process and one query embedded, alternating rounds, medians.

    python bench/hub_folder_query.py [--rounds 5] [--json]

ViT-B-32 with random weights (speed does not depend on them) is exported once with torch into clipdex's prepared
layout (graph optimised ahead, weights as external data beside it); the same towers are then saved as Immich
publishes them (one model.onnx each, a fixed batch of 1 and 77 int32 ids, not optimised ahead), which is what the
default model folder from the hub is. Each round runs both in fresh processes; the published folder's first open
also keeps its optimised graph in the cache (timed apart as `first_open_s`), later ones load that. The last line
of stdout is one JSON object (with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ONE = r"""
import sys, time
started = time.perf_counter()
from pathlib import Path
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.models.model_folder import FolderModel, folder_fingerprint
model = FolderModel(Path(sys.argv[1]), ModelIdentity("bench", None, folder_fingerprint(Path(sys.argv[1])), 0))
tower = model.text
opened = time.perf_counter()
model.encode_texts(["a dog running on a beach at sunset"])
done = time.perf_counter()
print(opened - started, done - opened)
"""


def as_published(prepared: Path, target: Path) -> None:
    """The prepared folder saved as the hub's folders are: weights inside each graph, batch 1, 77 int32 ids."""
    import onnx

    shutil.copytree(prepared, target)
    for tower, fixed in (("visual", [1]), ("textual", [1, 77])):
        path = target / tower / "model.onnx"
        model = onnx.load(str(path))  # (external data read in)
        for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, fixed):
            dim.ClearField("dim_param")
            dim.dim_value = size
        for extra in path.parent.glob("model.onnx.data"):
            extra.unlink()
        onnx.save(model, str(path), save_as_external_data=False)
    values = json.loads((target / "config.json").read_text())
    values.pop("clipdex")
    (target / "config.json").write_text(json.dumps(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from clipdex.retrieval.models.openclip.factory import load_encoder
    from clipdex.retrieval.models.openclip.folder_export import write_folder

    with tempfile.TemporaryDirectory() as work:
        prepared, published = Path(work) / "prepared", Path(work) / "published"
        write_folder(load_encoder("ViT-B-32", None, "cpu"), prepared, "fp32", text_precision="fp32")
        as_published(prepared, published)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["CLIPDEX_CACHE"] = str(Path(work) / "cache")
        times: dict[str, list[tuple[float, float]]] = {"prepared": [], "published": []}
        for _ in range(args.rounds):
            for name, folder in (("prepared", prepared), ("published", published)):
                done = subprocess.run([sys.executable, "-c", ONE, str(folder)], capture_output=True, text=True,
                                      env=env, cwd=ROOT, check=True)
                times[name].append(tuple(map(float, done.stdout.split())))
    first_open = times["published"].pop(0)[0]
    summary = {name: {"open_s": round(statistics.median(t[0] for t in runs), 3),
                      "query_ms": round(1000 * statistics.median(t[1] for t in runs), 1)}
               for name, runs in times.items()}
    summary["published"]["first_open_s"] = round(first_open, 3)
    summary["machine"] = f"{os.cpu_count()} cores"
    if not args.json:
        for name in ("prepared", "published"):
            print(f"{name:10s} text tower opened in {summary[name]['open_s']:.3f} s, one query "
                  f"{summary[name]['query_ms']:.1f} ms")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
