"""How often strong and weak tell matches from noise: `python bench/relevance_calibration.py [--json] [--seed N]`.

On the bundled sample model, through `clipdex.search` as a user gets it (top 10, hybrid mode):
- exact captions: each of the 300 sample photos' own caption (sample_data/captions.csv) as the query, and each of
  HELDOUT scenes rendered by sample_data/synth.py that the model never saw, in a library of their own: is the true
  photo among the hits, and marked strong?
- short phrases people type ("a large red circle", "a red circle", "red circle") for every colour, shape and size a
  sample photo holds: is a photo whose caption holds the phrase among the hits, and marked strong?
- made-up strings (random letters, seeded here: never the probes the floor is measured with): is no hit strong?
Each rate is given for the rule in use and for the old one (the raw cosine against the upper quartile of the
made-up words' best scores), computed from the same hits.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import string
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))  # (run from a checkout: the package is the repository's folder)

K = 10
HELDOUT = 120


def made_up_strings(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
                     for _ in range(rng.randint(1, 3))) for _ in range(count)]


def short_phrases(captions: list[str]) -> list[str]:
    from clipdex.sample_data.synth import COLOURS, SHAPES

    phrases = []
    for colour in COLOURS:
        for shape in SHAPES:
            for phrase in (f"a {colour} {shape}", f"{colour} {shape}", f"a large {colour} {shape}",
                           f"a small {colour} {shape}"):
                if any(phrase.removeprefix("a ") in caption for caption in captions):
                    phrases.append(phrase)
    return phrases


def _library(folder: Path, images: Path):
    from clipdex import api
    from clipdex.indexer.options import IndexOptions

    library = api.open_library(folder, create=True)
    api.index(library, [images], IndexOptions(model="sample", workers=0))
    return library


def _old_floor(library) -> float:
    """The floor of the old rule: the upper quartile of the made-up words' best raw cosines."""
    from clipdex.retrieval.search.relevance import probe_vectors
    from clipdex.retrieval.storage.store import IMAGE

    scores, _ = library.vector_index(IMAGE).search(probe_vectors(library.text_encoder()), 1)
    return float(np.quantile(scores[:, 0], 0.75))


def rates(library, queries: list[str], wanted) -> tuple[float, float, float | None]:
    """(share of queries with a wanted hit marked strong now, the same under the old floor, the share of those
    whose top K holds a wanted hit at all: the most any marking can reach); wanted(query, hit) None: no hit may be
    strong (made-up strings)."""
    from clipdex import api

    old = _old_floor(library)
    now, before, reach = [], [], []
    for query in queries:
        hits = api.search(library, query, K)
        if wanted is None:
            now.append(not any(hit.strong for hit in hits))
            before.append(not any(hit.score >= old for hit in hits))
        else:
            good = [hit for hit in hits if wanted(query, hit)]
            reach.append(bool(good))
            now.append(any(hit.strong for hit in good))
            before.append(any(hit.score >= old for hit in good))
    return float(np.mean(now)), float(np.mean(before)), float(np.mean(reach)) if reach else None


def measure(seed: int) -> dict:
    from clipdex.retrieval import config
    from clipdex.sample_data.synth import HELDOUT_SEED, heldout_scenes, write_set

    sample = {(config.SAMPLE_DATA_DIR / row["image"]).resolve().name: row["caption"]
              for row in csv.DictReader((config.SAMPLE_DATA_DIR / "captions.csv").open(encoding="utf-8"))}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        library = _library(Path(tmp) / "sample", config.SAMPLE_DATA_DIR / "images")
        caption_of = lambda hit: sample.get(Path(hit.path).name, "")  # noqa: E731
        results["exact captions, 300 sample photos"] = rates(
            library, list(sample.values()), lambda query, hit: caption_of(hit) == query)
        phrases = short_phrases(list(sample.values()))
        results[f"short phrases, {len(phrases)}"] = rates(
            library, phrases, lambda query, hit: query.removeprefix("a ") in caption_of(hit))
        strings = made_up_strings(200, seed)
        results[f"made-up strings, {len(strings)} (seed {seed}): none strong"] = rates(library, strings, None)

        held = Path(tmp) / "heldout"
        write_set(held, heldout_scenes()[:HELDOUT], HELDOUT_SEED)
        rows = {Path(row["image"]).name: row["caption"]
                for row in csv.DictReader((held / "captions.csv").open(encoding="utf-8"))}
        library = _library(Path(tmp) / "heldout-library", held / "images")
        results[f"exact captions, {HELDOUT} held-out scenes"] = rates(
            library, list(rows.values()), lambda query, hit: rows.get(Path(hit.path).name) == query)
        results[f"made-up strings, 200 (seed {seed}), held-out library: none strong"] = rates(library, strings, None)
    return {name: {"now": round(now, 3), "old floor": round(old, 3), "in the top 10 at all": reach and round(reach, 3)}
            for name, (now, old, reach) in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=44, help="of the made-up strings")
    args = parser.parse_args()
    found = measure(args.seed)
    if args.json:
        print(json.dumps(found, indent=2))
        return
    for name, rate in found.items():
        reach = f", in the top {K} at all: {rate['in the top 10 at all']:.1%}" if rate["in the top 10 at all"] else ""
        print(f"{name:62} {rate['now']:6.1%}   (old floor {rate['old floor']:.1%}{reach})")


if __name__ == "__main__":
    main()
