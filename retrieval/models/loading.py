"""Which model runs: the one place that chooses between a model folder (no torch) and torch, and the one place
that asks which of the two an encoder is (everything else holds an ImageTextEncoder, interface.py).

A model folder (the sample, one the user names, one from the hub) runs as it is. Any other model (an open_clip
name, a checkpoint) runs from its prepared folder when the run is on the CPU in fp32 or int8, prepared first if
it was not yet; everything else runs through torch (the `torch` extra), or is refused in one line without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from clipdex.retrieval.digest import leftover_name, remove_abandoned
from clipdex.retrieval.errors import ClipdexError, NotFound
from clipdex.retrieval.models.hub import is_repo_id
from clipdex.retrieval.models.openclip.factory import choose_model
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.models.interface import ImageTextEncoder
from clipdex.retrieval.models.model_folder import FolderModel
from clipdex.retrieval.models.prepared import (
    FOLDER_PRECISIONS, Progress, has_torch, needs_torch, open_prepared, prepare, runs_prepared,
)


def load_model(name: str, pretrained: str | None = None, device: str = "auto", precision: str = "fp32",
               progress: Progress | None = None, prepare_now: bool = True, fetch: bool = True) -> ImageTextEncoder:
    """The model that embeds: a model folder as it is (a hub's fetched first unless `fetch` is False); else the
    prepared folder (no torch) whenever the settings allow, prepared first unless `prepare_now` is False; else the
    torch encoder."""
    choice = choose_model(name, pretrained, progress, fetch)
    if choice.folder is not None:
        if precision != "fp32" or device == "cuda":
            raise ClipdexError(f"a model folder runs as it was exported, on the CPU: --precision {precision} "
                               f"--device {device} is for models prepared from open_clip")
        return FolderModel(choice.folder, choice.identity())
    if runs_prepared(device, precision):
        prepared = open_prepared(choice.identity(), precision)
        if prepared is not None:
            return prepared
    if not has_torch():
        raise needs_torch(f"{choice.identity().describe()} is not prepared here, and preparing it", moving=True)
    from clipdex.retrieval.models.openclip.factory import load_encoder

    encoder = load_encoder(name, pretrained, device)
    if prepare_now and runs_prepared(encoder.device, precision):
        prepared, notes = prepare(encoder, precision, progress)
        if prepared is not None:
            return prepared
        encoder.notes += notes
    encoder.set_precision(precision)
    return encoder


def text_model(identity: ModelIdentity, loaded: ImageTextEncoder | None = None,
               fetch: bool = True) -> FolderModel | None:
    """A folder that embeds text for the library bound to `identity` without torch, or None: `loaded` when it is
    that model's folder already (not opened twice), else the model folder itself, else its prepared folder in any
    precision (the text tower is the same in each)."""
    if isinstance(loaded, FolderModel) and identity.same_model(loaded.identity):
        return loaded
    if identity.fingerprint.startswith("files:"):
        try:
            found = load_model(identity.name, identity.pretrained, "cpu", "fp32", fetch=fetch)
        except ClipdexError:
            return None
        return found if identity.same_model(found.identity) else None
    for precision in FOLDER_PRECISIONS:
        found = open_prepared(identity, precision)
        if found is not None:
            return found
    return None


def ensure_text_tower(encoder: ImageTextEncoder, progress: Progress | None = None) -> list[str]:
    """A model that runs through torch (bf16, CUDA) gets its fp32 folder prepared, once, so text queries need no
    torch later; the notes for the user (none when it was prepared, or when the model is a folder already)."""
    if isinstance(encoder, FolderModel):
        return []
    return prepare(encoder, "fp32", progress)[1]


def export_model(model: str, target: Path, pretrained: str | None, precision: str, fp16_weights: bool) -> dict:
    """`clipdex export-model`: a shared folder of `model` at `target`, which must not exist yet."""
    from clipdex.retrieval.models.openclip.factory import load_encoder
    from clipdex.retrieval.models.openclip.folder_export import store_weights_as_fp16, write_folder

    if precision not in FOLDER_PRECISIONS:
        raise ClipdexError(f"unknown precision {precision!r} for a model folder: use fp32 or int8")
    if target.exists() or target.is_symlink():
        raise ClipdexError(f"{target} exists already: give a new folder")
    if not target.parent.is_dir():
        raise NotFound(f"no such folder: {target.parent}")
    if not has_torch():
        raise needs_torch("exporting a model folder")
    encoder = load_encoder(model, pretrained, "cpu")
    remove_abandoned(target.parent)  # what an export killed outright left
    building = target.with_name(leftover_name(target.name))  # OUT appears whole, or not at all
    try:
        kept = write_folder(encoder, building, precision, text_precision="fp32", shared=True)
        if fp16_weights:
            store_weights_as_fp16(building)
        os.replace(building, target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return {"folder": str(target), "model": encoder.identity.describe(), "kept": kept}


def unprepared_because(identity: ModelIdentity) -> str:
    """Why a library's model does not run without torch here, in words, and what happens next."""
    if identity.fingerprint.startswith("files:"):
        if is_repo_id(identity.name):
            from clipdex.retrieval.models.hub import cached_folder

            if cached_folder(identity.name, identity.pretrained) is not None:
                return (f"no: its folder in the Hugging Face cache changed since the library was built: `clipdex "
                        f"models rm {identity.name} --force`, then index or search fetches it again")
            return ("no: its folder is not in the local Hugging Face cache; the next index or search fetches it "
                    "(with network)")
        if not Path(identity.name).is_dir():
            return f"no: its model folder {identity.name} is gone (moved or removed)"
        return "no: its model folder changed since the library was built (another model now)"
    return "no: the next index prepares it (with the torch extra)"
