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


def fuse(clip: Sequence[int], text: Sequence[int], rrf_k: int = config.RRF_K) -> list[int]:
    """Item ids ordered by their fused score; `clip` and `text` are rankings, best first. Ties keep CLIP's order."""
    score: dict[int, float] = {}
    for ranking in (clip, text):
        for rank, item_id in enumerate(ranking, start=1):
            score[item_id] = score.get(item_id, 0.0) + 1.0 / (rrf_k + rank)
    clip_rank = {item_id: n for n, item_id in enumerate(clip)}
    return sorted(score, key=lambda i: (-score[i], clip_rank.get(i, len(clip))))


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
