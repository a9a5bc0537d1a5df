"""Which model a library's vectors came from, and the one test of whether two models are the same.

Vectors from different models live in different spaces: comparing them gives scores that mean nothing, so every
query, index run and re-embed asks `same_model` first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clipdex.retrieval import config


_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_checkpoint_path(name: str) -> bool:
    """Whether a --model names a clipdex checkpoint file (rather than an architecture or an hf-hub id)."""
    return Path(name).suffix in config.CHECKPOINT_SUFFIXES


@dataclass(frozen=True)
class ModelIdentity:
    """What a library is bound to: a query or index run with any other model is refused."""

    name: str
    pretrained: str | None
    fingerprint: str  # tag:NAME, sha256:… of a weights file, init:SEED, or the hf-hub id
    dim: int

    def describe(self, paths: bool = True) -> str:
        """The model as the user named it; without `paths`, weights files by their file name alone (where they
        live on disk is nothing a browser needs to learn)."""
        shown = (lambda value: value) if paths else (lambda value: Path(value).name if os.sep in value else value)
        if self.pretrained and _COMMIT.fullmatch(self.pretrained):  # a hub folder at the commit it was fetched at
            return f"{self.name} (at {self.pretrained[:12]})"
        return shown(self.name) + (f" ({shown(self.pretrained)})" if self.pretrained else "")

    def same_weights(self, other: "ModelIdentity | None") -> bool:
        """Same weights, decided without building either model (so without knowing their output size).

        A content hash (of a weights file, or of a model folder's files) names the weights alone, wherever they
        live; a pretrained tag or a seeded init names
        weights only together with the architecture (ViT-B-32 and ViT-B-16 both have an 'openai' tag)."""
        if other is None or self.fingerprint != other.fingerprint:
            return False
        return self.fingerprint.startswith(("sha256:", "files:")) or self.name == other.name

    def same_model(self, other: "ModelIdentity | None") -> bool:
        """Same weights and output size: the name alone is not enough (a fine-tune keeps its architecture)."""
        return other is not None and self.same_weights(other) and self.dim == other.dim
