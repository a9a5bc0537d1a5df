"""Indexing options: one value the CLI (and watch) builds and `clipdex.api.index` checks, as FinetuneOptions is for
fine-tuning; the defaults here are also the command line's."""

from __future__ import annotations

from dataclasses import dataclass

from clipdex.retrieval import config
from clipdex.retrieval.errors import UsageError


@dataclass(frozen=True)
class IndexOptions:
    """How to index.

    model / pretrained: the model to index with (default: the library's, else config.DEFAULT_MODEL).
    reembed: re-embed the whole library with `model` first; it switches models only when done.
    ocr / tags: also read the text in images / tag them (both remembered by the library); `vocabulary` is a file
    of concepts to tag with, or "builtin".
    export_text: prepare the model for torch-free text queries (a named step, once per model)."""

    model: str | None = None
    pretrained: str | None = None
    reembed: bool = False
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = config.DEFAULT_BATCH_SIZE
    workers: int = config.DEFAULT_DECODE_WORKERS
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    index_type: str | None = None
    engine: str = "local"
    ray_address: str | None = None
    export_text: bool = True
    ocr: bool = False
    tags: bool = False
    vocabulary: str | None = None

    def check(self, has_paths: bool) -> None:
        """Refuse combinations that cannot mean anything, before any work."""
        if self.vocabulary is not None and not self.tags:
            raise UsageError("--vocabulary names the concepts to tag with: give it with --tags")
        if not has_paths and not self.reembed and not self.ocr and not self.tags:
            raise UsageError("give one or more folders to index (or --reembed --model M, --ocr or --tags)")
        if self.reembed and self.model is None:
            raise UsageError("--reembed needs --model: the model to re-embed the library with")
