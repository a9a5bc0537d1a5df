"""clipdex checkpoints: safetensors weights plus JSON metadata naming the architecture and how it was trained.

safetensors cannot carry code, so loading a checkpoint never executes anything; the optimizer state needed
to resume training sits in a sibling `.optim.pt` read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by what needs it: reading a checkpoint's metadata (the web's report list)
    import torch  # runs on the light install

from clipdex.retrieval.errors import ClipdexError, NotFound, Refused, first_line
from clipdex.retrieval.models.identity import is_checkpoint_path
from clipdex.retrieval.pause import pause_point

METADATA_KEY = "clipdex"
SAVE_ID_KEY = "clipdex_save_id"


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself: enough to rebuild the model with no other input."""

    model_name: str
    model_cfg: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)


def optimizer_path(path: Path) -> Path:
    return path.with_suffix(".optim.pt")


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    info: CheckpointInfo,
    half: bool = False,
    optimizer_state: dict[str, Any] | None = None,
) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        tensors[key] = value.half() if half and value.is_floating_point() else value
    path.parent.mkdir(parents=True, exist_ok=True)
    save_id = uuid.uuid4().hex  # ties the optimizer state to exactly this checkpoint
    metadata = {METADATA_KEY: json.dumps(info.__dict__), SAVE_ID_KEY: save_id}
    tmp = path.with_name(f"{path.name}.{save_id[:12]}.tmp")
    optim, optim_tmp = optimizer_path(path), optimizer_path(path).with_name(f"{optimizer_path(path).name}.{save_id[:12]}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        pause_point("checkpoint-save")  # written, not yet in place: the old checkpoint is still whole
        if optimizer_state is not None:
            with open(os.open(optim_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                torch.save({**optimizer_state, SAVE_ID_KEY: save_id}, handle)
            os.replace(optim_tmp, optim)
        else:
            optim.unlink(missing_ok=True)  # an older run's state must not sit beside these weights
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        optim_tmp.unlink(missing_ok=True)


def read_checkpoint_info(path: Path) -> CheckpointInfo:
    from safetensors import safe_open

    if not path.is_file():
        raise NotFound(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header alone: no torch needed
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ClipdexError(f"{path} is not a readable safetensors checkpoint: {exc}") from None
    if raw is None:
        raise ClipdexError(
            f"{path} has no clipdex metadata; for plain open_clip weights use "
            f"--model ARCH --pretrained {path}"
        )
    try:
        data = json.loads(raw)
        return CheckpointInfo(str(data["model_name"]), dict(data["model_cfg"]), dict(data.get("training") or {}))
    except (ValueError, TypeError, KeyError) as exc:
        raise ClipdexError(
            f"{path} has damaged clipdex metadata ({type(exc).__name__}: {str(exc)[:80]}); it cannot be loaded"
        ) from None


def _save_id(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:  # the header alone
        return (f.metadata() or {}).get(SAVE_ID_KEY)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_optimizer_state(path: Path) -> dict[str, Any] | None:
    """The resume state beside a checkpoint; weights_only refuses anything that would run code, and a state
    written for another save of the checkpoint (a crash between the two files, an old copy) is refused too."""
    import torch

    opt = optimizer_path(path)
    if not opt.is_file():
        return None
    try:
        state = torch.load(opt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Refused(f"refusing to load {opt}: {first_line(exc, 200)}") from None
    if not isinstance(state, dict) or state.pop(SAVE_ID_KEY, None) != _save_id(path):
        raise ClipdexError(f"{opt} belongs to another save of {path.name}; delete it to resume without it")
    return state


def report_chain(model: str, limit: int = 16) -> list[Path]:
    """The fine-tuning reports of a checkpoint and of the checkpoints it was fine-tuned from, newest first: what
    a library bound to `model` was made with. Models that are not clipdex checkpoints have none."""
    reports: list[Path] = []
    seen: set[Path] = set()
    while is_checkpoint_path(model) and len(seen) < limit:
        path = Path(model).resolve()
        if path in seen:
            break
        seen.add(path)
        try:
            training = read_checkpoint_info(path).training
        except ClipdexError:
            break
        report = training.get("report")
        if isinstance(report, str) and _is_report(Path(report)) and Path(report).resolve() not in reports:
            reports.append(Path(report).resolve())
        start = training.get("start")
        model = str(start.get("model")) if isinstance(start, dict) else ""
    return reports


REPORT_HEAD = "<!doctype html><html lang=en><meta charset=utf-8><title>clipdex fine-tune report</title>"
_REPORT_MAX_BYTES = 64 * 2**20


def _is_report(path: Path) -> bool:
    """Whether `path` is a report finetune wrote: a checkpoint's metadata is only a claim (a crafted one could name
    ~/.ssh/id_rsa), so the file itself must be an absolute .html regular file, of a sane size, that begins as every
    report begins."""
    try:
        if not (path.is_absolute() and path.suffix == ".html" and path.is_file()):
            return False
        if path.stat().st_size > _REPORT_MAX_BYTES:
            return False
        with open(path, "rb") as f:
            return f.read(len(REPORT_HEAD)) == REPORT_HEAD.encode()
    except OSError:
        return False
