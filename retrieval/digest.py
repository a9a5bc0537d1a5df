"""Content hashes: the exact half of change detection, and the identity of a weights file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from clipdex.retrieval import config


class NotRegularFile(OSError):
    """A FIFO, socket or device under a photo's name: reading it could block forever or never end."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"not a regular file (a FIFO, socket or device): {path}")
        self.strerror = "not a regular file (a FIFO, socket or device)"


def open_regular(path: str | Path) -> BinaryIO:
    """Open `path` for reading only if it is a regular file (after links), asked of the opened descriptor itself.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; on a regular file it changes
    nothing. A file swapped for a FIFO after the folder was scanned is refused here too."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(path)
    return os.fdopen(fd, "rb")


def ours_alone(path: Path) -> bool:
    """Whether a cache file (and its folder) belongs to this user and no one else may write it: what another user
    could write is never trusted (a remembered hash would name other weights, cached vectors another model)."""
    try:
        own, folder = path.stat(), path.parent.stat()
    except OSError:
        return False
    # (a folder writable by its group is common with umask 002; by everyone, never safe)
    return own.st_uid == folder.st_uid == os.getuid() and not own.st_mode & 0o022 and not folder.st_mode & 0o002


LEFTOVER_PREFIX = ".clipdex-"  # + pid + "-": what a process writes before renaming it into place


def leftover_name(tail: str) -> str:
    """A name for a file or folder being written, that says which process writes it."""
    return f"{LEFTOVER_PREFIX}{os.getpid()}-{tail}"


def remove_abandoned(folder: Path, tail: str = "*") -> None:
    """Remove what processes killed outright (kill -9, a power cut) left in `folder` while writing: the leftovers
    whose process is gone; a running writer's are kept."""
    for leftover in folder.glob(f"{LEFTOVER_PREFIX}*-{tail}"):
        pid = leftover.name[len(LEFTOVER_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(stat: os.stat_result) -> list[int]:
    """What changes whenever the file's bytes may have: a rewrite changes size or mtime, a copy that restores the
    old mtime (cp -p, rsync) still gets a new ctime or inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def weights_sha256(path: str | Path) -> str:
    """The sha256 of a weights file, hashed once per stamp: a model's identity is the hash of its weights, and a
    600 MB file takes 0.4 s to hash, a third of an unchanged library's whole `index` run if paid every time."""
    return remembered(Path(path), file_sha256, config.FINGERPRINTS_FILE)


def remembered(path: Path, read: Callable[[Path], str], memory_name: str) -> str:
    """`read(path)`, computed once and then remembered by the file's stamp in the user cache folder.

    The memory is a cache: unreadable, damaged or unwritable, it is ignored and the file is read again."""
    path = path.resolve()
    stamp = _stamp(path.stat())
    memory_file = config.default_cache_dir() / memory_name
    try:
        if not ours_alone(memory_file):
            raise OSError("not ours alone")  # read as empty, and replaced by a private one
        memory = json.loads(memory_file.read_text(encoding="utf-8"))
        if not isinstance(memory, dict):
            memory = {}
    except (OSError, ValueError):
        memory = {}
    known = memory.get(str(path))
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("value"), str):
        return known["value"]
    value = read(path)
    if _stamp(path.stat()) != stamp:  # changed while being read: true now, but not worth remembering
        return value
    memory.pop(str(path), None)
    memory[str(path)] = {"stamp": stamp, "value": value}  # newest last; the oldest are forgotten first
    kept = dict(list(memory.items())[-config.FINGERPRINTS_KEPT:])
    tmp = memory_file.with_name(f"{memory_file.name}.{os.getpid()}.tmp")
    try:
        memory_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(kept))
        os.replace(tmp, memory_file)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return value
