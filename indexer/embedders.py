"""Embedders: a list of files in, batches of vectors (or per-file errors) out. Embedders never touch the
store; the pipeline alone writes, so every embedder gets the same transactions and change detection."""

from __future__ import annotations

import gc
import math
import multiprocessing
import signal
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from clipdex.indexer.decode import Decoded, DecodeSettings, decode_file, decode_in_worker, start_worker
from clipdex.retrieval import config
from clipdex.retrieval.media.raw import fork_is_safe
from clipdex.retrieval.media.video import is_video


def decoders_for(paths: Sequence[str], batch_size: int, workers: int) -> int:
    """Decode workers worth starting for `paths`: one per batch of work, up to `workers`. A video counts as a batch:
    decoding its frames is a photo's work many times over (4 phone clips took one worker before, decoding them
    one after another while the second core waited)."""
    work = sum(batch_size if is_video(path) else 1 for path in paths)
    return min(workers, math.ceil(work / batch_size))


@dataclass
class EmbeddedBatch:
    done: list[tuple[Decoded, np.ndarray]]  # decoded metadata with its vector
    failed: list[Decoded]


class LocalEmbedder:
    """Decode worker processes feeding one encoder in this process."""

    def __init__(
        self, encoder, batch_size: int = config.DEFAULT_BATCH_SIZE, workers: int = config.DEFAULT_DECODE_WORKERS,
        text_gate: bool = False,
    ):
        """text_gate: also ask the OCR gate whether each decoded image may hold text (index --ocr)."""
        self.encoder, self.batch_size, self.workers = encoder, batch_size, workers
        self.settings = DecodeSettings(encoder.preprocess, encoder.image_size, text_gate)

    def embed(self, paths: Sequence[str]) -> Iterator[EmbeddedBatch]:
        if not paths:
            return
        workers = decoders_for(paths, self.batch_size, self.workers)
        if not workers:
            self.encoder.ready_for_images(len(paths))
            for start in range(0, len(paths), self.batch_size):
                decoded = [decode_file(i, paths[i], self.settings) for i in range(start, min(start + self.batch_size, len(paths)))]
                yield embed_decoded(self.encoder, decoded)
            return
        self.encoder.load_runtime()  # before the workers: the image tower opens while they decode
        context = multiprocessing.get_context("fork" if fork_is_safe() else "forkserver")
        # As many decoders as cores, taking turns with the encoder (whose threads take every core): the machine
        # is never oversubscribed, and a decoder never stalls the encoder's threads mid-layer. One decoder fewer
        # than cores left a core idle whenever the encoder waited for pixels (0.67 of the limit in bf16, 0.87
        # with a decoder per core; bench/index_throughput.py prints the figure).
        turn = context.Event()
        pool = _start_pool(context, workers, self.settings, turn)
        try:
            turn.set()
            pending: deque = deque()
            ahead = self.batch_size * 2  # files decoded ahead of the encoder: two batches' worth, bounded memory
            queued = 0
            batch: list[Decoded] = []
            for n in range(len(paths)):
                while queued < len(paths) and len(pending) < ahead:
                    pending.append(pool.apply_async(decode_in_worker, (queued, paths[queued])))
                    queued += 1
                if n == 0:  # the workers decode while the image tower opens (forked before it: none inherits it)
                    self.encoder.ready_for_images(len(paths))
                batch.append(pending.popleft().get())
                if len(batch) == self.batch_size or (not pending and queued == len(paths)):
                    turn.clear()
                    try:
                        embedded = embed_decoded(self.encoder, batch)
                    finally:  # workers waiting for their turn go on, also on Ctrl-C
                        turn.set()
                    batch = []
                    yield embedded
            pool.close()
            pool.join()
        finally:  # Ctrl-C, SIGTERM, an error or a consumer that stopped early: no worker outlives the run
            pool.terminate()


def _start_pool(context, workers: int, settings: DecodeSettings, turn):
    """Decode workers. Forked from a process whose other threads (ONNX Runtime's) may hold locks, a worker must
    never run a finaliser of an object it inherited: the collector, reaching an ONNX Runtime session left as
    garbage, would wait forever for threads that do not exist in the child (seen: a worker hung importing a Pillow
    plugin when a collection began). So garbage is collected here first, and what is left is frozen, out of the
    collector's reach, until the workers exist."""
    stops = {signal.SIGINT, signal.SIGTERM}
    held = signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # a Ctrl-C during a fork would be swallowed by an
    gc.collect()  # at-fork handler ("Exception ignored in _releaseLock"): it waits, and arrives once the workers
    gc.freeze()  # exist (they unblock it in start_worker)
    try:
        return context.Pool(workers, initializer=start_worker, initargs=(settings, turn))
    finally:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def embed_decoded(encoder, batch: Sequence[Decoded]) -> EmbeddedBatch:
    """One encoder pass over a batch of decoded files: a photo gets one vector, a video one per frame (a matrix)."""
    ok = [d for d in batch if d.pixels is not None]
    views = [view for d in ok for view in (d.pixels if d.times is not None else [d.pixels])]
    vectors = encoder.encode_pixels(encoder.preprocess.batch(views)) if ok else []
    done, start = [], 0
    for decoded in ok:
        end = start + (len(decoded.pixels) if decoded.times is not None else 1)
        done.append((decoded, vectors[start:end] if decoded.times is not None else vectors[start]))
        start = end
    return EmbeddedBatch(done, [d for d in batch if d.pixels is None])
