"""One query box for every intent: CLIP's ranking fused with the full-text ranking (words read in the photo, file
and folder names) by reciprocal rank fusion.

RRF (Cormack et al., SIGIR 2009) adds 1 / (RRF_K + rank) over the rankings an item appears in. It needs no
calibration between a cosine and a text relevance, and it has the property a user expects: an item that matches
the words gains on every item that does not, while among either group CLIP's order still counts. A query whose
words match nothing (most descriptions of a scene) keeps CLIP's ranking exactly.
"""

from __future__ import annotations

from typing import Sequence

from clipdex.retrieval import config


def fused_scores(clip: Sequence[int], text: Sequence[int], rrf_k: int = config.RRF_K) -> dict[int, float]:
    """Each item's fused score, scaled so that an item first in both rankings scores 1.0 (first in one alone 0.5)."""
    score: dict[int, float] = {}
    for ranking in (clip, text):
        for rank, item_id in enumerate(ranking, start=1):
            score[item_id] = score.get(item_id, 0.0) + 1.0 / (rrf_k + rank)
    top = 2.0 / (rrf_k + 1)
    return {item_id: value / top for item_id, value in score.items()}


def fuse(clip: Sequence[int], text: Sequence[int], rrf_k: int = config.RRF_K) -> list[int]:
    """Item ids ordered by their fused score; `clip` and `text` are rankings, best first. Ties keep CLIP's order."""
    score = fused_scores(clip, text, rrf_k)
    clip_rank = {item_id: n for n, item_id in enumerate(clip)}
    return sorted(score, key=lambda i: (-score[i], clip_rank.get(i, len(clip))))


def word_places(path: str, ocr: str | None, words: Sequence[str]) -> list[str]:
    """Where a photo that matched the query's words holds them: "file name", "folder name", "text in the photo"
    (the file name when none is seen as it is: a word the full-text index found by its parts)."""
    folder, _, name = path.replace("\\", "/").rpartition("/")
    places = [place for place, text in (("file name", name), ("folder name", folder), ("text in the photo", ocr))
              if text and any(word.casefold() in text.casefold() for word in words)]
    return places or ["file name"]


def snippet(text: str, words: Sequence[str], width: int = config.OCR_SNIPPET_CHARS) -> str | None:
    """The part of an image's recognised text around the first query word it holds (None when it holds none:
    the match was on the file name)."""
    flat = " ".join(text.split())
    for word in words:
        at = flat.casefold().find(word.casefold())  # also inside a glued "INVOICE9031"
        if at >= 0:
            start = max(0, at - width // 2)
            end = min(len(flat), start + width)
            return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")
    return None
