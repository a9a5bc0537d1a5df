"""The FAISS index: inner product over L2-normalised vectors (so scores are cosines), keyed by database ids.

It is a cache of the store. Beside each index file a small JSON file records the store generation it
reflects; the library tops it up from there, and any doubt (missing, unreadable, other model) means a rebuild.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np


@dataclass
class IndexState:
    generation: int
    fingerprint: str
    dim: int


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


class VectorIndex:
    """Exact inner-product search with stable ids (IndexIDMap2), optionally on a GPU."""

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.on_gpu = False

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors under their database ids."""
        if len(ids):
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            self.remove(ids)
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) best first, only among `allowed` ids when given; rows are padded with id -1 when
        fewer than k items qualify. The id selector keeps filtered search exact."""
        k = max(1, min(k, self.count if allowed is None else len(allowed)))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is None:
            return self.index.search(queries, k)
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        return self.index.search(queries, k, params=faiss.SearchParameters(sel=selector))

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lims, scores, ids): for query i, the items scoring at least `threshold` are lims[i]:lims[i+1]."""
        return self.index.range_search(np.ascontiguousarray(queries, dtype=np.float32), threshold)

    def to_gpu(self) -> bool:
        """Move to GPU 0 when faiss was built with GPUs; returns whether it did."""
        if gpu_count() == 0:
            return False
        resources = faiss.StandardGpuResources()
        self.index = faiss.index_cpu_to_gpu(resources, 0, self.index)
        self._gpu_resources = resources  # keep alive as long as the index
        self.on_gpu = True
        return True

    def save(self, path: Path, state: IndexState) -> None:
        """Write the index, then its state; a crash between the two leaves an older state, which only makes
        the next top-up redo work (adds replace, removals are idempotent)."""
        index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        tmp = path.with_suffix(".tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
        state_path = _state_path(path)
        state_path.with_suffix(".tmp").write_text(json.dumps(state.__dict__))
        os.replace(state_path.with_suffix(".tmp"), state_path)

    @classmethod
    def load(cls, path: Path) -> tuple["VectorIndex", IndexState] | None:
        """The saved index and its state, or None when either is missing or unreadable."""
        try:
            state = IndexState(**json.loads(_state_path(path).read_text()))
            index = faiss.read_index(str(path))
        except (OSError, ValueError, TypeError, RuntimeError):
            return None
        if index.d != state.dim:
            return None
        return cls(state.dim, index), state


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")
