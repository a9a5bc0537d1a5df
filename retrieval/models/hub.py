"""The Hugging Face hub, reached only when it answers: model folders fetched by name, open_clip weights.

huggingface_hub's own settings are the user's: `HF_ENDPOINT` (a mirror, a company proxy), `HF_HUB_OFFLINE`,
`HF_HOME`/`HF_HUB_CACHE`, `HF_TOKEN`. Without a network the client retries for about 46 s before it gives up, so
a short connection to the endpoint in use tells first: a model that is not in the local cache fails in about a
second and a half, while one that is loads as usual.

A folder is fetched file by file into the hub's cache (a download killed half-way is resumed there by the next
one) and used only once every file has the size and checksum the hub declared for it; that is then recorded
beside clipdex's other caches, so an offline run knows a whole folder from a half-fetched one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from clipdex.retrieval import config
from clipdex.retrieval.digest import weights_sha256


# ORG/NAME as the hub spells repository ids (a folder on disk with that name wins: it is looked for first).
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
COMMIT = re.compile(r"[0-9a-f]{40}")
# What a model folder needs of a repository (Immich's also hold builds for other runtimes, not fetched).
FOLDER_PATTERNS = ("config.json", "textual/*.json", "textual/model.onnx*", "visual/*.json", "visual/model.onnx*")
# start(description, total, unit) -> advance(n=1, note=""): the API's progress callback, in bytes here
Progress = Callable[..., Callable[..., None]]


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name


def endpoint() -> str:
    """The hub huggingface_hub talks to: $HF_ENDPOINT when set (read now, not when the client was imported)."""
    import huggingface_hub.constants as hub

    return (os.environ.get("HF_ENDPOINT") or hub.ENDPOINT).rstrip("/")


def shown_endpoint() -> str:
    """The endpoint as it may be printed: without a user name and password a proxy URL may carry."""
    parts = urlsplit(endpoint())
    if parts.username is None and parts.password is None:
        return endpoint()
    host = parts.hostname or ""
    return parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl()


def is_offline() -> bool:
    import huggingface_hub.constants as hub

    return bool(hub.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def hub_reachable(url: str | None = None, seconds: float = config.HUB_PROBE_SECONDS) -> bool:
    """True when the endpoint in use accepts a connection within `seconds` (its name resolved and its port
    open); a DNS lookup can hang, so it runs aside."""
    parts = urlsplit(url or endpoint())
    host = parts.hostname
    if not host:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                result.append(True)
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


@contextmanager
def hub_access() -> Iterator[bool]:
    """huggingface_hub in offline mode while the hub can't be reached, for this load only; yields whether it is
    online. The setting is restored afterwards, so the process is left as it was found."""
    import huggingface_hub.constants as hub

    if is_offline():
        yield False
        return
    if hub_reachable():
        yield True
        return
    saved, saved_constant = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        hub.HF_HUB_OFFLINE = saved_constant
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def record_path(repo_id: str, commit: str) -> Path:
    return config.default_cache_dir() / "hub" / repo_id.replace("/", "--") / f"{commit}.json"


def _recorded(repo_id: str, revision: str | None) -> tuple[str, dict] | None:
    """The commit and file list of a whole, checked fetch of `repo_id` at `revision` (a commit; None: the newest
    recorded), if one was made."""
    folder = record_path(repo_id, "x").parent
    if revision is not None and not COMMIT.fullmatch(revision):
        return None
    candidates = [folder / f"{revision}.json"] if revision else sorted(
        folder.glob("*.json"), key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True)
    for path in candidates:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("files"), dict) and COMMIT.fullmatch(path.stem):
            return path.stem, record
    return None


# What a folder must hold to run: a snapshot holding these was fetched far enough (huggingface_hub links a file
# into a snapshot only once all of it arrived).
_NEEDED = ("config.json", "textual/model.onnx", "textual/tokenizer.json", "visual/model.onnx",
           "visual/preprocess_cfg.json")


def cached_folder(repo_id: str, revision: str | None = None) -> tuple[Path, str] | None:
    """The folder of `repo_id` (and its commit) from the local Hugging Face cache: one clipdex fetched whole, every
    file still there at its size; else one fetched by other means (`hf download`) holding every file a folder
    needs; else None. Read from the cache's documented layout (`snapshots/COMMIT/PATH`, `refs/main`) without
    importing huggingface_hub's download code (0.1 s of every query of a library bound to a hub folder)."""
    snapshots = repo_cache(repo_id) / "snapshots"
    found = _recorded(repo_id, revision)
    if found is not None:
        commit, record = found
        folder = snapshots / commit
        sums = record.get("sha256") if isinstance(record.get("sha256"), dict) else {}
        try:
            if all((folder / path).stat().st_size == size for path, size in record["files"].items()):
                damaged = [p for p, digest in sums.items() if weights_sha256(folder / p) != digest]
                if not damaged:
                    return folder, commit
                for path in damaged:  # changed since it was checked: out of the cache, so a fetch replaces it
                    for gone in ((folder / path).resolve(), folder / path):
                        gone.unlink(missing_ok=True)
                return None
        except (OSError, TypeError):
            pass
    if revision is None:
        try:
            revision = (repo_cache(repo_id) / "refs" / "main").read_text(encoding="utf-8").strip()
        except OSError:
            return None
    folder = snapshots / revision
    if COMMIT.fullmatch(revision) and all((folder / name).is_file() for name in _NEEDED):
        return folder, revision
    return None


def repo_cache(repo_id: str) -> Path:
    """Where the Hugging Face cache keeps `repo_id` ($HF_HUB_CACHE, else $HF_HOME/hub, … as the client reads them)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(os.environ.get("HF_HUB_CACHE") or HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def remove_cached(repo_id: str) -> int:
    """Remove every cached revision of `repo_id` (its files in the Hugging Face cache and clipdex's records of
    them); the bytes freed."""
    import shutil

    freed = 0
    repo = repo_cache(repo_id)
    if repo.is_dir():
        freed = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(record_path(repo_id, "x").parent, ignore_errors=True)
    return freed
