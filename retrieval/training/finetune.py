"""Fine-tune (or train from scratch) a dual encoder on image–caption pairs with the CLIP contrastive loss,
measuring held-out Recall@K before and after so a run that hurts retrieval says so."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from clipdex.retrieval.checkpoint import CheckpointInfo, load_optimizer_state, save_checkpoint
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.evaluate import evaluate_pairs
from clipdex.retrieval.images import open_image
from clipdex.retrieval.pairs import Pair
from clipdex.retrieval.training.options import FinetuneOptions
from clipdex.retrieval.training.schedule import cosine_lr, make_optimizer

LOGIT_SCALE_MAX = math.log(100)  # open_clip's clamp: temperature never below 0.01


@dataclass
class FinetuneResult:
    checkpoint: Path
    steps: int
    train_pairs: int
    val_pairs: int
    first_loss: float
    final_loss: float
    before: dict | None
    after: dict | None
    seconds: float
    warnings: list[str] = field(default_factory=list)


class _PairImages(Dataset):
    def __init__(self, pairs: Sequence[Pair], tokens: torch.Tensor, preprocess, image_size: int) -> None:
        self.pairs, self.tokens, self.preprocess, self.image_size = pairs, tokens, preprocess, image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        return self.preprocess(open_image(self.pairs[i].image, self.image_size)), self.tokens[i]


def split_pairs(pairs: Sequence[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Split by image (or group), not by pair, so no held-out image was seen with another of its captions, nor
    its twin."""
    keys = sorted({p.batch_key for p in pairs})
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(len(keys) * val_fraction)) if val_fraction > 0 else 0
    val_keys = {keys[i] for i in order[:n_val]}
    return [p for p in pairs if p.batch_key not in val_keys], [p for p in pairs if p.batch_key in val_keys]


def _epoch_batches(keys: Sequence[str], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of pair indices that keep each batch key's pairs together (a key with more pairs than
    a batch holds is cut into batch-sized pieces). The last, partial batch is dropped unless it is the only one."""
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    groups = list(members.values())
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    if len(keys) <= batch_size:
        return [[i for g in perm for i in groups[g]]]
    batches: list[list[int]] = []
    current: list[int] = []
    for g in perm:
        for start in range(0, len(groups[g]), batch_size):
            piece = groups[g][start : start + batch_size]
            if len(current) + len(piece) > batch_size:
                batches.append(current)
                current = []
            current.extend(piece)
    return batches


def _lock(model: torch.nn.Module, image: bool, text: bool) -> None:
    for name, param in model.named_parameters():
        is_image = name.startswith("visual.")
        if (image and is_image) or (text and not is_image and name != "logit_scale"):
            param.requires_grad_(False)


def finetune(
    pairs: Sequence[Pair],
    options: FinetuneOptions,
    on_step: Callable[[int, int, float], None] | None = None,
) -> FinetuneResult:
    """Train on `pairs`, evaluate on a held-out split, and write a clipdex checkpoint to options.out."""
    import open_clip

    from clipdex.retrieval.factory import load_encoder

    started = time.perf_counter()
    torch.manual_seed(options.seed)
    start_model = str(options.resume) if options.resume else options.model
    encoder = load_encoder(start_model, None if options.resume else options.pretrained, options.device)
    model, device = encoder.model, encoder.device
    train, val = split_pairs(pairs, options.val_fraction, options.seed)
    if len(train) < 2:
        raise ClipdexError(f"need at least 2 training pairs after the held-out split, have {len(train)}")

    def held_out() -> dict | None:
        if not val:
            return None
        model.eval()
        result = evaluate_pairs(encoder, val)
        model.train()
        return result

    before = held_out()
    _lock(model, options.lock_image, options.lock_text)
    optimizer = make_optimizer(model, options.lr, options.weight_decay)
    step = 0
    if options.resume:
        state = load_optimizer_state(options.resume)
        if state is None:
            raise ClipdexError(f"{options.resume} has no optimizer state beside it; resume needs a full checkpoint")
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])

    tokens = encoder.tokenizer([p.caption for p in train])
    dataset = _PairImages(train, tokens, encoder.preprocess, encoder.image_size)
    keys = [p.batch_key for p in train]
    batches_per_epoch = len(_epoch_batches(keys, options.batch_size, options.seed, 0))
    steps_per_epoch = max(1, batches_per_epoch // options.accum_steps)
    total = options.max_steps or options.epochs * steps_per_epoch
    warmup = min(options.warmup, max(1, total // 10))
    loss_fn = open_clip.ClipLoss()
    use_amp = device == "cuda"
    losses: list[float] = []
    model.train()

    while step < total:
        epoch, done = divmod(step, steps_per_epoch)
        batches = _epoch_batches(keys, options.batch_size, options.seed, epoch)
        batches = batches[done * options.accum_steps : steps_per_epoch * options.accum_steps]
        loader = DataLoader(
            dataset, batch_sampler=batches, num_workers=options.workers, persistent_workers=False
        )
        micro, running = 0, 0.0
        for pixels, text in loader:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                image_features = model.encode_image(pixels.to(device), normalize=True)
                text_features = model.encode_text(text.to(device), normalize=True)
                loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            (loss / options.accum_steps).backward()
            running += loss.item() / options.accum_steps
            micro += 1
            if micro % options.accum_steps:
                continue
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, options.lr, warmup, total)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
            step += 1
            losses.append(running)
            if on_step:
                on_step(step, total, running)
            running = 0.0
            if step >= total:
                break

    model.eval()
    after = held_out()
    warnings = []
    if before and after:
        worse = [
            f"{direction} R@1 {before[direction]['R@1']:.3f} → {after[direction]['R@1']:.3f}"
            for direction in ("text_to_image", "image_to_text")
            if after[direction]["R@1"] < before[direction]["R@1"]
        ]
        if worse:
            warnings.append("held-out recall got WORSE: " + "; ".join(worse))
    training = {
        "step": step,
        "base_model": encoder.identity.describe() if not options.resume else str(options.resume),
        "train_pairs": len(train),
        "val_pairs": len(val),
        "final_loss": losses[-1] if losses else None,
        "before": before,
        "after": after,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
    info = CheckpointInfo(encoder.arch, open_clip.get_model_config(encoder.arch) or {}, training)
    state = None if options.half else {"optimizer": optimizer.state_dict(), "step": step}
    save_checkpoint(options.out, model, info, half=options.half, optimizer_state=state)
    return FinetuneResult(
        checkpoint=options.out,
        steps=step,
        train_pairs=len(train),
        val_pairs=len(val),
        first_loss=losses[0] if losses else float("nan"),
        final_loss=losses[-1] if losses else float("nan"),
        before=before,
        after=after,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )
