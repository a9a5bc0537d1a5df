"""Walking folders for image files: through links to folders (a disk mounted elsewhere, an album kept on
another partition), each real folder once so a link loop ends, never into hidden folders.

Every file is known by two paths: the one the user reached it through (kept for display and filters, and what
identifies it in the library) and its real path with every link resolved (what the server opens, and what tells a
re-pointed link from new photos). docs/architecture.md has the whole rule."""

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
    path: str  # absolute, through the links the user gave or met on the way
    size: int
    mtime: float
    real: str = ""  # the same file with every link resolved


@dataclass
class ScanResult:
    files: list[FileStat] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    # What could not be seen (a folder that cannot be listed, a file that cannot be looked at): each is reported
    # as a failure, and whatever the library holds at or under it is kept, never taken for deleted.
    unseen: list[str] = field(default_factory=list)


def _excluded(relative: str, name: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch(relative, pattern) or fnmatch(name, pattern) for pattern in exclude)


def _stat(path: str, real_folder: str, result: ScanResult) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        result.failures.append((os.fsencode(path).decode("utf-8", "replace"), "file name is not valid UTF-8"))
        return
    try:
        st = os.lstat(path)
        real = os.path.join(real_folder, os.path.basename(path))
        if stat.S_ISLNK(st.st_mode):  # a link to a photo: the photo it leads to
            st, real = os.stat(path), os.path.realpath(path)
    except OSError as exc:
        result.failures.append((path, f"cannot stat: {exc.strerror or exc}"))
        result.unseen.append(path)
        return
    if not stat.S_ISREG(st.st_mode):  # reading a FIFO blocks, a device never ends: neither is a photo
        result.failures.append((path, "not a regular file (a FIFO, socket or device), skipped"))
        return
    result.files.append(FileStat(path, st.st_size, st.st_mtime, real))


_SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")  # the kernel's pseudo-file systems (not /run: /run/media holds disks)


def under(path: str, folders: Sequence[str]) -> bool:
    """Whether `path` is one of `folders` or inside one of them (by its spelling: no link is resolved)."""
    return any(path == folder or path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


def _followable(path: str, real_top: str, result: ScanResult) -> bool:
    """A folder, or a link to one that leads neither to a folder holding the root (`ln -s / photos/root` would
    take in the whole machine, other users' files included) nor into the system's pseudo-file systems."""
    if not os.path.islink(path):
        return True
    target = os.path.realpath(path)
    if under(real_top, [target]) or under(target, _SYSTEM_FOLDERS):
        result.failures.append((path, f"a link to {target}, which holds this folder or the system's files: not "
                                      "followed"))
        return False
    return True


def root_path(root: Path) -> str:
    """The absolute form a root is stored and compared under (links kept as given, not resolved)."""
    return os.path.abspath(os.path.expanduser(str(root)))


def _wanted(name: str, relative: str, exclude: Sequence[str], include_hidden: bool) -> bool:
    return (include_hidden or not name.startswith(".")) and not _excluded(relative, name, exclude)


def scan(roots: Sequence[Path], exclude: Sequence[str] = (), include_hidden: bool = False) -> ScanResult:
    """Image files under `roots` (or the roots themselves when they are files), sorted by path; a file reached
    by two paths (two roots, or a link to a folder also indexed) is listed once, under the first."""
    result = ScanResult()
    seen_folders: set[str] = set()
    for root in roots:
        top = root_path(root)
        if os.path.isfile(top):
            if os.path.splitext(top)[1].lower() in config.IMAGE_EXTENSIONS:
                _stat(top, os.path.dirname(os.path.realpath(top)), result)
            continue
        if not os.path.isdir(top):
            raise ClipdexError(f"not a folder or image file: {root}")
        real_top = os.path.realpath(top)

        def unlistable(exc: OSError) -> None:  # (os.walk skips the folder: its photos are not gone)
            folder = exc.filename if isinstance(exc.filename, str) else top
            result.failures.append((folder, f"cannot list this folder: {exc.strerror or exc}; the photos indexed "
                                            f"under it are kept"))
            result.unseen.append(folder)

        for dirpath, dirnames, filenames in os.walk(top, onerror=unlistable, followlinks=True):
            real_folder = os.path.realpath(dirpath)
            if real_folder in seen_folders:  # a link loop, or a folder reached a second way
                dirnames[:] = []
                continue
            seen_folders.add(real_folder)
            relative_dir = os.path.relpath(dirpath, top)
            dirnames[:] = sorted(
                d for d in dirnames
                if _wanted(d, os.path.normpath(os.path.join(relative_dir, d)), exclude, include_hidden)
                and _followable(os.path.join(dirpath, d), real_top, result)
            )
            for name in sorted(filenames):
                if os.path.splitext(name)[1].lower() not in config.IMAGE_EXTENSIONS:
                    continue
                if _wanted(name, os.path.normpath(os.path.join(relative_dir, name)), exclude, include_hidden):
                    _stat(os.path.join(dirpath, name), real_folder, result)
    unique: dict[str, FileStat] = {}
    for file in sorted(result.files, key=lambda f: f.path):
        unique.setdefault(file.real, file)
    result.files = sorted(unique.values(), key=lambda f: f.path)
    return result
