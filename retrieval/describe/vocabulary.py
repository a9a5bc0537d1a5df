"""The vocabulary: photo concepts that describe an image (`captions --from builtin`) and tag it (`index --tags`)
on a library that has no caption corpus of its own.

Each concept is embedded as the normalised mean of a few prompt templates (the CLIP paper's prompt ensembling:
"a photo of a dog." and its variants agree better with photos than the bare word), once per model and concept
list, and kept in the model cache; with a prepared model this needs no torch."""

from __future__ import annotations

import hashlib
import os
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.digest import ours_alone
from clipdex.retrieval.errors import ClipdexError

BUILTIN = Path(__file__).with_name("vocabulary.txt")
BUILTIN_NAME = "builtin"  # how `index --tags --vocabulary` names the built-in list

# Written here after the CLIP paper's ensembling: photo-like phrasings of one concept, averaged. {a}: the concept
# with its article ("an owl"), {c}: the concept alone.
TEMPLATES = (
    "a photo of {a}.",
    "a photo of the {c}.",
    "a close-up photo of {a}.",
    "a bright photo of the {c}.",
    "a dark photo of the {c}.",
    "a photo of a small {c}.",
    "a photo of a large {c}.",
    "a picture of {a}.",
)


def _with_article(concept: str) -> str:
    """'a dog', 'an owl' (plural and mass concepts read acceptably with one too)."""
    return ("an " if concept[:1] in "aeiou" else "a ") + concept


def read_concepts(path: Path | None = None) -> list[str]:
    """The concepts of a vocabulary file (the built-in one when `path` is None): one a line; lines starting with
    '#', blank lines and repeats (in any case) ignored. A concept becomes a tag, a keyword in XMP sidecars and
    text on screens, so one holding a control or format character, or longer than a concept can be, is refused
    with its line number rather than passed on."""
    source = path or BUILTIN
    if not source.is_file():  # (a FIFO would block the read; a folder is no list)
        raise ClipdexError(f"cannot read the vocabulary {source}: not a file")
    if source.stat().st_size > config.VOCABULARY_MAX_BYTES:  # refused before it is read into memory
        raise ClipdexError(f"the vocabulary {source} is larger than {config.VOCABULARY_MAX_BYTES // 2**20} MB; "
                           f"at most {config.VOCABULARY_MAX_CONCEPTS:,} concepts are used")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ClipdexError(f"cannot read the vocabulary {source}: {reason}") from None
    concepts: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):  # only newlines end a line (not U+0085 or U+2028)
        concept = " ".join(line.split())
        if not concept or concept.startswith("#"):
            continue
        if len(concept) > config.VOCABULARY_MAX_CHARS:
            raise ClipdexError(f"the vocabulary {source}, line {number}: a concept of more than "
                               f"{config.VOCABULARY_MAX_CHARS} characters")
        if any(unicodedata.category(ch)[0] == "C" for ch in concept):
            raise ClipdexError(f"the vocabulary {source}, line {number}: a control or format character "
                               f"(U+{next(ord(ch) for ch in concept if unicodedata.category(ch)[0] == 'C'):04X})")
        concepts.setdefault(concept.casefold(), concept)
    if not concepts:
        raise ClipdexError(f"the vocabulary {source} holds no concepts (one a line; '#' starts a comment line)")
    if len(concepts) > config.VOCABULARY_MAX_CONCEPTS:
        raise ClipdexError(f"the vocabulary {source} holds {len(concepts):,} concepts; at most "
                           f"{config.VOCABULARY_MAX_CONCEPTS:,} are used")
    return list(concepts.values())


@dataclass
class Vocabulary:
    """Concepts with their unit vectors in one model's space."""

    concepts: list[str]
    vectors: np.ndarray  # (concepts, dim) float32, unit rows

    @property
    def key(self) -> str:
        """Names this vocabulary in this model's space: tags made with another key are made again."""
        return hashlib.sha256(self.vectors.tobytes()).hexdigest()[:16]

    def describe(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k concepts nearest to an image vector, with their cosines."""
        scores = self.vectors @ vector
        best = np.argsort(-scores, kind="stable")[:k]
        return [(self.concepts[i], float(scores[i])) for i in best]

    def tags(self, vectors: np.ndarray, logit_scale: float) -> list[list[tuple[str, float]]]:
        """Each image's tags: the concepts whose probability under CLIP's softmax over the whole vocabulary (at
        the model's own logit scale) reaches config.TAG_MIN_PROBABILITY, at most config.TAG_MAX_PER_IMAGE."""
        logits = logit_scale * (np.atleast_2d(vectors) @ self.vectors.T)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        found = []
        for row in probabilities:
            best = np.argsort(-row, kind="stable")[: config.TAG_MAX_PER_IMAGE]
            found.append([(self.concepts[i], round(float(row[i]), 4)) for i in best
                          if row[i] >= config.TAG_MIN_PROBABILITY])
        return found


def load_vocabulary(encoder, concepts: Sequence[str] | None = None, progress=None) -> Vocabulary:
    """`concepts` (the built-in list when None) in `encoder`'s space: read from the model cache, else embedded
    now (a named step, once per model and list) and kept."""
    concepts = read_concepts() if concepts is None else list(concepts)
    vectors = cached_vectors(encoder, "vocabularies", [*TEMPLATES, "", *concepts], len(concepts),
                             lambda: _embed(encoder.encode_texts, concepts, progress))
    return Vocabulary(concepts, vectors)


def cached_vectors(encoder, folder: str, key: Sequence[str], count: int, embed: Callable[[], np.ndarray]) -> np.ndarray:
    """`count` text vectors of `encoder`'s model, named by `key`: from `folder` of the model cache, else embed()
    once and kept there (texts are embedded alike on every run, so a model needs them once)."""
    identity = encoder.identity
    digest = hashlib.sha256("\n".join([identity.name, identity.fingerprint, *key]).encode())
    cached = config.default_cache_dir() / folder / f"{digest.hexdigest()[:24]}.npy"
    vectors = _read_cached(cached, count, identity.dim)
    if vectors is None:
        vectors = embed()
        _write_cached(cached, vectors)
    return vectors


def _embed(encode_texts: Callable[[list[str]], np.ndarray], concepts: Sequence[str], progress) -> np.ndarray:
    # (unit "once": a step a person waits on the first time, said in a line even where no bar is drawn)
    advance = progress("embedding the vocabulary (once per model)", len(concepts), "once") if progress else None
    rows = []
    chunk = max(1, config.VOCABULARY_BATCH // len(TEMPLATES))
    for start in range(0, len(concepts), chunk):
        part = concepts[start : start + chunk]
        prompts = [template.format(a=_with_article(c), c=c) for c in part for template in TEMPLATES]
        mean = encode_texts(prompts).reshape(len(part), len(TEMPLATES), -1).mean(axis=1)
        rows.append(mean / np.linalg.norm(mean, axis=1, keepdims=True))
        if advance:
            advance(len(part))
    return np.concatenate(rows).astype(np.float32)


def _read_cached(path: Path, count: int, dim: int) -> np.ndarray | None:
    if not ours_alone(path):
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    ok = vectors.shape == (count, dim) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    return vectors if ok else None


def _write_cached(path: Path, vectors: np.ndarray) -> None:
    """Best effort, through a temporary file: an unwritable cache only means embedding again next time."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            np.save(handle, vectors, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # (a cache path through a file: NotADirectoryError)
            pass
