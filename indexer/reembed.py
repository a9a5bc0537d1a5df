"""Re-embedding a whole library with another model (after fine-tuning, say).

New vectors are staged beside the current ones and swapped in, with the new model binding, in one transaction
at the end: until then every query still gets consistent answers from the old model, and an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from clipdex.indexer.engine import LocalEngine
from clipdex.indexer.pipeline import prepare_text_queries
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library
from clipdex.retrieval.store import CAPTION


@dataclass
class ReembedReport:
    images: int = 0
    captions: int = 0
    dropped: list[dict] = field(default_factory=list)  # unreadable now: the swap waits for them
    notes: list[str] = field(default_factory=list)


def reembed_library(
    library: Library,
    encoder,
    batch_size: int = config.DEFAULT_BATCH_SIZE,
    workers: int = config.DEFAULT_DECODE_WORKERS,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> ReembedReport:
    store, fingerprint = library.store, encoder.identity.fingerprint
    report = ReembedReport()
    done = store.staged_ids(fingerprint)
    images = [s for s in store.images() if s.id not in done]
    advance = progress("re-embedding", len(images)) if progress and images else None
    for batch in LocalEngine(encoder, batch_size, workers).embed([s.path for s in images]):
        store.stage(fingerprint, [(images[d.position].id, vector) for d, vector in batch.done])
        report.images += len(batch.done)
        report.dropped += [{"path": images[d.position].path, "error": d.error} for d in batch.failed]
        if advance:
            advance(len(batch.done) + len(batch.failed))
    captions = [(i, text) for i, text in store.captions() if i not in done]
    for start in range(0, len(captions), batch_size * 4):
        chunk = captions[start : start + batch_size * 4]
        store.stage(fingerprint, list(zip((i for i, _ in chunk), encoder.encode_texts([t for _, t in chunk]))))
        report.captions += len(chunk)
    if report.dropped:
        first = report.dropped[0]
        raise ClipdexError(
            f"{len(report.dropped)} image(s) could not be re-embedded (first: {first['path']}: {first['error']}); "
            f"the library still uses its old model. Reconnect or remove them (`clipdex index PATH` drops deleted "
            f"files), then run again: the {report.images} images done so far are kept"
        )
    store.swap_in_staged(encoder.identity)
    library.forget_model()
    library.use_encoder(encoder)
    for kind in ("image", CAPTION):
        library.vector_index(kind)
    report.notes += prepare_text_queries(encoder, progress)
    return report
