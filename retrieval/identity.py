"""Which model a library's vectors came from, and the one test of whether two models are the same.

Vectors from different models live in different spaces: comparing them gives scores that mean nothing, so every
query, index run and re-embed asks `same_model` first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelIdentity:
    """What a library is bound to: a query or index run with any other model is refused."""

    name: str
    pretrained: str | None
    fingerprint: str  # tag:NAME, sha256:… of a weights file, init:SEED, or the hf-hub id
    dim: int

    def describe(self) -> str:
        return self.name + (f" ({self.pretrained})" if self.pretrained else "")

    def same_model(self, other: "ModelIdentity | None") -> bool:
        """Same weights and output size: the name alone is not enough (a fine-tune keeps its architecture)."""
        return other is not None and (self.fingerprint, self.dim) == (other.fingerprint, other.dim)
