"""Embedders: a list of files in, batches of vectors (or per-file errors) out. Embedders never touch the
store; the pipeline alone writes, so every embedder gets the same transactions and change detection."""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from clipdex.indexer.decode import Decoded, DecodeDataset, collate, single_thread_worker
from clipdex.retrieval import config
from clipdex.retrieval.raw import fork_is_safe


@dataclass
class EmbeddedBatch:
    done: list[tuple[Decoded, np.ndarray]]  # decoded metadata with its vector
    failed: list[Decoded]


class LocalEmbedder:
    """Decode workers feeding one encoder in this process."""

    def __init__(
        self, encoder, batch_size: int = config.DEFAULT_BATCH_SIZE, workers: int = config.DEFAULT_DECODE_WORKERS,
        text_gate: bool = False,
    ):
        """text_gate: also ask the OCR gate whether each decoded image may hold text (index --ocr)."""
        self.encoder, self.batch_size, self.workers, self.text_gate = encoder, batch_size, workers, text_gate

    def embed(self, paths: Sequence[str]) -> Iterator[EmbeddedBatch]:
        if not paths:
            return
        workers = min(self.workers, math.ceil(len(paths) / self.batch_size))
        context = multiprocessing.get_context("fork" if fork_is_safe() else "forkserver")
        # As many decoders as cores, taking turns with the encoder (whose threads take every core): the machine
        # is never oversubscribed, and a decoder never stalls the encoder's threads mid-layer. One decoder fewer
        # than cores left a core idle whenever the encoder waited for pixels (0.67 of the limit in bf16, 0.87
        # with a decoder per core; bench/index_throughput.py prints the figure).
        decoding = context.Event() if workers else None
        loader = DataLoader(
            DecodeDataset(paths, self.encoder.preprocess, self.encoder.image_size, self.text_gate, decoding),
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=single_thread_worker if workers else None,
            prefetch_factor=4 if workers else None,
            multiprocessing_context=context if workers else None,
        )
        if decoding:
            decoding.set()
        for batch in loader:
            try:
                if decoding:
                    decoding.clear()
                embedded = embed_decoded(self.encoder, batch)
            finally:  # also on Ctrl-C: workers waiting for their turn must go on to see the end of the run
                if decoding:
                    decoding.set()
            yield embedded


def embed_decoded(encoder, batch: Sequence[Decoded]) -> EmbeddedBatch:
    """One encoder pass over a batch of decoded files: a photo gets one vector, a video one per frame (a matrix)."""
    ok = [d for d in batch if d.pixels is not None]
    rows = [d.pixels if d.times is not None else d.pixels[None] for d in ok]
    vectors = encoder.encode_pixels(torch.cat(rows)) if ok else []
    done, start = [], 0
    for decoded, part in zip(ok, rows):
        end = start + len(part)
        done.append((decoded, vectors[start:end] if decoded.times is not None else vectors[start]))
        start = end
    return EmbeddedBatch(done, [d for d in batch if d.pixels is None])
