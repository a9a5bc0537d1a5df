"""The caption corpus: sentences embedded by the text tower and stored as items of kind `caption`."""

from __future__ import annotations

from typing import Sequence

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.store import CAPTION, NewItem


def add_captions(library: Library, encoder, captions: Sequence[str], batch_size: int = config.DEFAULT_BATCH_SIZE * 4) -> tuple[int, int]:
    """Embed and store the captions the library does not hold yet, holding the writer lock; returns (added,
    already present)."""
    with library.writer():
        return _add_captions(library, encoder, captions, batch_size)


def _add_captions(library: Library, encoder, captions: Sequence[str], batch_size: int) -> tuple[int, int]:
    library.use_encoder(encoder)
    present = library.store.caption_keys()
    fresh = [c for c in dict.fromkeys(captions) if c not in present]
    for start in range(0, len(fresh), batch_size):
        chunk = fresh[start : start + batch_size]
        vectors = encoder.encode_texts(chunk)
        library.store.write(inserts=[NewItem(CAPTION, text, vector) for text, vector in zip(chunk, vectors)])
    library.save_index(CAPTION)
    return len(fresh), len(captions) - len(fresh)
