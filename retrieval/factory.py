"""Turn what the user names (open_clip model + pretrained tag, `hf-hub:` id, clipdex checkpoint, project config)
into an Encoder, and decide fast whether weights can be downloaded at all.

open_clip retries the hub for about 46 s when there is no network; a short DNS probe lets clipdex put
huggingface_hub in offline mode for the one load that needs it, so a missing download fails in about a second,
while weights already in the local cache still load.
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator
from pathlib import Path

from clipdex.retrieval import config
from clipdex.retrieval.digest import file_sha256
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.identity import ModelIdentity

if TYPE_CHECKING:  # the encoder module imports torch: only its type is needed here
    from clipdex.retrieval.encoder import Encoder

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


def _hub_resolves(host: str = config.HF_HUB_HOST, seconds: float = config.HUB_PROBE_SECONDS) -> bool:
    """True when the hub's name resolves within `seconds`; a DNS lookup can hang, so it runs aside."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


@contextmanager
def _hub_access() -> Iterator[bool]:
    """huggingface_hub in offline mode while the hub can't be reached, for this load only; yields whether it is
    online. The setting is restored afterwards, so the process is left as it was found."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        yield False
        return
    if _hub_resolves():
        yield True
        return
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        hub.HF_HUB_OFFLINE = False
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def _download_error(what: str, online: bool, exc: Exception) -> ClipdexError:
    reason = "the download failed" if online else "there is no network and they are not in the local cache"
    return ClipdexError(
        f"cannot get weights for {what}: {reason}. Offline, use a local checkpoint "
        f"(--model FILE.safetensors, or --model ARCH --pretrained FILE), the bundled sample model "
        f"(--model {SAMPLE_ALIAS}), or run once with network to cache them. [{type(exc).__name__}]"
    )


def load_encoder(name: str, pretrained: str | None = None, device: str = "auto") -> Encoder:
    """Build the model named by the user and wrap it for embedding: the one place encoders are made (CLI,
    library, Ray actors and fine-tuning all come here).

    `pretrained=None` with an architecture name gives seeded random weights: the same in every process, which
    the tests and speed benchmarks rely on. The tag a user gets by default is `config.default_pretrained(name)`.
    """
    import open_clip
    import torch

    from clipdex.retrieval.checkpoint import is_checkpoint_path, load_weights, read_checkpoint_info
    from clipdex.retrieval.encoder import Encoder

    _register_project_configs()
    device = resolve_device(device)
    if name == SAMPLE_ALIAS:
        name = str(config.SAMPLE_MODEL)

    if is_checkpoint_path(name):
        path = Path(name).expanduser().resolve()
        info = read_checkpoint_info(path)
        if info.model_name not in open_clip.list_models():
            raise ClipdexError(f"{path} names an unknown architecture {info.model_name!r}; it cannot be loaded")
        model, _, preprocess = open_clip.create_model_and_transforms(info.model_name, pretrained=None)
        try:
            model.load_state_dict({k: v.float() for k, v in load_weights(path).items()})
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ClipdexError(f"{path} does not match architecture {info.model_name}: {first}") from None
        arch, identity = info.model_name, ModelIdentity(str(path), None, "sha256:" + file_sha256(path), 0)
    elif name.startswith("hf-hub:"):
        with _hub_access() as online:
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(name)
            except Exception as exc:
                raise _download_error(name, online, exc) from None
        arch, identity = name, ModelIdentity(name, None, name, 0)
    else:
        if name not in open_clip.list_models():
            raise ClipdexError(
                f"unknown model {name!r}: give an open_clip name (e.g. {config.DEFAULT_MODEL}), an hf-hub: id, "
                f"a .safetensors checkpoint, or one of clipdex-tiny, clipdex-small"
            )
        arch = name
        if pretrained is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
            fingerprint = f"init:{config.INIT_SEED}"
        elif os.path.isfile(pretrained):
            pretrained = str(Path(pretrained).resolve())
            try:  # open_clip loads .pt/.bin with weights_only=True: a pickle that would run code is refused
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ClipdexError(f"refusing to load {pretrained} as {name} weights: {reason[:200]}") from None
            fingerprint = "sha256:" + file_sha256(Path(pretrained))
        elif open_clip.get_pretrained_cfg(name, pretrained):
            with _hub_access() as online:
                try:
                    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
                except Exception as exc:
                    raise _download_error(f"{name} ({pretrained})", online, exc) from None
            fingerprint = f"tag:{pretrained}"
        else:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise ClipdexError(f"{pretrained!r} is neither a pretrained tag of {name} nor a file (tags: {tags})")
        identity = ModelIdentity(name, pretrained, fingerprint, 0)

    model.eval().to(device)
    return Encoder(model, preprocess, open_clip.get_tokenizer(arch), device, identity, arch)
