"""The tag pass of `index --tags`: tag every image row not tagged with the library's vocabulary yet.

Tags come from vectors already in the store and the vocabulary's (the text tower, once per model), so no image
is decoded again. A batch per transaction: a crash or Ctrl-C loses at most the batch in flight, and the next
run goes on where this one stopped."""

from __future__ import annotations

from dataclasses import dataclass

from clipdex.retrieval import config
from clipdex.retrieval.library import Library


@dataclass
class TagReport:
    tagged: int = 0
    with_tags: int = 0
    interrupted: bool = False


def tag_images(library: Library, device: str = "auto", progress=None, batch: int = config.TAG_BATCH) -> TagReport:
    """Tag the images not tagged with the current vocabulary (holding the library's writer lock)."""
    report = TagReport()
    with library.writer():
        store = library.store
        identity = library.identity
        if identity is None:
            return report
        vocabulary = library.vocabulary(device, progress=progress)
        key = vocabulary.key
        scale = library.text_encoder(device).logit_scale
        waiting = store.untagged_count(key)
        advance = progress("tagging", waiting) if progress and waiting else None
        try:
            while True:
                ids, vectors = store.untagged(key, identity.dim, batch)
                if not len(ids):
                    break
                found = vocabulary.tags(vectors, scale)
                store.set_tags(key, ids, found)
                report.tagged += len(ids)
                report.with_tags += sum(1 for tags in found if tags)
                if advance:
                    advance(len(ids))
        except KeyboardInterrupt:
            report.interrupted = True
    return report


def tag_into(report, library: Library, device: str, progress=None) -> None:
    """Tag what is untagged, said in an index run's report."""
    done = tag_images(library, device, progress)
    report.tags = {"tagged": done.tagged, "with_tags": done.with_tags}
    report.interrupted = report.interrupted or done.interrupted
