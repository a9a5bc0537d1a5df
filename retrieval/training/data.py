"""What training reads: pairs split by image, decoded on demand, and batched so grouped pairs stay together."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from clipdex.retrieval.media.images import open_image
from clipdex.retrieval.describe.pairs import Pair


class PairImages(Dataset):
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


def epoch_batches(keys: Sequence[str], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
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
