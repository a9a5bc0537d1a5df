"""The 10M row of docs/scaling.md: an IVF-PQ index over 10M synthetic 512-d vectors, built here in chunks
(the vectors are never all in memory), with memory, build time, queries/s and recall@10 against exact search.

    python bench/ivfpq_10m.py [--n 10000000] [--nlist 4096] [--m 64] [--queries 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import clustered  # noqa: E402
from clipdex.retrieval.vector_index import exact_top_k  # noqa: E402

CHUNK = 250_000
TRAIN_SEED, QUERY_SEED = 987_654_321, 2**31  # not multiples of CHUNK: never a chunk's seed


def chunks(n: int, dim: int):
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        yield np.arange(start, start + count, dtype=np.int64), clustered(count, dim, seed=start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--m", type=int, default=64, help="PQ sub-vectors (bytes per vector)")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()

    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(args.dim)
    index = faiss.IndexIVFPQ(quantizer, args.dim, args.nlist, args.m, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(clustered(max(40 * args.nlist, 100_000), args.dim, seed=TRAIN_SEED))
    trained = time.perf_counter() - started
    for ids, vectors in chunks(args.n, args.dim):
        index.add_with_ids(vectors, ids)
    built = time.perf_counter() - started

    queries = clustered(args.queries, args.dim, seed=QUERY_SEED)
    exact = exact_top_k(chunks(args.n, args.dim), queries, 10)
    rows, shortlists = [], {}
    for nprobe in (16, 32, 64, 128):
        index.nprobe = nprobe
        began = time.perf_counter()
        for q in queries:
            index.search(q[None, :], 10)
        qps = args.queries / (time.perf_counter() - began)
        _, shortlists[nprobe] = index.search(queries, 100)
        rows.append((nprobe, qps, _recall([s[:10] for s in shortlists[nprobe]], exact)))
    # PQ scores are approximate; clipdex re-ranks a shortlist of 100 with the exact vectors from the store.
    vectors = _fetch({int(i) for s in shortlists.values() for i in s.ravel() if i >= 0}, args.n, args.dim)
    print(f"{args.n:,} vectors × {args.dim}-d; IVF{args.nlist},PQ{args.m}; train {trained:.0f}s, build {built:.0f}s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.1f} GiB; "
          f"index {args.m + 8} bytes/vector with its id")
    print(f"{'nprobe':>6} {'queries/s':>10} {'recall@10':>10} {'re-ranked':>10}")
    for nprobe, qps, recall in rows:
        reranked = [_rerank(s, q, vectors) for s, q in zip(shortlists[nprobe], queries)]
        print(f"{nprobe:>6} {qps:>10.1f} {recall:>10.3f} {_recall(reranked, exact):>10.3f}")


def _recall(found, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(e)) / 10 for f, e in zip(found, exact)]))


def _fetch(ids: set[int], n: int, dim: int) -> dict[int, np.ndarray]:
    """The exact vectors of `ids`, in one pass over the regenerated chunks (the store's role in clipdex)."""
    out = {}
    for chunk_ids, vectors in chunks(n, dim):
        wanted = [i for i in range(len(chunk_ids)) if int(chunk_ids[i]) in ids]
        out.update({int(chunk_ids[i]): vectors[i].copy() for i in wanted})  # a view would pin the chunk
    return out


def _rerank(shortlist: np.ndarray, query: np.ndarray, vectors: dict[int, np.ndarray]) -> np.ndarray:
    ids = shortlist[shortlist >= 0]
    return ids[np.argsort(-np.stack([vectors[int(i)] for i in ids]) @ query)] if len(ids) else ids


if __name__ == "__main__":
    main()
