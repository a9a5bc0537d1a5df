"""The FAISS index: inner product over L2-normalised vectors (so scores are cosines), keyed by database ids.

Small libraries get exact flat search; past config.IVF_MIN_ITEMS an IVF index (k-means lists, a few probed
per query) answers many times faster at a recall set by its parameters, which follow from the size; past
config.IVFPQ_MIN_ITEMS the lists hold product-quantised codes (dim/8 bytes a vector instead of 4·dim), and the
shortlist they give is re-ranked with the exact vectors from the store, so scores stay exact cosines.
It is a cache of the store; index_cache.py decides when it is loaded, topped up, rebuilt and saved.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

import faiss
import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.pause import pause_point

FLAT, IVF, IVFPQ = "flat", "ivf", "ivfpq"
ExactVectors = Callable[[Sequence[int]], "dict[int, np.ndarray]"]  # id → its exact vector, from the store


def index_type_for(count: int, preference: str = "auto") -> str:
    """The index type a library of `count` items gets, unless the user forced one."""
    if preference != "auto":
        return preference
    if count >= config.IVFPQ_MIN_ITEMS:
        return IVFPQ
    return IVF if count >= config.IVF_MIN_ITEMS else FLAT


def pq_bytes(dim: int) -> int:
    """Sub-quantisers (one byte each) for `dim`: one per 8 dimensions, or the nearest count dividing dim."""
    return next(m for m in range(max(1, dim // 8), dim + 1) if dim % m == 0)


def gpu_count() -> int:
    """GPUs FAISS can use: none with faiss-cpu, which lacks the GPU functions altogether."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def ivf_lists(count: int) -> int:
    """About 2·√N lists (each probe scans ~√N/2 vectors), at most IVF_MAX_LISTS: training and assigning every
    vector to its list cost time in proportion to the list count (≈ 13 min to fill 4096 lists with 10M here)."""
    return max(16, min(config.IVF_MAX_LISTS, int(2 * math.sqrt(max(count, 1)))))


