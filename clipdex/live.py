"""The library kept in sync with its folders (`clipdex watch`, `serve --watch`): a catch-up, then an incremental
index of whatever changed, batch after batch, holding no model while idle."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from clipdex import api
from clipdex.indexer.options import IndexOptions
from clipdex.retrieval import config
from clipdex.retrieval.library import Library


def return_freed_memory() -> None:
    """Give memory freed by a dropped model back to the system. glibc keeps freed blocks below its (adaptive) mmap
    threshold in the heap, so an idle `watch` would go on holding the ~500 MB a batch used (measured:
    bench/live_start.py); malloc_trim releases them. Elsewhere this does nothing."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def watch(
    library: Library,
    paths: Sequence[Path | str],
    stop: threading.Event | None = None,
    on_batch: Callable[[list[str], object], None] | None = None,
    on_watching: Callable[[], None] | None = None,
    settle: float = config.WATCH_SETTLE_SECONDS,
    options: IndexOptions = IndexOptions(),
) -> dict:
    """Catch up (an ordinary incremental `index` of `paths`), then keep the library in sync with them as files
    appear, change, move or disappear, until `stop` is set or Ctrl-C. `options` are `index`'s; each batch of
    changes is indexed with the model the catch-up bound. `on_watching` is called once the watcher runs (changes
    made from then on are seen). Returns totals and whether it was interrupted."""
    from clipdex.indexer.watch import watch_changes

    stop = stop or threading.Event()
    totals = {"batches": 0, "added": 0, "updated": 0, "moved": 0, "removed": 0, "failed": 0, "interrupted": False}

    def run(folders: Sequence[Path | str], options: IndexOptions) -> object:
        try:
            report = api.index(library, folders, options)
        finally:  # idle between batches, the model and the index are not held (reloaded in well under a second)
            library.forget_model()
            return_freed_memory()
        for key in ("added", "updated", "moved", "removed"):
            totals[key] += getattr(report, key)
        totals["failed"] += len(report.failed)
        totals["interrupted"] = report.interrupted
        return report

    try:
        run(paths, options)
        options = replace(options, model=None, pretrained=None, export_text=False, ocr=False, tags=False,
                          vocabulary=None)  # (the model is bound by now; ocr and tags are remembered by the library)
        watching = False
        for folders in [] if totals["interrupted"] else watch_changes([Path(p) for p in paths], stop, settle):
            if not watching:  # the watcher runs: catch up with what changed since the first scan, then say so
                watching = True
                folders = list(paths)
            if not folders:
                continue
            report = run(folders, options)
            totals["batches"] += 1
            if on_batch and (report.added or report.updated or report.moved or report.removed or report.failed):
                on_batch([str(f) for f in folders], report)
            if report.interrupted:
                break
            if on_watching and totals["batches"] == 1:
                on_watching()
    except KeyboardInterrupt:
        totals["interrupted"] = True
    return totals
