"""Weight-space mixing of a fine-tuned model with the one it started from (WiSE-FT, Wortsman et al., CVPR 2022).

Fine-tuning CLIP on a few hundred pairs tends to trade what it knew for what it was shown; interpolating the
weights keeps most of the gain and most of the original ability, with one number to choose the trade-off.
"""

from __future__ import annotations

import torch

from clipdex.retrieval.errors import ClipdexError


def mix_weights(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * start + alpha * tuned for every floating tensor; others (integer buffers) come from `tuned`.

    alpha 0 gives `start` and alpha 1 gives `tuned` exactly (no rounding on the way)."""
    if not 0.0 <= alpha <= 1.0:
        raise ClipdexError(f"--mix must be between 0 and 1, not {alpha}")
    if start.keys() != tuned.keys():
        raise ClipdexError("cannot mix weights of two different architectures")
    mixed = {}
    for name, value in tuned.items():
        if not value.is_floating_point() or alpha == 1.0:
            mixed[name] = value.clone()
        elif alpha == 0.0:
            mixed[name] = start[name].to(value.dtype).clone()
        else:
            mixed[name] = (1.0 - alpha) * start[name].to(value.dtype) + alpha * value
    return mixed
