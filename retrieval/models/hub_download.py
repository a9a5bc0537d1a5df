"""A hub folder by name, fetched when it is not cached: the listing (within a deadline), each file through huggingface_hub
into its cache with one progress bar of bytes, each checked against the size and checksum the hub declared, and
the record of a whole fetch that hub.py's cache lookup trusts."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from clipdex.retrieval import config
from clipdex.retrieval.digest import leftover_name, weights_sha256
from clipdex.retrieval.errors import ClipdexError, first_line
from clipdex.retrieval.models.hub import (
    COMMIT, FOLDER_PATTERNS, Progress, cached_folder, endpoint, is_offline, hub_reachable, record_path, repo_cache,
    shown_endpoint,
)


def _offline_error(repo_id: str, label: str, reason: str) -> ClipdexError:
    return ClipdexError(
        f"{label} is not in the local Hugging Face cache and {reason}: run once with network, or "
        f"`clipdex models pull {repo_id}` on a machine with network and copy the folder here (--model PATH), or "
        f"--model sample to try clipdex on its bundled model"
    )


def hub_folder(repo_id: str, revision: str | None = None, progress: Progress | None = None,
               label: str | None = None, fetch: bool = True) -> tuple[Path, str]:
    """The model folder of hub repository `repo_id` at `revision` (a commit; None: the newest fetched, else the
    hub's main) and its commit: from the local cache when it is whole, else fetched now (unless `fetch` is False)
    with a progress bar of bytes. A one-line error when neither can be."""
    label = label or repo_id
    if revision is not None and not COMMIT.fullmatch(revision):
        raise ClipdexError(f"the revision of a hub model must be a 40-digit commit, not {revision!r}")
    found = cached_folder(repo_id, revision)
    if found is not None:
        return found
    if not fetch:
        raise ClipdexError(f"{label} is not in the local Hugging Face cache")
    if is_offline():
        raise _offline_error(repo_id, label, "HF_HUB_OFFLINE is set")
    parts = urlsplit(endpoint())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClipdexError(f"HF_ENDPOINT is not an http(s) URL: {shown_endpoint()!r}")
    if not hub_reachable():
        raise _offline_error(repo_id, label, f"the hub ({shown_endpoint()}) cannot be reached")
    return download_folder(repo_id, revision, progress, label)


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the content's sha256
    git_sha1: str | None  # other files: git's blob id


def _folder_files(listing) -> list[HubFile]:
    wanted = []
    for entry in listing:
        path = getattr(entry, "path", None)
        size = getattr(entry, "size", None)
        if not isinstance(path, str) or not isinstance(size, int) or not any(fnmatch(path, p) for p in FOLDER_PATTERNS):
            continue
        if size < 0 or path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
            raise ClipdexError(f"the hub ({shown_endpoint()}) lists a file {path[:80]!r} that is no file of a model "
                               f"folder")
        lfs = getattr(entry, "lfs", None)
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha256 is None and isinstance(lfs, dict):
            sha256 = lfs.get("sha256") or lfs.get("oid")
        wanted.append(HubFile(path, size, sha256, getattr(entry, "blob_id", None)))
    return sorted(wanted, key=lambda f: f.path)


def download_folder(repo_id: str, revision: str | None, progress: Progress | None, label: str) -> tuple[Path, str]:
    """Fetch the folder's files (those a model folder needs) and check each against what the hub declared."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint())

    def listing():
        commit = revision or api.model_info(repo_id, revision="main").sha
        return commit, list(api.list_repo_tree(repo_id, revision=commit if isinstance(commit, str) else None,
                                               recursive=True))

    try:
        commit, listed = _answered_within(listing, f"the hub ({shown_endpoint()}) accepted the connection but did not "
                                                   f"list {repo_id}")
        files = _folder_files(listed)
    except ClipdexError:
        raise
    except Exception as exc:
        raise ClipdexError(f"cannot fetch the model folder {repo_id} from {shown_endpoint()} "
                           f"({_reason(exc)})") from None
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise ClipdexError(f"the hub ({shown_endpoint()}) gave no commit for {repo_id}")
    if not any(f.path == "config.json" for f in files):
        raise ClipdexError(f"{repo_id} is not a model folder on the hub (it has no config.json)")
    total = sum(f.size for f in files)
    if total > config.MAX_MODEL_FOLDER_BYTES:
        raise ClipdexError(f"{repo_id} lists {total / 1e9:,.1f} GB of model files, more than any model folder clipdex "
                           f"runs ({config.MAX_MODEL_FOLDER_BYTES / 1e9:.0f} GB): not fetched")
    advance = progress(f"fetching {label}, {total / 1e6:,.0f} MB, once", total, "bytes") if progress else None
    folder = _download(repo_id, commit, files, advance)
    record = record_path(repo_id, commit)
    record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    writing = record.with_name(leftover_name(record.name))
    sums = {f.path: weights_sha256(folder / f.path) for f in files}  # (remembered by stamp: each read once)
    writing.write_text(json.dumps({"repo": repo_id, "files": {f.path: f.size for f in files}, "sha256": sums}),
                       encoding="utf-8")
    os.replace(writing, record)
    return folder, commit


def _answered_within(work, what: str):
    """`work()`'s result, or a one-line error once the hub's answer took past HUB_ANSWER_SECONDS: huggingface_hub
    waits forever for an API answer (a captive portal, a stalled proxy); its file reads have their own timeout."""
    seconds = float(os.environ.get(config.HUB_ANSWER_ENV) or config.HUB_ANSWER_SECONDS)
    result: list = []

    def run() -> None:
        try:
            result.append((True, work()))
        except BaseException as exc:  # handed to the caller's thread
            result.append((False, exc))

    thread = threading.Thread(target=run, name="clipdex-hub-listing", daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        raise ClipdexError(f"{what} within {seconds:g} s: check HF_ENDPOINT and any proxy, or try again later")
    done, value = result[0]
    if not done:
        raise value
    return value


class _Bytes:
    """One bar across every file: the bytes of finished files plus those of the one arriving."""

    def __init__(self, advance) -> None:
        self.advance, self.shown, self.done = advance, 0, 0
        self.lock = threading.Lock()

    def show(self, partial: int = 0) -> None:
        with self.lock:
            now = self.done + partial
            if self.advance is not None and now > self.shown:
                self.advance(now - self.shown)
                self.shown = now


def _download(repo_id: str, commit: str, files: list[HubFile], advance) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    _remove_abandoned_partials(repo_id)
    from huggingface_hub.utils import logging as hub_logging

    quiet, verbosity = are_progress_bars_disabled(), hub_logging.get_verbosity()
    disable_progress_bars()  # huggingface's per-file bars: the caller shows one bar of bytes instead
    hub_logging.set_verbosity_error()  # its retry warnings too: the outcome is said in one line
    bar = _Bytes(advance)
    folder = None
    try:
        with _watching_partial_bytes(repo_id, bar.show):
            for file in files:
                try:
                    local = Path(hf_hub_download(repo_id, file.path, revision=commit, endpoint=endpoint()))
                except Exception as exc:
                    raise ClipdexError(f"cannot fetch {file.path} of {repo_id} from {shown_endpoint()} "
                                       f"({_reason(exc)}); run again to resume") from None
                _check(repo_id, file, local)
                with bar.lock:
                    bar.done += file.size
                bar.show()
                folder = Path(str(local)[: -len(file.path)])
    finally:
        hub_logging.set_verbosity(verbosity)
        if not quiet:
            enable_progress_bars()
    return folder


def _remove_abandoned_partials(repo_id: str) -> None:
    """Remove what downloads killed outright left: huggingface_hub writes each file to a partial file of its own
    process (`ETAG.RANDOM.incomplete`) under a lock on ETAG; a partial whose lock nobody holds is abandoned (its
    file is fetched whole again: a few hundred MB at most, never a whole folder)."""
    from filelock import FileLock, Timeout

    blobs = repo_cache(repo_id) / "blobs"
    locks = repo_cache(repo_id).parent / ".locks" / repo_cache(repo_id).name
    for partial in blobs.glob("*.incomplete"):
        lock = FileLock(str(locks / f"{partial.name.split('.')[0]}.lock"))
        try:
            locks.mkdir(parents=True, exist_ok=True)
            with lock.acquire(timeout=0):
                partial.unlink(missing_ok=True)
        except (Timeout, OSError):
            continue  # being written by a running download, or not ours to remove


@contextmanager
def _watching_partial_bytes(repo_id: str, report: Callable[[int], None]) -> Iterator[None]:
    """Report the bytes of the file being downloaded as they arrive (huggingface_hub writes them to a
    `.incomplete` blob), twice a second, for one progress bar across every file."""
    blobs = repo_cache(repo_id) / "blobs"
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            try:
                report(sum(p.stat().st_size for p in blobs.glob("*.incomplete")))
            except OSError:
                pass

    watcher = threading.Thread(target=watch, name="clipdex-download-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _check(repo_id: str, file: HubFile, local: Path) -> None:
    """The file is what the hub declared (size, then sha256 or git's blob id), or it is removed from the cache and
    never used."""
    size = local.stat().st_size
    digest = None
    if size == file.size:
        if file.sha256:
            digest = hashlib.sha256()
        elif file.git_sha1:
            digest = hashlib.sha1(f"blob {size}\0".encode())
        if digest is not None:
            with local.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    wanted = file.sha256 or file.git_sha1
    if size == file.size and (digest is None or wanted is None or digest.hexdigest() == wanted.lower()):
        return
    real = local.resolve()
    for path in (local, real):
        try:
            path.unlink()
        except OSError:
            pass
    what = "size" if size != file.size else "checksum"
    raise ClipdexError(f"the hub ({shown_endpoint()}) served {file.path} of {repo_id} with another {what} than it "
                       f"declared: it was removed and is not used; run again, or try another endpoint")


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status == 401 or status == 403:
        if os.environ.get("HF_TOKEN"):
            return f"HTTP {status}: the hub refused the token in HF_TOKEN for this repository"
        return f"HTTP {status}: the hub refused; set HF_TOKEN if the repository is gated or private"
    if status == 404:
        return "HTTP 404: no such repository, revision or file"
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):  # (JSONDecodeError is a ValueError)
        return "it did not answer as a Hugging Face hub does"
    return f"{type(exc).__name__}: {first_line(exc, 120)}"
