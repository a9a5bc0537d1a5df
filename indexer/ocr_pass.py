"""The OCR pass of `index --ocr`: read the text in every image whose current content has not been read yet.

It runs after the images are embedded and committed, a batch per transaction, so a crash or Ctrl-C loses at most
the batch in flight and the next run goes on where this one stopped (unread rows are those with no text yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library
from clipdex.retrieval.media.ocr import TextReader


@dataclass
class OcrReport:
    read: int = 0
    with_text: int = 0
    failed: list[dict] = field(default_factory=list)
    interrupted: bool = False


def read_text_in_images(library: Library, progress=None, reader: TextReader | None = None) -> OcrReport:
    """OCR every unread image of the library (holding its writer lock) and remember that the library wants it."""
    report = OcrReport()
    with library.writer():
        store = library.store
        if not store.ocr_enabled:
            store.enable_ocr()
        unread = store.ocr_counts()["unread"]
        advance = progress("reading text (OCR)", unread) if progress and unread else None
        reader = reader or TextReader()
        if unread:
            reader.engine  # loaded now: a missing OCR library is one error, not one per photo
        done: set[int] = set()
        try:
            while batch := [row for row in store.unread_images(config.OCR_BATCH) if row[0] not in done]:
                rows = []
                for item_id, path, sha256 in batch:
                    try:
                        found = reader.read(path)
                    except ClipdexError as exc:  # unreadable now: recorded as read, with nothing found
                        found = ""
                        report.failed.append({"path": path, "error": str(exc)})
                    rows.append((item_id, sha256, found))
                    done.add(item_id)
                store.set_ocr(rows)
                report.read += len(rows)
                report.with_text += sum(1 for row in rows if row[2])
                if advance:
                    advance(len(rows))
        except KeyboardInterrupt:
            report.interrupted = True
    return report
