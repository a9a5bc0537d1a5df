"""`index`: scan → plan → embed → write, one transaction per batch, then top up the FAISS cache.

A crash or Ctrl-C loses at most the batch in flight: everything written before is committed, and the next
run's change detection finds exactly what is still missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from clipdex.indexer.changes import plan_changes
from clipdex.indexer.scan import FileStat, root_path, scan
from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import IMAGE, NewItem

if TYPE_CHECKING:
    from clipdex.retrieval.models.openclip.encoder import Encoder

Progress = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    reembedded: dict | None = None  # {"images": n, "captions": n} when the run re-embedded the library first
    ocr: dict | None = None  # {"read": n, "with_text": n} when the run read text in images (index --ocr)
    tags: dict | None = None  # {"tagged": n, "with_tags": n} when the run tagged images (index --tags)
    facts: dict | None = None  # {"read": n, "placed": n}: files whose position and camera were read, and placed

    def as_json(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items() if v is not None}


def _item(file: FileStat, sha256: str, decoded, vector) -> NewItem:
    """The row of an embedded file; when the OCR gate saw no text it is already read (none found), else unread."""
    no_text = "" if decoded.may_have_text is False else None
    return NewItem(
        IMAGE, file.path, vector, sha256, file.size, file.mtime, decoded.width, decoded.height, decoded.taken_at,
        ocr_text=no_text, ocr_words=no_text, real_path=file.real,
    )


def _frames(file: FileStat, sha256: str, decoded, vectors) -> list[NewItem]:
    """A video's rows: one a sampled frame, sharing the file's key, each with its moment (never OCR-read)."""
    return [
        NewItem(IMAGE, file.path, vector, sha256, file.size, file.mtime, decoded.width, decoded.height,
                decoded.taken_at, ocr_text="", ocr_words="", frame=n, frame_time=moment, real_path=file.real)
        for n, (vector, moment) in enumerate(zip(vectors, decoded.times))
    ]


def index_folders(
    library: Library,
    roots: Sequence[Path],
    encoder: "Encoder | Callable[[], Encoder]",
    exclude: Sequence[str] = (),
    include_hidden: bool = False,
    batch_size: int = config.DEFAULT_BATCH_SIZE,
    workers: int = config.DEFAULT_DECODE_WORKERS,
    progress: Progress | None = None,
    embedder=None,
) -> IndexReport:
    """Bring the library's images under `roots` up to date with the disk, holding the library's writer lock.

    `embedder` embeds the files (default: LocalEmbedder with `encoder`); whichever it is, scanning, change
    detection and every write happen here, in this process. `encoder` may be a function that loads it, for a
    library already bound to that model: it is then called only when some file needs embedding, so checking an
    unchanged library never imports torch."""
    with library.writer():
        return _index_folders(
            library, roots, encoder, exclude, include_hidden, batch_size, workers, progress, embedder
        )


def _index_folders(library, roots, encoder, exclude, include_hidden, batch_size, workers, progress, embedder):
    started = time.perf_counter()
    report = IndexReport()
    if callable(encoder):
        library.require_identity()  # a new library is bound by the encoder itself, before anything is written
    else:
        library.use_encoder(encoder)
    store = library.store
    scanned = scan(roots, exclude, include_hidden)
    advance = progress("checking changed files", None) if progress else None
    stored = store.images()
    plan = plan_changes(
        scanned.files,
        stored,
        [root_path(r) for r in roots],
        on_hashed=advance and (lambda: advance(1)),
        unseen=scanned.unseen,
    )
    failures = scanned.failures + plan.failures
    try:
        if plan.moved or plan.removed or plan.relinked:
            store.write(moves=[(i, f.path, f.real, f.size, f.mtime) for i, f in plan.moved], deletes=plan.removed,
                        relinks=plan.relinked)
        store.touch((i, f.size, f.mtime) for i, f in plan.touched)
        report.moved, report.removed = len(plan.moved), len(plan.removed)
        report.unchanged = plan.unchanged + len(plan.touched)

        jobs = [(None, f, digest) for f, digest in plan.new] + [(i, f, digest) for i, f, digest in plan.modified]
        advance = progress("embedding", len(jobs)) if progress and jobs else None
        if jobs and callable(encoder):
            encoder = encoder()
            library.use_encoder(encoder)
        if jobs and embedder is None:
            from clipdex.indexer.embedders import LocalEmbedder  # imports torch: only when there is work

            embedder = LocalEmbedder(encoder, batch_size, workers, store.ocr_enabled)
        for batch in embedder.embed([f.path for _, f, _ in jobs]) if jobs else ():
            inserts, updates, replaced, added, updated = [], [], [], 0, 0
            for decoded, vector in batch.done:
                item_id, file, digest = jobs[decoded.position]
                if decoded.times is not None:  # a video: a row a frame; a changed one has all its rows replaced
                    inserts += _frames(file, decoded.sha256 or digest, decoded, vector)
                    replaced += [item_id] if item_id is not None else []
                elif item_id is None:
                    inserts.append(_item(file, decoded.sha256 or digest, decoded, vector))
                else:
                    updates.append((item_id, _item(file, decoded.sha256 or digest, decoded, vector)))
                added, updated = added + (item_id is None), updated + (item_id is not None)
            if inserts or updates:
                store.write(inserts=inserts, updates=updates, deletes=replaced)
                store.clear_failures(sorted({item.key for item in inserts} | {item.key for _, item in updates}))
            report.added += added
            report.updated += updated
            failures += [(jobs[d.position][1].path, d.error) for d in batch.failed]
            if advance:
                advance(len(batch.done) + len(batch.failed))
    except KeyboardInterrupt:
        report.interrupted = True
    store.record_failures(failures)
    report.failed = [{"path": p, "error": e} for p, e in failures]
    if not report.interrupted:
        library.save_index(IMAGE)  # top up and save the cache now, not on the next query
    report.seconds = time.perf_counter() - started
    return report
