"""Content hashes: the exact half of change detection, and the identity of a weights file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from clipdex.retrieval import config


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(stat: os.stat_result) -> list[int]:
    """What changes whenever the file's bytes may have: a rewrite changes size or mtime, a copy that restores the
    old mtime (cp -p, rsync) still gets a new ctime or inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def weights_sha256(path: str | Path) -> str:
    """The sha256 of a weights file, hashed once and then remembered by its stamp in the user cache folder.

    A model's identity is the hash of its weights, and a 600 MB file takes 0.4 s to hash: paid on every command
    it would be a third of an unchanged library's whole `index` run. The memory is a cache: unreadable, damaged
    or unwritable, it is ignored and the file is hashed."""
    path = Path(path).resolve()
    stamp = _stamp(path.stat())
    memory_file = config.default_cache_dir() / config.FINGERPRINTS_FILE
    try:
        memory = json.loads(memory_file.read_text(encoding="utf-8"))
        if not isinstance(memory, dict):
            memory = {}
    except (OSError, ValueError):
        memory = {}
    known = memory.get(str(path))
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = file_sha256(path)
    if _stamp(path.stat()) != stamp:  # changed while hashing: true now, but not worth remembering
        return digest
    memory.pop(str(path), None)
    memory[str(path)] = {"stamp": stamp, "sha256": digest}  # newest last; the oldest are forgotten first
    kept = dict(list(memory.items())[-config.FINGERPRINTS_KEPT:])
    try:
        memory_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memory_file.with_name(f"{memory_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept), encoding="utf-8")
        os.replace(tmp, memory_file)
    except OSError:
        pass
    return digest
