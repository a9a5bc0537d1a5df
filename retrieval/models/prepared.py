"""Prepared models: an open_clip model or checkpoint made into a model folder in the user cache, once per model
and precision (with torch, through folder_export.py), so that everyday commands run it without torch.

A prepared folder is trusted only while its config names exactly these weights, every file still has the
checksum recorded when it was made, and nobody but us may change it; else it is made again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from clipdex.retrieval import config
from clipdex.retrieval.digest import leftover_name, remove_abandoned
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.models.model_folder import (
    CONFIG_FILE, FolderConfig, FolderModel, config_digest, files_checksums, read_json,
)

# start(description, total) -> advance(n=1): how a long step shows itself (the API's progress callback)
Progress = Callable[[str, "int | None"], Callable[..., None]]
FOLDER_PRECISIONS = ("fp32", "int8")
TORCH_EXTRA = "pip install 'clipdex[torch]'"


def prepared_path(identity: ModelIdentity, precision: str) -> Path:
    key = f"{identity.name}\n{identity.fingerprint}\n{precision}\n{config.FOLDER_FORMAT}"
    return config.default_cache_dir() / "models" / hashlib.sha256(key.encode()).hexdigest()[:24]


def open_prepared(identity: ModelIdentity, precision: str) -> FolderModel | None:
    """The prepared folder of exactly these weights in `precision`, or None when there is none to trust (then
    it is made again)."""
    folder = prepared_path(identity, precision)
    if not _private_to_us(folder):
        return None
    try:
        own = FolderConfig.read(folder).own
        wanted = [identity.name, identity.pretrained, identity.fingerprint, precision, config.FOLDER_FORMAT]
        if [own.get(k) for k in ("name", "pretrained", "fingerprint", "precision", "format")] != wanted:
            return None
        if not own.get("files") or files_checksums(folder, with_config=False) != own["files"]:
            return None
        if own.get("config") != config_digest(read_json(folder / CONFIG_FILE)):  # an edited config.json
            return None
        return FolderModel(folder, identity, precision)
    except ClipdexError:
        return None


def _private_to_us(folder: Path) -> bool:
    """Whether the folder and its towers' folders are ours and nobody else may change them: a cache that
    another user could write to is not trusted (its files would run as our model)."""
    for path in (folder, folder / "textual", folder / "visual"):
        try:
            info = path.stat()
        except OSError:
            return False
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return False
    return True


def runs_prepared(device: str, precision: str) -> bool:
    """Whether a run with these settings uses a folder: CPU (the default where no NVIDIA driver is loaded, told
    without importing torch), fp32 or int8."""
    if precision not in FOLDER_PRECISIONS:
        return False
    return device == "cpu" or (device == "auto" and not cuda_driver_loaded())


def cuda_driver_loaded() -> bool:
    return os.path.exists("/proc/driver/nvidia/version")


def has_torch() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "open_clip"))


def needs_torch(what: str, moving: bool = False) -> ClipdexError:
    """The one line for work that needs the torch extra; `moving`: a model named by open_clip, which a library can
    leave for a model folder without torch."""
    if moving:
        return ClipdexError(
            f"{what} needs torch, which this install does not have: {TORCH_EXTRA}, or move the library to the "
            f"default model folder (no torch; nothing indexed is lost): clipdex index PATH --model default --reembed"
            f" (other folders: clipdex models; --model PATH for a folder of your own)"
        )
    return ClipdexError(
        f"{what} needs torch, which this install does not have: {TORCH_EXTRA} to prepare it from open_clip, or "
        f"give a model folder (--model PATH), a model from `clipdex models` or a hub ORG/NAME folder"
    )


def prepare(encoder, precision: str = "fp32", progress: Progress | None = None) -> tuple[FolderModel | None, list[str]]:
    """Export `encoder`'s model into its prepared folder (each tower checked against torch); the folder's model,
    or None with the reason as a note (the torch encoder then does the work)."""
    arch = getattr(encoder, "arch", encoder.identity.name)
    advance = progress(f"preparing {os.path.basename(arch)} for fast indexing and queries (once)", None) if progress else None
    try:
        prepare_folder(encoder, precision)
    except ClipdexError as exc:
        return None, [f"this model runs through torch: {exc}"]
    finally:
        if advance:
            advance(1)
    prepared = open_prepared(encoder.identity, precision)
    if prepared is None:
        return None, ["this model runs through torch: its prepared folder could not be opened"]
    return prepared, []


def prepare_folder(encoder, precision: str) -> Path:
    """The prepared folder of `encoder`'s model in `precision`, exported now unless a sound one is there."""
    from clipdex.retrieval.models.openclip.folder_export import write_folder

    target = prepared_path(encoder.identity, precision)
    if open_prepared(encoder.identity, precision) is not None:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_abandoned(target.parent)
        building = Path(tempfile.mkdtemp(prefix=leftover_name(""), dir=target.parent))
    except OSError as exc:
        raise ClipdexError(f"its export failed: the cache folder cannot be written ({exc.strerror or exc})") from None
    try:
        write_folder(encoder, building / "model", precision)
        for path in (building / "model").rglob("*"):  # made from weights that may be private: private too
            path.chmod(0o700 if path.is_dir() else 0o600)
        shutil.rmtree(target, ignore_errors=True)  # an older, damaged or foreign one
        os.replace(building / "model", target)
    finally:  # also on Ctrl-C: no half-written folder is left in the cache
        shutil.rmtree(building, ignore_errors=True)
    return target
