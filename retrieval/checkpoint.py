"""clipdex checkpoints: safetensors weights plus JSON metadata naming the architecture and how it was trained.

safetensors cannot carry code, so loading a checkpoint never executes anything; the optimizer state needed
to resume training sits in a sibling `.optim.pt` read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipdex.retrieval.errors import ClipdexError

METADATA_KEY = "clipdex"
CHECKPOINT_SUFFIXES = (".safetensors",)


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself: enough to rebuild the model with no other input."""

    model_name: str
    model_cfg: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)


def is_checkpoint_path(name: str) -> bool:
    return Path(name).suffix in CHECKPOINT_SUFFIXES


def optimizer_path(path: Path) -> Path:
    return path.with_suffix(".optim.pt")


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    info: CheckpointInfo,
    half: bool = False,
    optimizer_state: dict[str, Any] | None = None,
) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        tensors[key] = value.half() if half and value.is_floating_point() else value
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {METADATA_KEY: json.dumps(info.__dict__)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    if optimizer_state is not None:
        torch.save(optimizer_state, optimizer_path(path))


def read_checkpoint_info(path: Path) -> CheckpointInfo:
    from safetensors import safe_open

    if not path.is_file():
        raise ClipdexError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ClipdexError(f"{path} is not a readable safetensors checkpoint: {exc}") from None
    if raw is None:
        raise ClipdexError(
            f"{path} has no clipdex metadata; for plain open_clip weights use "
            f"--model ARCH --pretrained {path}"
        )
    data = json.loads(raw)
    return CheckpointInfo(data["model_name"], data["model_cfg"], data.get("training", {}))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_optimizer_state(path: Path) -> dict[str, Any] | None:
    """The resume state beside a checkpoint; weights_only refuses anything that would run code."""
    opt = optimizer_path(path)
    if not opt.is_file():
        return None
    try:
        return torch.load(opt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ClipdexError(f"refusing to load {opt}: {exc}") from None
