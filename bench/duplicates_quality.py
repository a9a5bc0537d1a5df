"""Whether `clipdex duplicates` groups copies and only copies: `python bench/duplicates_quality.py [--json]`.

A planted set, made here with a seed: ORIGINALS sample photos and DOCUMENTS screenshots of different documents
drawn with PIL (invoices and boarding passes on one layout each: CLIP embeds them alike), each with its copies — a
JPEG re-encode at quality 60, a 60 % resize, a 94 % centre crop, an off-centre 85 % crop, a 3× upscale — indexed
with the sample model. A pair is right when both photos are of one original. For each CLIP threshold: pair
precision and recall, the groups holding two originals, and whether the keeper of each group is its original
(never an upscale, never a crop or a resize), with and without the check on the pixels.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))

ORIGINALS = 24
DOCUMENTS = 12
COPIES = ("reencoded", "resized", "crop", "offcrop", "upscaled")
WORDS = ("total", "invoice", "amount", "flight", "gate", "seat", "date", "paid", "tax", "item", "boarding", "due",
         "order", "customer", "passenger", "account", "number", "service", "price", "balance")


def document(rng: random.Random, kind: str) -> Image.Image:
    """A screenshot of a document: a header bar, a title, lines of words, a table; one layout per kind."""
    image = Image.new("RGB", (560, 360), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 560, 40), fill=(40, 70, 140) if kind == "invoice" else (20, 120, 90))
    draw.text((16, 12), f"{kind.upper()} {rng.randint(1000, 9999)}", fill=(255, 255, 255))
    for line in range(8):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        draw.text((16, 60 + 20 * line), f"{words} {rng.randint(1, 999)}.{rng.randint(0, 99):02d}", fill=(30, 30, 30))
    for row in range(4):
        top = 230 + 28 * row
        draw.rectangle((16, top, 544, top + 24), outline=(160, 160, 160))
        draw.text((24, top + 6), f"{rng.choice(WORDS)} {rng.randint(1, 99)}", fill=(30, 30, 30))
        draw.text((420, top + 6), f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}", fill=(30, 30, 30))
    return image


def copies_of(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    return {
        "reencoded": image,
        "resized": image.resize((int(w * 0.6), int(h * 0.6)), Image.Resampling.LANCZOS),
        "crop": image.crop((int(w * 0.03), int(h * 0.03), int(w * 0.97), int(h * 0.97))),
        "offcrop": image.crop((int(w * 0.15), int(h * 0.0), w, int(h * 0.85))),
        "upscaled": image.resize((w * 3, h * 3), Image.Resampling.BICUBIC),
    }


def planted_set(folder: Path, seed: int = 44, originals: int = ORIGINALS, documents: int = DOCUMENTS
                ) -> dict[str, str]:
    """Write the originals and their copies under `folder`; {file name: the original's name} for every file."""
    from clipdex.retrieval import config
    from clipdex.sample_data.synth import SAMPLE_COUNT

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bases: dict[str, Image.Image] = {}
    for n in rng.sample(range(SAMPLE_COUNT), originals):
        path = next((config.SAMPLE_DATA_DIR / "images").glob(f"{n:05d}.*"))
        bases[f"photo{n:05d}"] = Image.open(path).convert("RGB")
    for n in range(documents):
        bases[f"doc{n:02d}"] = document(rng, ("invoice", "boarding pass")[n % 2])
    family: dict[str, str] = {}
    for name, image in bases.items():
        image.save(folder / f"{name}.png")
        family[f"{name}.png"] = name
        for kind, copy in copies_of(image).items():
            file = f"{name}-{kind}.jpg" if kind == "reencoded" else f"{name}-{kind}.png"
            copy.save(folder / file, quality=60) if file.endswith(".jpg") else copy.save(folder / file)
            family[file] = name
    return family


def score(groups: list[list[dict]], family: dict[str, str]) -> dict:
    """Pair precision and recall of `groups` against the planted families; mixed groups; keepers."""
    found = {frozenset(pair) for group in groups
             for pair in itertools.combinations([Path(m["path"]).name for m in group], 2)}
    names = list(family)
    truth = {frozenset((a, b)) for a, b in itertools.combinations(names, 2) if family[a] == family[b]}
    right = len(found & truth)
    keepers = [Path(group[0]["path"]).name for group in groups]
    return {
        "precision": round(right / len(found), 4) if found else 1.0,
        "recall": round(right / len(truth), 4),
        "groups": len(groups),
        "groups of two originals": sum(len({family[Path(m["path"]).name] for m in group}) > 1 for group in groups),
        "keeper is the original": round(sum("-" not in k or k.endswith("-reencoded.jpg") for k in keepers)
                                        / max(1, len(keepers)), 4),
        "keeper is an upscale": sum(k.endswith("-upscaled.png") for k in keepers),
    }


def measure(seed: int, thresholds: tuple[float, ...]) -> dict:
    from clipdex import api
    from clipdex.indexer.options import IndexOptions
    from clipdex.retrieval.search import duplicates, pixels

    with tempfile.TemporaryDirectory() as tmp:
        family = planted_set(Path(tmp) / "photos", seed)
        library = api.open_library(Path(tmp) / "library", create=True)
        api.index(library, [Path(tmp) / "photos"], IndexOptions(model="sample", workers=0))
        result = {"files": len(family), "seed": seed, "pixel check": {}, "CLIP alone": {}}
        for threshold in thresholds:
            result["pixel check"][str(threshold)] = score(api.duplicates(library, threshold), family)
        same = duplicates._Pictures.same
        duplicates._Pictures.same = lambda self, a, b: True  # the embeddings alone, as before
        try:
            for threshold in thresholds:
                result["CLIP alone"][str(threshold)] = score(api.duplicates(library, threshold), family)
        finally:
            duplicates._Pictures.same = same
        result["pixel threshold"] = pixels.SAME_PICTURE
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=44)
    parser.add_argument("--thresholds", default="0.8,0.85,0.9,0.95,0.99")
    args = parser.parse_args()
    found = measure(args.seed, tuple(float(t) for t in args.thresholds.split(",")))
    if args.json:
        print(json.dumps(found, indent=2))
        return
    print(f"{found['files']} files (seed {found['seed']}), pixel threshold {found['pixel threshold']}")
    for check in ("pixel check", "CLIP alone"):
        for threshold, row in found[check].items():
            print(f"{check:12} CLIP ≥ {threshold:5}: precision {row['precision']:.3f} recall {row['recall']:.3f}, "
                  f"{row['groups']} groups ({row['groups of two originals']} of two originals), keeper the original "
                  f"{row['keeper is the original']:.0%}, an upscale {row['keeper is an upscale']}")


if __name__ == "__main__":
    main()
