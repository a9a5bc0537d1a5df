"""`watch`: keep a library in sync with folders as files appear, change, move and disappear.

watchfiles (inotify / FSEvents / ReadDirectoryChangesW, through Rust's notify) reports changes; a batch is taken
once the folders have been quiet for `settle` seconds (a file being copied keeps changing until it is whole), or
after `max_wait` seconds of a steady stream, so a burst of a thousand files becomes a few batches. Each batch is an
ordinary incremental index of the folders that changed, with the same transactions, change detection and lock:
a move is found by its content, a deleted file leaves, and stopping at any point loses nothing committed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from clipdex.indexer.scan import root_path, under
from clipdex.retrieval import config


def changed_folders(changes: Iterable[str], roots: Sequence[str]) -> list[str]:
    """The fewest folders whose re-scan covers every changed path: each path's folder (the path itself when it
    is a folder now), kept inside the watched roots, with folders inside another one dropped."""
    folders = set()
    for path in changes:
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        while folder and not os.path.isdir(folder):  # a deleted folder: its nearest surviving parent
            folder = os.path.dirname(folder)
        root = next((r for r in roots if under(folder, [r])), None)
        if root is None:  # above every root (a root itself went away): re-scan the roots it held
            folders.update(r for r in roots if under(r, [folder]))
            continue
        folders.add(folder)
    ordered = sorted(folders)
    return [f for f in ordered if not any(f != o and under(f, [o]) for o in ordered)]


def watch_changes(
    roots: Sequence[Path],
    stop: threading.Event,
    settle: float = config.WATCH_SETTLE_SECONDS,
    max_wait: float = config.WATCH_MAX_WAIT_SECONDS,
) -> Iterator[list[str]]:
    """Batches of folders to re-index, until `stop` is set (or Ctrl-C in the main thread). An empty batch now and
    then says the watcher is running and the folders are quiet: the first one marks when changes stop being
    missed (what changed before it must be caught up by a scan)."""
    from watchfiles import watch

    watched = [root_path(r) for r in roots]
    for changes in watch(
        *watched, step=int(settle * 1000), debounce=int(max_wait * 1000), stop_event=stop,
        watch_filter=lambda _change, path: _relevant(path), raise_interrupt=True, yield_on_timeout=True,
        rust_timeout=config.WATCH_TICK_MS,
    ):
        yield changed_folders({path for _change, path in changes}, watched)


def _relevant(path: str) -> bool:
    """Images, and anything without an extension (a folder created, renamed or removed)."""
    name = os.path.basename(path)
    if name.startswith("."):
        return False
    extension = os.path.splitext(name)[1].lower()
    return extension in config.IMAGE_EXTENSIONS or not extension
