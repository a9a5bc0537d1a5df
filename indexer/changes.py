"""Change detection: cheap first (size, mtime), exact second (sha256), so touched or moved files whose bytes
are the same keep their vectors and only new or modified content is embedded.

A file at a path the library has never seen is hashed here only when it could be a moved one (a vanished item
of its size exists); otherwise it is new for sure, and its decode worker hashes the bytes it reads anyway."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

from clipdex.indexer.scan import FileStat, under
from clipdex.retrieval.digest import file_sha256
from clipdex.retrieval.storage.store import StoredImage


@dataclass
class Plan:
    new: list[tuple[FileStat, str | None]] = field(default_factory=list)  # (file, sha256 or None: not yet hashed)
    modified: list[tuple[int, FileStat, str]] = field(default_factory=list)  # (item id, file, sha256)
    moved: list[tuple[int, FileStat]] = field(default_factory=list)
    touched: list[tuple[int, FileStat]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    relinked: list[tuple[str, str]] = field(default_factory=list)  # (path, real path): the same path, led elsewhere
    unchanged: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def plan_changes(
    scanned: Sequence[FileStat],
    stored: Sequence[StoredImage],
    roots: Sequence[str],
    on_hashed: Callable[[], None] | None = None,
    unseen: Sequence[str] = (),
) -> Plan:
    """Compare a scan of `roots` with the stored images; items outside the roots are left alone, and so are items
    at or under a path the scan could not see (`unseen`: a folder it could not list, a file it could not stat)."""
    plan = Plan()
    by_path = {s.path: s for s in stored}
    scanned_paths = {f.path for f in scanned}

    def hashed(path: str) -> str | None:
        try:
            return file_sha256(path)
        except OSError as exc:
            plan.failures.append((path, f"cannot read: {exc.strerror or exc}"))
            return None
        finally:
            if on_hashed:
                on_hashed()

    unknown: list[FileStat] = []
    for f in scanned:
        known = by_path.get(f.path)
        if known is None:
            unknown.append(f)
            continue
        if known.real != f.real:  # a link re-pointed, a disk mounted elsewhere (or a row from before schema 4)
            plan.relinked.append((f.path, f.real))
        if (known.size, known.mtime) == (f.size, f.mtime):
            plan.unchanged += 1
        elif (digest := hashed(f.path)) is not None:
            if digest == known.sha256:
                plan.touched.append((known.id, f))
            else:
                plan.modified.append((known.id, f, digest))

    vanished: dict[str, list[StoredImage]] = defaultdict(list)
    for s in stored:
        if s.path not in scanned_paths and under(s.path, roots) and not under(s.path, unseen):
            vanished[s.sha256].append(s)
    vanished_sizes = {s.size for group in vanished.values() for s in group}
    for f in unknown:
        if f.size not in vanished_sizes:
            plan.new.append((f, None))
            continue
        digest = hashed(f.path)
        if digest is None:
            continue
        if vanished.get(digest):
            plan.moved.append((vanished[digest].pop().id, f))
        else:
            plan.new.append((f, digest))
    plan.removed = [s.id for group in vanished.values() for s in group]
    return plan
