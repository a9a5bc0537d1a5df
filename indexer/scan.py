"""Walking folders for image files, without following links into loops or descending into hidden folders."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Sequence

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError


@dataclass(frozen=True)
class FileStat:
    path: str  # absolute
    size: int
    mtime: float


@dataclass
class ScanResult:
    files: list[FileStat] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _excluded(relative: str, name: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch(relative, pattern) or fnmatch(name, pattern) for pattern in exclude)


def _stat(path: str, result: ScanResult) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        result.failures.append((os.fsencode(path).decode("utf-8", "replace"), "file name is not valid UTF-8"))
        return
    try:
        st = os.stat(path)
    except OSError as exc:
        result.failures.append((path, f"cannot stat: {exc.strerror or exc}"))
        return
    if not stat.S_ISREG(st.st_mode):  # reading a FIFO blocks, a device never ends: neither is a photo
        result.failures.append((path, "not a regular file (a FIFO, socket or device), skipped"))
        return
    result.files.append(FileStat(path, st.st_size, st.st_mtime))


def root_path(root: Path) -> str:
    """The absolute form a root is stored and compared under (links kept as given, not resolved)."""
    return os.path.abspath(os.path.expanduser(str(root)))


def scan(roots: Sequence[Path], exclude: Sequence[str] = (), include_hidden: bool = False) -> ScanResult:
    """Image files under `roots` (or the roots themselves when they are files), sorted by path."""
    result = ScanResult()
    for root in roots:
        top = root_path(root)
        if os.path.isfile(top):
            if os.path.splitext(top)[1].lower() in config.IMAGE_EXTENSIONS:
                _stat(top, result)
            continue
        if not os.path.isdir(top):
            raise ClipdexError(f"not a folder or image file: {root}")
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            relative_dir = os.path.relpath(dirpath, top)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if (include_hidden or not d.startswith("."))
                and not _excluded(os.path.normpath(os.path.join(relative_dir, d)), d, exclude)
            )
            for name in sorted(filenames):
                if os.path.splitext(name)[1].lower() not in config.IMAGE_EXTENSIONS:
                    continue
                if (not include_hidden and name.startswith(".")) or _excluded(
                    os.path.normpath(os.path.join(relative_dir, name)), name, exclude
                ):
                    continue
                _stat(os.path.join(dirpath, name), result)
    unique = {f.path: f for f in result.files}
    result.files = [unique[p] for p in sorted(unique)]
    return result
