"""Which model folder runs a model, and the one place that chooses between a folder and torch.

A model folder (the sample, one the user names, one from the hub) runs as it is. Any other model (an open_clip
name, a checkpoint) runs from its prepared folder in the user cache when the run is on the CPU in fp32 or int8:
made once with torch (folder_export.py), trusted only while its config names exactly these weights and every
file still has the checksum recorded when it was made. Everything else needs torch (the `torch` extra).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Callable

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.identity import ModelIdentity
from clipdex.retrieval.model_folder import FolderConfig, FolderModel, files_checksums

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
    try:
        own = FolderConfig.read(folder).own
        wanted = [identity.name, identity.pretrained, identity.fingerprint, precision, config.FOLDER_FORMAT]
        if [own.get(k) for k in ("name", "pretrained", "fingerprint", "precision", "format")] != wanted:
            return None
        if not own.get("files") or files_checksums(folder, with_config=False) != own["files"]:
            return None
        model = FolderModel(folder, identity, precision)
    except ClipdexError:
        return None
    dim = model.settings.dim
    model.identity = ModelIdentity(identity.name, identity.pretrained, identity.fingerprint, dim)
    return model


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


def needs_torch(what: str) -> ClipdexError:
    return ClipdexError(
        f"{what} needs torch, which this install does not have: {TORCH_EXTRA} to prepare it from open_clip, or "
        f"give a model folder (--model PATH) or the hub name of an ONNX export (--model ORG/NAME)"
    )


def prepare(encoder, precision: str = "fp32", progress: Progress | None = None) -> tuple[FolderModel | None, list[str]]:
    """Export `encoder`'s model into its prepared folder (each tower checked against torch); the folder's model,
    or None with the reason as a note (the torch encoder then does the work)."""
    from clipdex.retrieval.folder_export import prepare_folder

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


def load_model(name: str, pretrained: str | None = None, device: str = "auto", precision: str = "fp32",
               progress: Progress | None = None, prepare_now: bool = True):
    """The model that embeds: a model folder as it is; else the prepared folder (no torch) whenever the settings
    allow, prepared first unless `prepare_now` is False; else the torch encoder."""
    from clipdex.retrieval.factory import choose_model

    choice = choose_model(name, pretrained)
    if choice.folder is not None:
        if precision != "fp32" or device == "cuda":
            raise ClipdexError(f"a model folder runs as it was exported, on the CPU: --precision {precision} "
                               f"--device {device} is for models prepared from open_clip")
        model = FolderModel(choice.folder, choice.identity())
        model.identity = ModelIdentity(choice.name, None, choice.fingerprint, model.settings.dim)
        return model
    if runs_prepared(device, precision):
        prepared = open_prepared(choice.identity(), precision)
        if prepared is not None:
            return prepared
    if not has_torch():
        raise needs_torch(f"{choice.identity().describe()} is not prepared here, and preparing it")
    from clipdex.retrieval.factory import load_encoder

    encoder = load_encoder(name, pretrained, device)
    if prepare_now and runs_prepared(encoder.device, precision):
        prepared, notes = prepare(encoder, precision, progress)
        if prepared is not None:
            return prepared
        encoder.notes += notes
    encoder.set_precision(precision)
    return encoder


def text_model(identity: ModelIdentity) -> FolderModel | None:
    """A folder that embeds text for the library bound to `identity` without torch, or None: the model folder
    itself, else its prepared folder in any precision (the text tower is the same in each)."""
    if identity.fingerprint.startswith("files:"):
        try:
            found = load_model(identity.name, identity.pretrained, "cpu", "fp32")
        except ClipdexError:
            return None
        return found if identity.same_model(found.identity) else None
    for precision in FOLDER_PRECISIONS:
        found = open_prepared(identity, precision)
        if found is not None:
            return found
    return None
