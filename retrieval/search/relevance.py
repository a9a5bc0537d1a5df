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

Likeness alone left short phrases weak ("a purple star" reads much like random letters to the sample model), so two
measures of the library take part too. A query that means something finds a crowd of photos (every red circle for
"red circle"): the mean of its DENSITY_TOP best cosines lends it some of its bar. A photo that made-up words land
on anyway (a hub) is trusted less: its *hubness*, the mean of its HUB_PROBES best cosines to the made-up words, is
taken off its score. The floor's made-up words are scored the same way, each against the hubness the others give.
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


SENSE_WEIGHT = 0.2  # how much a query's likeness to made-up words raises its bar (bench/relevance_calibration.py)
HUB_WEIGHT = 0.25  # how much a photo's hubness lowers its score
HUB_PROBES = 8  # the made-up words a photo's hubness is the mean of (its best ones)
DENSITY_WEIGHT = 0.5  # how much a query's crowd of close photos lowers its bar
DENSITY_TOP = 10  # the best cosines a query's crowd is the mean of
FLOOR_QUANTILE = 0.9  # of the made-up words' calibrated best scores
RULE = 3  # the rule a kept floor was measured by: 1 the raw upper quartile, 2 by likeness, 3 with hubness and crowd
MAX_SCORE = 1 + SENSE_WEIGHT + HUB_WEIGHT + DENSITY_WEIGHT  # no calibrated score reaches it
FLOOR_SCAN = 20_000  # the best photos of each made-up word the floor looks at (the rest score too low to count)


def likeness(vectors: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """How much each query (rows of `vectors`) reads like the made-up words: its mean cosine to their vectors."""
    return np.asarray(vectors, dtype=np.float32).reshape(-1, probes.shape[1]) @ probes.mean(axis=0)


def hubness(image_vectors: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """How much made-up words land on each photo (rows of `image_vectors`): the mean of its HUB_PROBES best
    cosines to them."""
    scores = np.asarray(image_vectors, dtype=np.float32).reshape(-1, probes.shape[1]) @ probes.T
    return _top_mean(scores, HUB_PROBES)


def density(index: VectorIndex, vector: np.ndarray) -> float:
    """How crowded the library is around a query: the mean of its DENSITY_TOP best cosines."""
    scores, ids = index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), DENSITY_TOP)
    return float(scores[0][ids[0] >= 0].mean())


def calibrated(score: float, query_likeness: float, hub: float, crowd: float) -> float:
    """A hit's cosine as compared with the floor: less what the query's likeness to made-up words lends it and
    what made-up words reach on this photo anyway, plus some of the query's crowd of close photos."""
    return float(score) - SENSE_WEIGHT * float(query_likeness) - HUB_WEIGHT * float(hub) + DENSITY_WEIGHT * float(crowd)


def lowest_strong(index: VectorIndex, vectors_of: Callable[[list[int]], dict[int, np.ndarray]], vector: np.ndarray,
                  probes: np.ndarray, hits: list[tuple[int, float]], floor: float) -> float | None:
    """The lowest cosine among `hits` (id, cosine) of the query `vector` whose calibrated score reaches `floor`
    (None: none does). Every hit scoring at least that is strong, so strong ones never rank below weak ones even
    where a hub photo above them falls short."""
    vectors = vectors_of([item for item, _ in hits])
    known = [item for item, _ in hits if item in vectors]
    hubs = dict(zip(known, hubness(np.stack([vectors[i] for i in known]), probes))) if known else {}
    bias, crowd = float(likeness(vector, probes)[0]), density(index, vector)
    passing = [score for item, score in hits if calibrated(score, bias, hubs.get(item, 1.0), crowd) >= floor]
    return min(passing, default=None)  # (a photo with no vector: counted fully a hub)


def _top_mean(scores: np.ndarray, top: int) -> np.ndarray:
    """The mean of each row's `top` largest values."""
    top = min(top, scores.shape[1])
    return np.partition(scores, scores.shape[1] - top, axis=1)[:, -top:].mean(axis=1)


def measure_floor(index: VectorIndex, probes: np.ndarray) -> float | None:
    """The calibrated score strong matches reach in `index`: the FLOOR_QUANTILE of the made-up words' best
    calibrated scores, each word's likeness and the photos' hubness taken from the other made-up words (so none
    is calibrated by itself); None: no items."""
    if index.count == 0:
        return None
    scores, ids = index.search(probes, min(index.count, FLOOR_SCAN))
    seen = np.unique(ids[ids >= 0])
    if not len(seen):
        return None
    cosines = np.full((len(seen), len(probes)), -1.0, dtype=np.float32)  # photo × made-up word; unseen: low
    rows = np.searchsorted(seen, ids)
    for word in range(len(probes)):
        found = ids[word] >= 0
        cosines[rows[word, found], word] = scores[word, found]
    between = probes @ probes.T
    others = (between.sum(axis=1) - np.diag(between)) / max(1, len(probes) - 1)  # each one's likeness to the rest
    top = min(HUB_PROBES + 1, len(probes))
    best = np.sort(np.partition(cosines, len(probes) - top, axis=1)[:, -top:], axis=1)  # ascending, per photo
    hub_all, hub_without = best[:, -HUB_PROBES:].mean(axis=1), best[:, :HUB_PROBES].mean(axis=1)
    calibrated_best = []
    for word in range(len(probes)):
        found = ids[word] >= 0
        if not found.any():
            continue
        row = rows[word, found]
        among = cosines[row, word] >= best[row, -min(HUB_PROBES, len(probes))]  # this word is among the photo's best
        hub = np.where(among, hub_without[row], hub_all[row]) if len(probes) > HUB_PROBES else hub_all[row]
        crowd = scores[word, found][:DENSITY_TOP].mean()
        calibrated_best.append(float((scores[word, found] - HUB_WEIGHT * hub).max()) - SENSE_WEIGHT * others[word]
                               + DENSITY_WEIGHT * crowd)
    return float(np.quantile(calibrated_best, FLOOR_QUANTILE)) if calibrated_best else None


def _kept(path: Path, key: dict) -> float | None:
    """The floor kept at `path` for `key`, or None: read only from a small regular file (never through a link,
    never waiting on a FIFO), and only a calibrated score a library can have (|score| < MAX_SCORE)."""
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
    if saved.get("for") != key or saved.get("rule") != RULE or not isinstance(floor, float):
        return None
    if not -MAX_SCORE < floor < MAX_SCORE:
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
