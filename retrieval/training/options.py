"""Fine-tuning options: torch-free, so the command line can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipdex.retrieval import config


@dataclass
class FinetuneOptions:
    """How to fine-tune; these defaults are also the command line's (one home for both)."""

    model: str = config.OPENCLIP_DEFAULT_MODEL
    pretrained: str | None = None
    out: Path = Path("finetuned.safetensors")
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.2
    warmup: int = 100
    lock_image: bool = False
    lock_text: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    resume: Path | None = None
    device: str = "auto"
    half: bool = False
    workers: int = config.DEFAULT_DECODE_WORKERS
    eval_every: int | None = None  # also measure held-out recall every N steps (epochs always are)
    keep: str = "best"  # "best": the epoch with the highest mean held-out R@1; "last": the final weights
    patience: int | None = None  # stop after this many epochs without a better mean R@1
    mix: float | None = None  # write (1 - mix) * start + mix * fine-tuned weights (WiSE-FT)
    keep_pairs: Path | None = None  # pairs whose recall the fine-tune should not lose (another domain)
    report: Path | None = None  # an HTML report with curves, recall tables and retrieval examples


KEEP_CHOICES = ("best", "last")
MIX_TABLE = (0.0, 0.25, 0.5, 0.75, 1.0)  # the mixing weights every run reports recall for
