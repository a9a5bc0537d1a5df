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
import os
import random
import stat
import string
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.storage.vector_index import VectorIndex
from clipdex.retrieval.describe.vocabulary import cached_vectors


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
    """The score strong matches reach in `index`: the upper quartile of the made-up words' best scores (None: no
    items)."""
    if index.count == 0:
        return None
    scores, ids = index.search(probes, 1)
    best = scores[ids[:, 0] >= 0, 0]
    return float(np.quantile(best, config.RELEVANCE_QUANTILE)) if len(best) else None


def _kept(path: Path, key: dict) -> float | None:
    """The floor kept at `path` for `key`, or None: read only from a small regular file (never through a link,
    never waiting on a FIFO), and only a cosine a library can have."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with open(fd, "rb") as handle:
        found = os.fstat(handle.fileno())
        if not stat.S_ISREG(found.st_mode) or found.st_size > config.RELEVANCE_FILE_MAX_BYTES:
            return None
        try:
            saved = json.loads(handle.read(config.RELEVANCE_FILE_MAX_BYTES))
            floor = saved["floor"]
        except Exception:  # not JSON, not an object, too deep to parse: measured again
            return None
    if saved.get("for") != key or not isinstance(floor, float) or not -1.0 <= floor <= 1.0:
        return None
    return floor


def remembered_floor(path: Path, key: dict, measure: Callable[[], float | None]) -> float | None:
    """The floor kept at `path` for `key` (the model and the library's contents), else measured now and kept.
    Keeping it is best effort: it is a cache any reader may write, and a damaged file only means measuring again."""
    kept = _kept(path, key)
    if kept is not None:
        return kept
    floor = measure()
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
            json.dump({"for": key, "floor": floor}, handle)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
    return floor
