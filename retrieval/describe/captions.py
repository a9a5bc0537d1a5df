"""The caption corpus: sentences embedded by the text tower and stored as items of kind `caption`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Sequence

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import CAPTION, NewItem


@dataclass
class CaptionReport:
    added: int
    already_present: int
    skipped: list[str] = field(default_factory=list)  # entries that were not captions, each with its reason

    def as_json(self) -> dict:
        return {"added": self.added, "already_present": self.already_present, "skipped": self.skipped}


def add_captions(
    library: Library, encoder, captions: Sequence[str], batch_size: int = config.DEFAULT_BATCH_SIZE * 4,
    exclusive: AbstractContextManager = nullcontext(),
) -> tuple[int, int]:
    """Embed and store the captions the library does not hold yet, holding the writer lock; returns (added,
    already present). `exclusive` is held only around each write (a server's query lock): embedding a large
    corpus never keeps queries waiting."""
    with library.writer():
        library.use_encoder(encoder)
        present = library.store.caption_keys()
        fresh = [c for c in dict.fromkeys(captions) if c not in present]
        for start in range(0, len(fresh), batch_size):
            chunk = fresh[start : start + batch_size]
            vectors = encoder.encode_texts(chunk)
            with exclusive:
                library.store.write(inserts=[NewItem(CAPTION, text, vector) for text, vector in zip(chunk, vectors)])
        with exclusive:
            library.save_index(CAPTION)
        return len(fresh), len(captions) - len(fresh)


def remove_captions(library: Library, captions: Sequence[str] | None = None) -> int:
    """Remove these captions from the corpus (all of them with None); returns how many were removed."""
    with library.writer():
        ids = library.store.caption_ids(captions)
        if ids:
            library.store.write(deletes=ids)
            library.save_index(CAPTION)
        return len(ids)
