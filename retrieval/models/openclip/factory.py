"""Turn what the user names (open_clip model + pretrained tag, `hf-hub:` id, clipdex checkpoint, project config)
into an Encoder, and decide fast whether weights can be downloaded at all.

open_clip retries the hub for about 46 s when there is no network; a short DNS probe lets clipdex put
huggingface_hub in offline mode for the one load that needs it, so a missing download fails in about a second,
while weights already in the local cache still load.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator
from pathlib import Path

from clipdex.retrieval import config
from clipdex.retrieval.digest import weights_sha256
from clipdex.retrieval.errors import ClipdexError, NotFound, Refused, first_line
from clipdex.retrieval.models.hub import hub_access
from clipdex.retrieval.models.identity import ModelIdentity, is_checkpoint_path

if TYPE_CHECKING:  # the encoder module imports torch: only its type is needed here
    from clipdex.retrieval.models.openclip.encoder import Encoder

SAMPLE_ALIAS = "sample"


def _register_project_configs() -> None:
    import open_clip

    if "clipdex-tiny" not in open_clip.list_models():
        open_clip.add_model_config(config.MODEL_CONFIG_DIR)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ClipdexError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise ClipdexError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def _download_error(what: str, online: bool, exc: Exception) -> ClipdexError:
    reason = "the download failed" if online else "there is no network and they are not in the local cache"
    return ClipdexError(
        f"cannot get weights for {what}: {reason}. Offline, use a local checkpoint "
        f"(--model FILE.safetensors, or --model ARCH --pretrained FILE), the bundled sample model "
        f"(--model {SAMPLE_ALIAS}), or run once with network to cache them. [{type(exc).__name__}]"
    )


@dataclass(frozen=True)
class ModelChoice:
    """What a --model/--pretrained pair names, read without building the model: enough to tell whether it is
    a library's bound model (so an `index` with nothing new to embed never imports torch)."""

    name: str  # "sample", a model folder's path, a hub ORG/NAME, an open_clip architecture, an hf-hub: id, or
    # the absolute path of a clipdex checkpoint
    pretrained: str | None  # a tag, or the absolute path of a weights file
    fingerprint: str
    folder: Path | None = None  # a model folder runs as it is (no torch); anything else is prepared into one

    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.pretrained, self.fingerprint, 0)


def choose_model(name: str, pretrained: str | None = None, progress=None, fetch: bool = True) -> ModelChoice:
    """Read a model name as it will be loaded, hashing a file only when its stamp changed: the sample model, a
    model folder, a checkpoint, an hf-hub: id, a catalogue name or hub ORG/NAME (a model folder there, fetched once
    with `progress` unless `fetch` is False), else an open_clip name."""
    from clipdex.retrieval.models import catalogue
    from clipdex.retrieval.models.hub import is_repo_id
    from clipdex.retrieval.models.hub_download import hub_folder
    from clipdex.retrieval.models.model_folder import folder_fingerprint, is_model_folder

    if name == SAMPLE_ALIAS:
        return ModelChoice(SAMPLE_ALIAS, None, folder_fingerprint(config.SAMPLE_MODEL_FOLDER), config.SAMPLE_MODEL_FOLDER)
    path = Path(name).expanduser()
    entry = catalogue.find(name)
    hub_name = entry is not None or (is_repo_id(name) and not name.startswith("."))
    bound_commit = pretrained is not None and len(pretrained) == 40 and all(c in "0123456789abcdef" for c in pretrained)
    if hub_name and entry is None and not bound_commit and (path.exists() or path.parent.is_dir()):
        hub_name = False  # ORG/NAME that names a place here (Pictures/my-model): a path, never asked of the hub
    if is_repo_id(name) and not hub_name and not path.exists():
        raise NotFound(f"no such model folder: {path}")
    if path.is_dir() and (is_model_folder(path) or not hub_name):  # a folder that is no model: not the hub's name
        if not is_model_folder(path):
            raise ClipdexError(f"{path} is not a model folder (config.json with textual/model.onnx or "
                               f"visual/model.onnx)")
        path = path.resolve()
        return ModelChoice(str(path), None, folder_fingerprint(path), path)
    if os.path.isabs(name) and not path.exists():
        raise NotFound(f"the model folder or checkpoint {name} is gone (moved or removed): put it back, or give "
                       f"its new place with --model PATH --reembed")
    if is_checkpoint_path(name):
        path = path.resolve()
        if not path.is_file():
            raise NotFound(f"checkpoint not found: {path}")
        return ModelChoice(str(path), None, _fingerprint(path))
    if name.startswith("hf-hub:"):
        return ModelChoice(name, None, name)
    if hub_name:
        repo = entry.hub_id if entry is not None else name
        entry = entry or catalogue.by_hub_id(name)
        revision = pretrained or (entry.revision if entry is not None else None)
        label = entry.label() if entry is not None else repo
        folder, commit = hub_folder(repo, revision, progress, label, fetch)
        return ModelChoice(repo, commit, folder_fingerprint(folder), folder)
    if pretrained is None:
        return ModelChoice(name, None, f"init:{config.INIT_SEED}")
    if os.path.isfile(pretrained):
        path = Path(pretrained).resolve()
        return ModelChoice(name, str(path), _fingerprint(path))
    return ModelChoice(name, pretrained, f"tag:{pretrained}")