def exact_top_k(chunks: Iterable[tuple[np.ndarray, np.ndarray]], queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top k per query, streaming (ids, vectors) chunks so nothing large is held at once."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for ids, vectors in chunks:
        scores = queries @ np.asarray(vectors, dtype=np.float32).T
        if scores.shape[1] > k:  # only each chunk's own top k can enter the running top k
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, chunk_ids = np.take_along_axis(scores, part, 1), np.asarray(ids)[part]
        else:
            chunk_ids = np.broadcast_to(ids, scores.shape)
        scores, every = np.hstack([best_scores, scores]), np.hstack([best_ids, chunk_ids])
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(every, keep, 1)
    return best_ids

class VectorIndex:
    """Inner-product search keyed by database ids: flat (IndexIDMap2, exact) or IVF-flat; optionally on a GPU.

    An IVF index's nprobe is state of the index (saved with it), set by tune_probes after each build."""

    def __init__(self, dim: int, index: faiss.Index | None = None, mapped: bool = False) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.mapped = mapped  # vectors memory-mapped from the file: for searching only, never changed
        self.on_gpu = False
        self.gpu_index: faiss.Index | None = None
        self.exact: ExactVectors | None = None  # set by the index cache: what IVF-PQ re-ranks its shortlist with
        self.rerank = config.PQ_RERANK  # IVF-PQ's shortlist length, tuned with nprobe (and saved beside it)

    @classmethod
    def build_ivf(
        cls, dim: int, count: int, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
        exact: ExactVectors | None = None,
    ) -> "VectorIndex":
        """Train lists on a strided sample of ~64 vectors per list, add everything, tune the probes; with `exact`
        (the store's vectors by id) the lists hold PQ codes and the probes are tuned with the re-rank.

        `chunks()` yields (ids, vectors) over all items; it is called three times (sample, add, exact answers).
        Tuning queries are midpoints of random sample pairs, which fall between clusters (as a text query does:
        far from every photo), and sample vectors themselves, inside them (as a photo query does)."""
        stride = max(1, count // (64 * ivf_lists(count)))
        sample = np.concatenate([v[::stride] for _, v in chunks()])
        index = cls.ivf(dim, count, sample, pq=exact is not None)
        index.exact = exact
        for ids, vectors in chunks():
            index.add(ids, vectors, replace=False)
        rng = np.random.default_rng(0)
        half = config.IVF_TUNING_QUERIES // 2
        pairs = sample[rng.integers(0, len(sample), (half, 2))].sum(axis=1)
        queries = np.concatenate([  # between clusters (text is far from every photo) and inside them (photo-like)
            pairs / np.linalg.norm(pairs, axis=1, keepdims=True), sample[rng.integers(0, len(sample), half)]
        ])
        index.tune_probes(queries, exact_top_k(chunks(), queries, 10), groups=2)
        return index

    @classmethod
    def ivf(cls, dim: int, count: int, training: np.ndarray, pq: bool = False) -> "VectorIndex":
        """An empty IVF index (PQ codes in its lists with `pq`) trained on `training`, a sample of the vectors it
        will hold."""
        nlist = min(ivf_lists(count), max(1, len(training) // 39))  # faiss wants ≥ 39 points per list
        if pq:  # 8-bit codes want 256 training points per sub-quantiser; a small forced index gets fewer bits
            bits = int(min(8, max(1, math.log2(len(training)))))
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_bytes(dim), bits, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(training, dtype=np.float32))
        index.nprobe = max(1, nlist // 64)
        return cls(dim, index)

    def tune_probes(
        self, queries: np.ndarray, exact: np.ndarray, target: float = config.IVF_TUNING_RECALL, groups: int = 1
    ) -> float:
        """Double nprobe until recall@k of `queries` against their `exact` top-k ids reaches `target` in each of
        `groups` equal parts of them (kinds of query: one easy kind must not hide a hard one); returns the worst
        part's recall. The cheapest setting that is good enough on this library's own data."""
        k = exact.shape[1]

        def reached() -> float:
            _, found = self.search(queries, k)
            hits = np.array([len(set(a) & set(b)) / k for a, b in zip(found, exact)])
            return float(min(part.mean() for part in np.array_split(hits, groups)))

        recall = reached()
        while recall < target and self.index.nprobe < self.index.nlist:
            self.index.nprobe = min(self.index.nlist, self.index.nprobe * 2)
            before, recall = recall, reached()
            if self.type == IVFPQ and recall - before < 0.005 and self.rerank < config.PQ_MAX_RERANK:
                # more lists found nothing new: the true neighbours were probed but ranked below the shortlist by
                # their PQ codes (flat score landscapes, as between clusters), so lengthen the shortlist instead
                self.index.nprobe //= 2
                self.rerank *= 2
                recall = reached()
        return recall

    @property
    def reranks(self) -> bool:
        """Whether searches re-rank a PQ shortlist with exact vectors (IVF-PQ with the store at hand)."""
        return self.type == IVFPQ and self.exact is not None

    @property
    def type(self) -> str:
        if isinstance(self.index, faiss.IndexIVFPQ):
            return IVFPQ
        return IVF if isinstance(self.index, faiss.IndexIVF) else FLAT

    def describe(self) -> str:
        if self.type == IVFPQ:
            return (f"IVF-PQ, {self.index.nlist} lists, {self.index.pq.M}-byte codes, {self.index.nprobe} probed, "
                    f"top {self.rerank} re-ranked exactly (approximate)")
        if self.type == IVF:
            return f"IVF-flat, {self.index.nlist} lists, {self.index.nprobe} probed (approximate)"
        return "flat inner product (exact)"

    def ids(self) -> np.ndarray:
        """Every id the index holds (for consistency checks)."""
        if self.type == FLAT:
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        lists = self.index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray, replace: bool = True) -> None:
        """Add vectors under their database ids, replacing any already there (a fresh build, whose ids are all
        new, skips that scan)."""
        if len(ids):
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            if replace:
                self.remove(ids)
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            self._drop_gpu_copy()

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            self._drop_gpu_copy()

    def _drop_gpu_copy(self) -> None:
        """After a change the GPU copy is stale; the library clones it again before the next search."""
        if self.on_gpu:
            self.gpu_index, self.on_gpu = None, False

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) best first, only among `allowed` ids when given; rows are padded with id -1 when
        fewer than k items qualify. The id selector keeps filtered search exact."""
        k = max(1, min(k, self.count if allowed is None else len(allowed)))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        shortlist = max(k, self.rerank) if self.reranks else k
        if allowed is None:
            scores, ids = (self.gpu_index if self.on_gpu else self.index).search(queries, shortlist)
        else:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            if self.type != FLAT:  # probing every list keeps a filtered search exact (IVF-PQ: its shortlist)
                params = faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nlist)
            else:
                params = faiss.SearchParameters(sel=selector)
            scores, ids = self.index.search(queries, shortlist, params=params)
        return self._reranked(queries, ids, k) if self.reranks else (scores, ids)

    def _reranked(self, queries: np.ndarray, shortlists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top k of each shortlist by exact cosine (PQ scores only find candidates; they are not shown)."""
        vectors = self.exact(sorted({int(i) for i in shortlists.ravel() if i >= 0}))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, shortlist) in enumerate(zip(queries, shortlists)):
            known = [int(i) for i in shortlist if i in vectors]
            if not known:
                continue
            exact = np.stack([vectors[i] for i in known]) @ query
            best = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(best)], ids[row, : len(best)] = exact[best], np.asarray(known)[best]
        return scores, ids

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lims, scores, ids): for query i, the items scoring at least `threshold` are lims[i]:lims[i+1].

        IVF-PQ's own range search compares PQ estimates with the threshold, and those can put even an exact copy
        far below it: there, a query's re-ranked shortlist (exact cosines) is what is kept above the threshold."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.reranks:
            return self.index.range_search(queries, threshold)
        scores, ids = self.search(queries, self.rerank)
        keep = (ids >= 0) & (scores >= threshold)
        return np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64), scores[keep], ids[keep]

    def to_gpu(self) -> bool:
        """Search on GPU 0 when faiss was built with GPUs; returns whether it does. The CPU index stays for
        updates, saving and filtered searches (GPU indexes take no id selector)."""
        if gpu_count() == 0 or self.on_gpu:
            return self.on_gpu
        try:
            resources = faiss.StandardGpuResources()
            self.gpu_index = faiss.index_cpu_to_gpu(resources, 0, self.index)
        except RuntimeError:
            return False
        self._gpu_resources = resources  # must outlive the GPU index
        self.on_gpu = True
        return True

    def save(self, path: Path) -> None:
        """Write the index to `path` through a temporary file of its own, so no reader sees half a file."""
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            faiss.write_index(self.index, str(tmp))
            pause_point("index-save")  # written, not yet in place: readers still see the old file
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, dim: int, mapped: bool = False) -> "VectorIndex | None":
        """The saved index, or None when it is missing, unreadable or of another dimension.

        `mapped` maps the vectors from the file instead of reading them (~15 ms instead of ~250 ms for 100k
        512-d vectors): the index can then only be searched."""
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        except (OSError, RuntimeError):
            return None
        return cls(dim, index, mapped) if index.d == dim else None
