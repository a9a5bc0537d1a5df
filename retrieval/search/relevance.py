"""Strong and weak matches of a text query: a hit is strong when it beats what made-up words reach in this library,
with the bar raised for a query that itself reads like made-up words.

CLIP ranks every query, sense or not ("zzqx" still has a best photo), and cosines differ by model (ViT-B-32 scores
photos 0.2-0.35, the small sample model 0.6-0.9), so no fixed number tells a match from noise. Each library
measures its own line: a fixed set of made-up words, embedded once per model (kept in the model cache), is
searched in the library. One library-wide line alone hides the obvious (on the sample photos "a large red circle"
reached 0.836 on its own photo, below the made-up words' 0.873) or lets nonsense through, because the cosine a
query reaches depends on the query: short phrases score lower than full captions, and some made-up strings land
close to real captions. So each query is calibrated by how much it reads like the made-up words (its *likeness*:
its mean cosine to their text vectors, in the text tower's own space) and a hit's *calibrated score* is its cosine
less SENSE_WEIGHT times that likeness. The floor is measured the same way: each made-up word's best cosine in the
library less its own likeness to the others, and the FLOOR_QUANTILE of those. A real sentence is far from random
letters, so its bar stays low; a string of letters is close to them, and its bar rises with it. The floor is kept
in the library folder for its image count, so a one-off query reads it instead of searching the made-up words.
Measured by bench/relevance_calibration.py (docs/search.md)."""

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


SENSE_WEIGHT = 0.4  # how much a query's likeness to made-up words raises its bar (bench/relevance_calibration.py)
FLOOR_QUANTILE = 0.85  # of the made-up words' calibrated best scores
RULE = 2  # the rule a kept floor was measured by: 1 the raw upper quartile, 2 calibrated by likeness


def likeness(vectors: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """How much each query (rows of `vectors`) reads like the made-up words: its mean cosine to their vectors."""
    return np.asarray(vectors, dtype=np.float32).reshape(-1, probes.shape[1]) @ probes.mean(axis=0)


def calibrated(score: float, query_likeness: float) -> float:
    """A hit's cosine as compared with the floor: less what the query's likeness to made-up words lends it."""
    return float(score) - SENSE_WEIGHT * float(query_likeness)


def measure_floor(index: VectorIndex, probes: np.ndarray) -> float | None:
    """The calibrated score strong matches reach in `index`: the FLOOR_QUANTILE of the made-up words' best scores,
    each less its own likeness to the other made-up words (None: no items)."""
    if index.count == 0:
        return None
    scores, ids = index.search(probes, 1)
    found = ids[:, 0] >= 0
    if not found.any():
        return None
    between = probes @ probes.T
    others = (between.sum(axis=1) - np.diag(between)) / max(1, len(probes) - 1)  # each one's likeness to the rest
    best = scores[found, 0] - SENSE_WEIGHT * others[found]
    return float(np.quantile(best, FLOOR_QUANTILE))


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
    if saved.get("for") != key or saved.get("rule") != RULE or not isinstance(floor, float) or not -1.0 <= floor <= 1.0:
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
            json.dump({"for": key, "rule": RULE, "floor": floor}, handle)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
    return floor
