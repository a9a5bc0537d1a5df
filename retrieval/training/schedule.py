"""Optimizer and learning-rate schedule as open_clip trains CLIP: AdamW with no weight decay on gains, biases,
embeddings and the logit scale; linear warmup, then cosine decay to zero."""

from __future__ import annotations

import math

import torch

_NO_DECAY_MARKERS = ("bias", "ln", "bn", "norm", "logit_scale", "embedding")


def _decays(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim >= 2 and not any(marker in name for marker in _NO_DECAY_MARKERS)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if _decays(n, p)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if not _decays(n, p)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * base_lr
