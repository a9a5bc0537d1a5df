"""Queries: sentences and images (combined with + and -) in, ranked items of one kind out.

text→image, image→image and image→text are all one operation here: embed the query terms, combine them into one
unit vector, and take the nearest items of a kind, optionally among those a filter allows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError, NotFound
from clipdex.retrieval.storage.fulltext import query_words
from clipdex.retrieval.search.hits import UNDERSTOOD, Filters, Hit
from clipdex.retrieval.search.hybrid import fuse, fused_scores, snippet, word_places
from clipdex.retrieval.media.images import open_image
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import CAPTION, IMAGE
from clipdex.retrieval.search.terms import Term, parse_terms
from clipdex.retrieval.media.video import is_video, read_frames


def _one_per_file(hits: list[Hit]) -> list[Hit]:
    """The first (best) hit of each file: a video is answered once, at its best moment."""
    seen: set[tuple[str, str | None]] = set()
    kept = []
    for hit in hits:
        if (hit.kind, hit.path) not in seen or hit.kind != IMAGE:
            seen.add((hit.kind, hit.path))
            kept.append(hit)
    return kept


_KINDS = {"place": {"place", "near"}, "date": {"after", "before"}, "camera": {"cameras"}}  # (config.READ_KINDS)


class Searcher:
    """Queries over one library with its bound model; the model is loaded on the first query that needs it."""

    def __init__(self, library: Library, device: str = "auto", precision: str = "fp32", progress=None,
                 language: str | None = None) -> None:
        self.library = library
        self.language = language  # what the user said the query's language is (--lang), if anything
        self.device = device
        self.precision = precision
        self.progress = progress  # shows the one long step a query may take: embedding the vocabulary
        self.notes: list[str] = []  # things the user should know about how a query was read
        self.understood: dict[str, str | None] | None = None  # what the last search's sentence was read as

    @property
    def encoder(self):
        return self._noted(self.library.encoder(self.device, self.precision))

    def _noted(self, encoder):
        """The encoder, its notes (e.g. a precision it could not use) passed on to the user once."""
        self.notes += [n for n in encoder.notes if n not in self.notes]
        return encoder

    def text_vector(self, text: str) -> np.ndarray:
        if not text.strip():
            raise ClipdexError("the query text is empty")
        encoder = self._noted(self.library.text_encoder(self.device, self.precision))
        if self.language is not None:
            from clipdex.retrieval.models.languages import query_language

            code = query_language(self.language)
            if encoder.needs_language:
                encoder.read_in(code)
            elif "--lang" not in " ".join(self.notes):
                self.notes.append("--lang is for models that must be told a query's language (NLLB); this one reads "
                                  "the query as it is")
        tokens = encoder.count_tokens(text)
        if tokens > encoder.context_length:
            self.notes.append(
                f"query truncated to the model's {encoder.context_length} tokens (it had {tokens}): "
                f"only its start was used"
            )
        return encoder.encode_texts([text])[0]

    def image_vector(self, image: Image.Image | Path | str) -> np.ndarray:
        if not isinstance(image, Image.Image):
            path = Path(image)
            if not path.exists():  # (one that is not a regular file is refused where it is opened)
                raise NotFound(f"query image not found: {path}")
            if is_video(path.name):  # as the library holds it: a frame (the first stands for the whole video)
                image = read_frames(path, self.encoder.image_size, max_frames=1).frames[0]
                self.notes.append(f"{path.name} is a video: its first frame was used")
            else:
                image = open_image(path, self.encoder.image_size)
        return self.encoder.encode_images([image])[0]

    def terms_vector(self, terms: Sequence[Term]) -> np.ndarray:
        """The weighted sum of the terms' unit vectors, re-normalised."""
        total = sum(t.weight * (self.image_vector(t.value) if t.is_image else self.text_vector(t.value)) for t in terms)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise ClipdexError("the query terms cancel each other out")
        return (total / norm).astype(np.float32)

    def nearest(self, vector: np.ndarray, kind: str, k: int, filters: Filters | None = None) -> list[Hit]:
        """The k items of `kind` with the highest cosine to `vector` among those `filters` allow, best first; a
        video once, at its best frame (more frames are fetched until k files are found or none are left)."""
        filters, fetch = filters or Filters(), k
        while True:
            ranked = self._ranked(vector, kind, fetch, filters)
            hits = _one_per_file(self._hits(ranked, kind))
            if len(hits) >= k or len(ranked) < fetch:
                return hits[:k]
            fetch *= 4

    def _ranked(self, vector: np.ndarray, kind: str, k: int, filters: Filters) -> list[tuple[int, float]]:
        if k < 1:
            raise ClipdexError("-k must be at least 1")
        index = self.library.vector_index(kind)
        allowed = None
        if filters.restricts_items:
            allowed = self.library.store.ids_matching(kind, filters)
        if index.count == 0 or (allowed is not None and len(allowed) == 0):
            return []
        scores, ids = index.search(vector[None, :], k, allowed)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        if filters.min_score is not None:
            found = [(i, s) for i, s in found if s >= filters.min_score]
        return found

    def _hits(self, found: Sequence[tuple[int, float]], kind: str, words: Sequence[str] = ()) -> list[Hit]:
        store = self.library.store
        rows = store.items([i for i, _ in found])
        tags = store.tags_of(list(rows)) if kind == IMAGE and store.tags_enabled else None
        hits = []
        for item_id, score in found:
            row = rows.get(item_id)
            if row is None:
                continue
            if kind == CAPTION:
                hits.append(Hit(item_id, kind, score, caption=row["key"]))
                continue
            text = snippet(row["ocr_text"], words) if words and row["ocr_text"] else None
            taken = row["taken_at"] if row["taken_at"] is not None else row["mtime"]
            hits.append(Hit(item_id, kind, score, path=row["key"], ocr=text, taken=taken, width=row["width"],
                            height=row["height"], time=row["frame_time"], tags=tags and tags[item_id]))
        return hits

    def search(
        self, terms: Sequence[Term] | Sequence[str], k: int = 10, filters: Filters | None = None,
        mode: str = "hybrid", sort: str = "score", literal: bool = False, unread: Sequence[str] = (),
    ) -> list[Hit]:
        """Images for a combined query; `terms` may be parsed Terms or the raw tokens a user typed.

        mode "clip" ranks by CLIP alone, "text" by the words found in the photos and their file and folder names
        alone (no model needed), "hybrid" fuses the two (hybrid.py). sort "date" orders the matches newest first.
        Unless `literal`, a place, date or camera the text names is read out of it as a filter (sentence.py), but
        for the kinds `unread` names."""
        if mode not in config.SEARCH_MODES:
            raise ClipdexError(f"--mode must be one of {', '.join(config.SEARCH_MODES)}, not {mode!r}")
        if sort not in config.SORT_ORDERS:
            raise ClipdexError(f"--sort must be one of {', '.join(config.SORT_ORDERS)}, not {sort!r}")
        if terms and isinstance(terms[0], str):
            terms = parse_terms(terms)
        filters = filters or Filters()
        self.understood = dict.fromkeys(UNDERSTOOD)
        if not literal:
            terms, filters = self._read_sentences(terms, filters, unread)
        said = [t for t in terms if not t.is_image]  # (an image's path is spelt as each caller spelt it)
        self.understood["text"] = " ".join(
            f"{'+' if t.weight > 0 else '-'} {t.value}" if n else t.value for n, t in enumerate(said))
        words = query_words(" ".join(t.value for t in terms if not t.is_image and t.weight > 0))
        unwanted = query_words(" ".join(t.value for t in terms if not t.is_image and t.weight < 0))
        if mode == "text":
            if not words:
                raise ClipdexError("--mode text needs words to look for (not only images or common words)")
            found = self._text_matches(words, unwanted, filters, self.library.store.count(IMAGE), alone=True,
                                       wanted=max(k, config.HYBRID_CANDIDATES))
            hits = _one_per_file(self._hits(found, IMAGE, words))[:k]
            for hit in hits:
                hit.why = word_places(hit.path, hit.ocr, words)
        else:
            words = words if mode == "hybrid" else []
            vector = self.terms_vector(terms)
            hits, matched = self._clip_or_hybrid(vector, k, filters, words, unwanted)
            strong_picture = None
            if not any(t.is_image for t in terms):
                strong_picture = self._tell_strength(hits, matched, words, vector)
            for n, hit in enumerate(hits):
                places = word_places(hit.path, hit.ocr, words) if hit.id in matched else []
                by_picture = not places or (strong_picture(hit) if strong_picture else n < k and hit.rank_score is None)
                hit.why = (["picture"] if by_picture else []) + places
        if sort == "date":
            hits.sort(key=lambda hit: (hit.taken is None, -(hit.taken or 0.0)))
        return hits

    def _read_sentences(self, terms: Sequence[Term], filters: Filters,
                        unread: Sequence[str] = ()) -> tuple[list[Term], Filters]:
        """Each wanted sentence with the place, date and camera it names taken out, and those as filters (one
        given as an option wins); what was read is said in a note and kept in `understood`."""
        from clipdex.retrieval.search.sentence import read_sentence

        store, read, changes = self.library.store, [], {}
        for term in terms:
            if term.is_image or term.weight <= 0:
                read.append(term)
                continue
            read_already = [kind for kind, names in _KINDS.items() if names & set(changes)]  # (the first wins)
            reading = read_sentence(term.value, store.places, lambda: [camera for camera, _ in store.cameras()],
                                    unread=(*unread, *read_already))
            if reading.phrases:
                self.notes.append(f"read as: {reading.line()} (--literal: the words as typed)")
                wanted = {"place": reading.place, "near": reading.near, "cameras": reading.cameras,
                          "after": reading.after, "before": reading.before}
                taken = {name: value for name, value in wanted.items()
                         if value and not getattr(filters, name) and name not in changes}
                changes.update(taken)
                self._understand(reading, taken)
            read.append(Term(reading.text if reading.phrases else term.value, False, term.weight))
        return read, replace(filters, **changes) if changes else filters

    def _understand(self, reading, taken: dict) -> None:
        """What the sentence was read as, for --json and the page's chips: only the filters that applied."""
        from clipdex.retrieval.search.hits import iso_date

        said = {"place": reading.place_label if {"place", "near"} & set(taken) else None,
                "after": iso_date(reading.after)[:10] if "after" in taken else None,
                "before": iso_date(reading.before)[:10] if "before" in taken else None,
                "camera": reading.camera_label if "cameras" in taken else None}
        self.understood.update({name: value for name, value in said.items() if value})

    def _text_matches(
        self, words: Sequence[str], unwanted: Sequence[str], filters: Filters, images: int, alone: bool = False,
        wanted: int = config.HYBRID_CANDIDATES,
    ) -> list[tuple[int, float]]:
        """The best `wanted` full-text matches (id, relevance), best first, among the items `filters` allow; a photo
        holding a word of a subtracted term ("stop - sign") is no text match. `alone`: no CLIP ranking beside (see
        fulltext). Under a filter every match is read before the filter applies: the best few hundred may all lie
        outside it."""
        store = self.library.store
        found = store.text_search(words, images if filters.restricts_items else wanted, images, alone)
        if found and unwanted:
            excluded = {i for i, _ in store.text_search(unwanted, images, images)}
            found = [(i, r) for i, r in found if i not in excluded]
        if filters.restricts_items and found:
            allowed = set(store.ids_matching(IMAGE, filters).tolist())
            found = [(i, r) for i, r in found if i in allowed][:wanted]
        return found

    def _clip_or_hybrid(
        self, vector: np.ndarray, k: int, filters: Filters, words: Sequence[str], unwanted: Sequence[str]
    ) -> tuple[list[Hit], set[int]]:
        """The hits, and the ids of those that hold the query's words."""
        store = self.library.store
        images = self.library.vector_index(IMAGE).count
        text = self._text_matches(words, unwanted, filters, images) if words else []
        if not text:
            return self.nearest(vector, IMAGE, k, filters), set()
        unfiltered = replace(filters, min_score=None)  # --min-score: after fusion
        clip = self._ranked(vector, IMAGE, max(k, config.HYBRID_CANDIDATES), unfiltered)
        cosine = dict(clip)
        missing = [i for i, _ in text if i not in cosine]  # text matches CLIP ranked too low to list
        cosine.update({i: float(v @ vector) for i, v in store.vectors_of(missing).items()} if missing else {})
        matched = {i for i, _ in text}
        clip_order, text_order = [i for i, _ in clip], [i for i, _ in text if i in cosine]
        order, fused = fuse(clip_order, text_order), fused_scores(clip_order, text_order)
        if filters.min_score is not None:  # a photo holding the words passes whatever its cosine
            order = [i for i in order if i in matched or cosine[i] >= filters.min_score]
        hits = _one_per_file(self._hits([(i, cosine[i]) for i in order], IMAGE, words))[:k]
        for hit in hits:  # the order follows the fused score, not the cosine: it is shown beside it
            hit.rank_score = fused[hit.id]
        return hits, matched

    def _tell_strength(self, hits: list[Hit], matched: set[int], words: Sequence[str], vector: np.ndarray):
        """Mark each hit of a text query strong or weak (relevance.py: its cosine, calibrated by how much the query
        reads like made-up words, how crowded the library is around it and how much made-up words land on the photo
        anyway, against the floor made-up words reach here; a photo whose name or text shown holds every word of
        the query is strong whatever its cosine), and say so when some are weak. Returns whether a hit is strong by
        its picture alone (None: no floor, an empty library)."""
        from clipdex.retrieval.search.relevance import lowest_strong, probe_vectors

        floor = self.library.relevance_floor(self.device, self.precision)
        if floor is None:
            return None
        probes = probe_vectors(self.library.text_encoder(self.device, self.precision))
        lowest = lowest_strong(self.library.vector_index(IMAGE), self.library.store.vectors_of, vector, probes,
                               [(hit.id, hit.score) for hit in hits], floor)
        by_picture = lambda hit: lowest is not None and hit.score >= lowest  # noqa: E731
        for hit in hits:
            shown = f"{hit.path} {hit.ocr or ''}".casefold()
            holds = hit.id in matched and all(word.casefold() in shown for word in words)
            hit.strong = by_picture(hit) or holds
        weak = sum(not hit.strong for hit in hits)
        if weak:
            strong = len(hits) - weak
            self.notes.append(f"{strong or 'no'} strong match{'' if strong == 1 else 'es'}, {weak} weak: less likely "
                              f"matches, scoring no higher than random letters do in this library")
        return by_picture

    def search_text(self, text: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        return self.nearest(self.text_vector(text), IMAGE, k, filters)

    def search_image(self, image: Image.Image | Path | str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        return self.nearest(self.image_vector(image), IMAGE, k, filters)

    def captions(self, image: Image.Image | Path | str | np.ndarray, k: int = 10, source: str = "auto") -> list[Hit]:
        """Captions for an image (or an image vector) from the library's corpus, the vocabulary, or both (by
        cosine). "auto": the corpus when the library has one, else the vocabulary."""
        if source not in config.CAPTION_SOURCES:
            raise ClipdexError(f"--from takes one of {', '.join(config.CAPTION_SOURCES)}, not {source!r}")
        corpus = self.library.vector_index(CAPTION).count
        if source == "auto":
            source = "corpus" if corpus else "builtin"
        if source == "corpus" and not corpus:
            raise ClipdexError("the library has no caption corpus: add one with `clipdex add-captions FILE`, "
                               "or describe with the built-in vocabulary (--from builtin)")
        vector = image if isinstance(image, np.ndarray) else self.image_vector(image)
        hits = self.nearest(vector, CAPTION, k) if source in ("corpus", "all") else []
        if source in ("builtin", "all"):
            vocabulary = self.library.vocabulary(self.device, self.precision, self.progress)
            label = "builtin" if self.library.store.tag_concepts() is None else "vocabulary"  # the library's own
            hits += [Hit(0, CAPTION, score, caption=concept, source=label)
                     for concept, score in vocabulary.describe(vector, k)]
        return sorted(hits, key=lambda hit: -hit.score)[:k]
