"""Re-embedding a whole library with another model (after fine-tuning, say).

New vectors are staged beside the current ones and swapped in, with the new model binding, in one transaction
at the end: until then every query still gets consistent answers from the old model, and an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from clipdex.indexer.embedders import LocalEmbedder
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import CAPTION, IMAGE


@dataclass
class ReembedReport:
    images: int = 0
    captions: int = 0
    dropped: list[dict] = field(default_factory=list)  # unreadable now: the swap waits for them


def reembed_library(
    library: Library,
    encoder,
    batch_size: int = config.DEFAULT_BATCH_SIZE,
    workers: int = config.DEFAULT_DECODE_WORKERS,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> ReembedReport:
    """Re-embed every image and caption with `encoder`'s model and switch the library to it, holding the
    writer lock; resumable. Refused (library unchanged) while any image can't be read."""
    with library.writer():
        return _reembed(library, encoder, batch_size, workers, progress)


def _reembed(library: Library, encoder, batch_size: int, workers: int, progress) -> ReembedReport:
    store, fingerprint = library.store, encoder.identity.fingerprint
    report = ReembedReport()
    done = store.staged_ids(fingerprint)
    images = [s for s in store.images() if s.id not in done]
    advance = progress("re-embedding", len(images)) if progress and images else None
    for batch in LocalEmbedder(encoder, batch_size, workers).embed([s.path for s in images]):
        store.stage(fingerprint, [(images[d.position].id, d.sha256, vector) for d, vector in batch.done])
        report.images += len(batch.done)
        report.dropped += [{"path": images[d.position].path, "error": d.error} for d in batch.failed]
        if advance:
            advance(len(batch.done) + len(batch.failed))
    captions = [(i, text) for i, text in store.captions() if i not in done]
    for start in range(0, len(captions), batch_size * 4):
        chunk = captions[start : start + batch_size * 4]
        vectors = encoder.encode_texts([t for _, t in chunk])
        store.stage(fingerprint, [(i, "", vector) for (i, _), vector in zip(chunk, vectors)])
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
    for kind in (IMAGE, CAPTION):
        library.save_index(kind)
    return report