def _fingerprint(path: Path) -> str:
    try:
        return "sha256:" + weights_sha256(path)
    except OSError as exc:
        raise ClipdexError(f"cannot read the weights file {path}: {exc.strerror or exc}") from None


_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)
_BUILDING = threading.Lock()  # every model build takes it: init is switched off for one build at a time


@contextmanager
def _building(initialise: bool) -> Iterator[None]:
    """Build a model, without random initialisation when every weight is about to be overwritten.

    Initialising ViT-B-32 costs 0.8 s of a cold start and is thrown away by the strict load that follows (a
    missing weight fails that load, so nothing uninitialised survives). torch.nn.init is switched off only for
    the build, under a lock that every build takes, so a seeded build in another thread is never affected."""
    import torch

    with _BUILDING:
        if initialise:
            yield
            return
        saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
        for name in _INIT_FUNCTIONS:
            setattr(torch.nn.init, name, _leave_as_is)
        try:
            yield
        finally:
            for name, function in saved.items():
                setattr(torch.nn.init, name, function)


def _leave_as_is(tensor, *args, **kwargs):
    return tensor


def load_encoder(name: str, pretrained: str | None = None, device: str = "auto") -> Encoder:
    """Build the model named by the user and wrap it for embedding: the one place encoders are made (CLI,
    library, Ray actors and fine-tuning all come here).

    `pretrained=None` with an architecture name gives seeded random weights: the same in every process, which
    the tests and speed benchmarks rely on. The tag a user gets by default is `config.pretrained_for(name, None)`.
    """
    import open_clip
    import torch

    from clipdex.retrieval.models.checkpoint import load_weights, read_checkpoint_info
    from clipdex.retrieval.models.openclip.encoder import Encoder

    _register_project_configs()
    device = resolve_device(device)
    if name == SAMPLE_ALIAS:  # the bundled model's weights: what fine-tuning and torch runs start from
        name = str(config.SAMPLE_MODEL)
    choice = choose_model(name, pretrained)
    if choice.folder is not None:
        raise ClipdexError(f"{name} is a model folder: it runs as it is, and cannot be fine-tuned or run through "
                           f"torch (give its open_clip model or checkpoint)")
    name, pretrained = choice.name, choice.pretrained

    if is_checkpoint_path(name):
        path = Path(name)
        info = read_checkpoint_info(path)
        if info.model_name not in open_clip.list_models():
            raise ClipdexError(f"{path} names an unknown architecture {info.model_name!r}; it cannot be loaded")
        with _building(initialise=False):
            model, _, preprocess = open_clip.create_model_and_transforms(info.model_name, pretrained=None)
        try:
            model.load_state_dict({k: v.float() for k, v in load_weights(path).items()})
        except RuntimeError as exc:
            raise ClipdexError(f"{path} does not match architecture {info.model_name}: {first_line(exc, 200)}") from None
        arch = info.model_name
    elif name.startswith("hf-hub:"):
        with hub_access() as online, _building(initialise=False):
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(name)
            except Exception as exc:
                raise _download_error(name, online, exc) from None
        arch = name
    else:
        if name not in open_clip.list_models():
            raise ClipdexError(
                f"unknown model {name!r}: give a model from `clipdex models`, a hub ORG/NAME, a model folder, an "
                f"open_clip name (e.g. {config.OPENCLIP_DEFAULT_MODEL}), an hf-hub: id, a .safetensors checkpoint, "
                f"or one of clipdex-tiny, clipdex-small"
            )
        arch = name
        if pretrained is None:
            with _building(initialise=True), torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        elif choice.fingerprint.startswith("sha256:"):
            try:  # open_clip loads .pt/.bin with weights_only=True: a pickle that would run code is refused
                with _building(initialise=False):
                    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
            except Exception as exc:
                raise Refused(f"refusing to load {pretrained} as {name} weights: {first_line(exc, 200)}") from None
        elif open_clip.get_pretrained_cfg(name, pretrained):
            with hub_access() as online, _building(initialise=False):
                try:
                    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
                except Exception as exc:
                    raise _download_error(f"{name} ({pretrained})", online, exc) from None
        else:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise ClipdexError(f"{pretrained!r} is neither a pretrained tag of {name} nor a file (tags: {tags})")

    model.eval().to(device)
    return Encoder(model, preprocess, open_clip.get_tokenizer(arch), device, choice.identity(), arch)
