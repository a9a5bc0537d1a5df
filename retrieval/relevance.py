"""Strong and weak matches of a text query: the line between them is what made-up words reach in this library.

CLIP ranks every query, sense or not ("zzqx" still has a best photo), and cosines differ by model (ViT-B-32 scores
photos 0.2–0.35, the small sample model 0.6–0.9), so no fixed number tells a match from noise. Each library
measures its own: a fixed set of made-up words, embedded once per model (kept in the model cache), is searched in
the library, and the upper quartile of their best scores is the floor: a hit at or above it scores higher than
three made-up words in four reach at their very best. (On the sample library this leaves 22 of 24 colour-and-shape
queries at least one strong match in their top 10, and 21 of 24 other made-up words none.) The floor is kept in
the library folder for its image count, so a one-off query reads it instead of searching the made-up words."""

from __future__ import annotations

import json
import math
import os
import random
import string
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.vector_index import VectorIndex
from clipdex.retrieval.vocabulary import cached_vectors


def made_up_words(count: int = config.RELEVANCE_PROBES, seed: int = config.RELEVANCE_SEED) -> list[str]:
    """Queries that mean nothing: one to three runs of random letters (the same ones on every run)."""
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
                     for _ in range(rng.randint(1, 3))) for _ in range(count)]


def probe_vectors(encoder) -> np.ndarray:
    """The made-up words in `encoder`'s space (embedded on the first query of a model, then read back)."""
    words = made_up_words()
    return cached_vectors(encoder, "probes", words, len(words), lambda: encoder.encode_texts(words))


def measure_floor(index: VectorIndex, probes: np.ndarray) -> float | None:
    """The score strong matches reach in `index`: the median best score of the made-up words (None: no items)."""
    if index.count == 0:
        return None
    scores, ids = index.search(probes, 1)
    best = scores[ids[:, 0] >= 0, 0]
    return float(np.quantile(best, config.RELEVANCE_QUANTILE)) if len(best) else None


def remembered_floor(path: Path, key: dict, measure: Callable[[], float | None]) -> float | None:
    """The floor kept at `path` for `key` (the model and the library's image count), else measured now and kept.
    Keeping it is best effort: it is a cache any reader may write, and a damaged file only means measuring again."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        floor = saved["floor"]
        if saved["for"] == key and (floor is None or isinstance(floor, float) and math.isfinite(floor)):
            return floor
    except (OSError, ValueError, KeyError, TypeError):
        pass
    floor = measure()
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
            json.dump({"for": key, "floor": floor}, handle)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
    return floor
