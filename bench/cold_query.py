"""A cold `clipdex search "…"`: a new process on a 100k-image library, with the ONNX text tower and without.

    python bench/cold_query.py [--images 100000] [--model ViT-B-32] [--runs 3] [--json]

The library holds synthetic unit vectors under a real model binding (random weights); it is built once, then
each run is a fresh `python -m clipdex search` process. "torch" is the same command with the exports hidden (a
cache folder that cannot be made, so the model is neither found prepared nor prepared), so it loads open_clip.
Then the same query while `clipdex watch` runs over the library and answers it (its socket), median of 7. The
breakdown times each phase of one cold query in a new process. The last line of stdout is one JSON object with the figures (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

QUERY = "a dog running on a beach at sunset"

PHASES = r"""
import sys, time
marks = [("start", time.perf_counter())]
def mark(name): marks.append((name, time.perf_counter()))
import clipdex.cli.app, clipdex.retrieval.search.query; mark("import the CLI and query modules")
from pathlib import Path
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import IMAGE
library = Library(Path(sys.argv[1]), create=False); mark("open the library (database)")
encoder = library.text_encoder("auto", "fp32"); mark("load the text encoder (" + type(encoder).__name__ + ")")
vector = encoder.encode_texts([sys.argv[2]])[0]; mark("embed the query")
index = library.vector_index(IMAGE); mark("load the vector index (" + index.type + ")")
scores, ids = index.search(vector[None, :], 10); mark("search")
rows = library.store.items([int(i) for i in ids[0]]); mark("fetch the paths")
for (name, t), (_, before) in zip(marks[1:], marks):
    print(f"{(t - before) * 1000:8.0f} ms  {name}")
print(f"{(marks[-1][1] - marks[0][1]) * 1000:8.0f} ms  total (interpreter start-up not included)")
"""


def build(library_dir: Path, images: int, model: str) -> None:
    from clipdex.api import export_text_tower
    from clipdex.retrieval.models.openclip.factory import load_encoder
    from clipdex.retrieval.library import Library
    from bench.synthetic import fill_library
    from clipdex.retrieval.storage.store import IMAGE

    encoder = load_encoder(model, None, "cpu")
    library = Library(library_dir, create=True)
    library.use_encoder(encoder)
    fill_library(library, encoder.identity.dim, images, 10_000)
    library.save_index(IMAGE)
    print(*export_text_tower(encoder) or ["the text tower was already exported"])


def cold_search(library_dir: Path, cache: Path, own: bool = False) -> tuple[float, list[int]]:
    """One query in a new process: answered by itself when `own`, else by a running server if there is one."""
    env = {**os.environ, "CLIPDEX_CACHE": str(cache), "CLIPDEX_NO_SERVER": "1" if own else "0"}
    command = [sys.executable, "-m", "clipdex", "-L", str(library_dir), "search", QUERY, "-k", "10", "--json"]
    started = time.perf_counter()
    out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - started, [hit["id"] for hit in json.loads(out)["hits"]]


def beside_watch(library_dir: Path, cache: Path, runs: int = 7) -> tuple[float, list[int]]:
    """The same CLI query while `clipdex watch` (of an empty folder) runs over the library and answers it: the
    median seconds of `runs` new processes, after one that lets the server load the text tower."""
    env = {**os.environ, "CLIPDEX_CACHE": str(cache)}
    empty = library_dir.parent / "nothing-to-watch"
    empty.mkdir(exist_ok=True)
    watch = subprocess.Popen([sys.executable, "-m", "clipdex", "-L", str(library_dir), "watch", str(empty)], env=env,
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in watch.stdout:
            if "watching" in line:
                break
        cold_search(library_dir, cache)
        timed = [cold_search(library_dir, cache) for _ in range(runs)]
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=60)
    return statistics.median(seconds for seconds, _ in timed), timed[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    # Timed as installed, where Python keeps its compiled modules (pip compiles them at install, an editable
    # install on first run): a sandbox's PYTHONDONTWRITEBYTECODE would have every process compile them again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        library_dir, cache, empty = Path(tmp) / "lib", Path(tmp) / "cache", Path(tmp) / "a-file" / "cache"
        empty.parent.write_text("")
        os.environ["CLIPDEX_CACHE"] = str(cache)
        started = time.perf_counter()
        build(library_dir, args.images, args.model)
        print(f"built a {args.images:,}-image library for {args.model} in {time.perf_counter() - started:.0f}s")
        runs = {"onnx": [], "torch": []}
        answers = {}
        cold_search(library_dir, cache, own=True)  # untimed: compiles the modules once, as a first run does
        for _ in range(args.runs):
            for name, folder in (("onnx", cache), ("torch", empty)):
                seconds, answers[name] = cold_search(library_dir, folder, own=True)
                runs[name].append(seconds)
        onnx, torch_ = statistics.median(runs["onnx"]), statistics.median(runs["torch"])
        overlap = len(set(answers["onnx"]) & set(answers["torch"])) / 10
        print(f"cold `clipdex search` (median of {args.runs} new processes): ONNX text tower {onnx:.2f} s, "
              f"torch {torch_:.2f} s, {torch_ / onnx:.1f}× faster; same top 10: {answers['onnx'] == answers['torch']} "
              f"(overlap {overlap:.1f}; an int8 tower may swap near-ties)")
        with_server, answers["watch"] = beside_watch(library_dir, cache)
        print(f"the same query while `clipdex watch` runs (it answers; median of 7): {with_server:.3f} s, "
              f"same top 10 as in-process: {answers['watch'] == answers['onnx']}")
        print("where one cold ONNX query's time goes:")
        phases = subprocess.run(
            [sys.executable, "-c", PHASES, str(library_dir), QUERY], cwd=ROOT, capture_output=True, text=True,
            check=True, env={**os.environ, "CLIPDEX_CACHE": str(cache)},
        )
        print(phases.stdout, end="")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"{(time.perf_counter() - started) * 1000:8.0f} ms  a bare Python interpreter start and exit")
    if args.json:
        print(json.dumps({"onnx_s": round(onnx, 3), "torch_s": round(torch_, 3),
                          "same_top10": answers["onnx"] == answers["torch"], "top10_overlap": overlap,
                          "beside_watch_s": round(with_server, 3), "beside_watch_same": answers["watch"] == answers["onnx"],
                          "images": args.images}))


if __name__ == "__main__":
    main()
