"""The 10M row of docs/scaling.md, through clipdex's own index code: the IVF-PQ index a library of this size gets
(auto past config.IVFPQ_MIN_ITEMS), built, tuned and searched by VectorIndex, its shortlists re-ranked with exact
vectors read by id from a file on disk (the store's role, memory-mapped here so the vectors are never all in RAM).

    python bench/ivfpq_10m.py [--n 10000000] [--queries 200] [--json]

Synthetic 512-d embedding-like vectors (bench/synthetic.py), written once to $TMPDIR (20 GB at 10M); queries are
new points among the same clusters. Prints recall@10 against exact search with and without the re-rank,
queries/s one query at a time, the index's size (what a process holds of it) and the build time. The last line
of stdout is one JSON object (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import clustered  # noqa: E402
from clipdex.retrieval.storage.vector_index import IVFPQ, VectorIndex, exact_top_k, index_type_for  # noqa: E402

CHUNK = 250_000
QUERY_SEED = 2**31  # not a multiple of CHUNK: never a chunk's seed


def vector_file(n: int, dim: int) -> np.memmap:
    path = Path(tempfile.gettempdir()) / f"clipdex-bench-vectors-{n}x{dim}.f32"
    if not path.exists():
        partial = path.with_suffix(".partial")
        vectors = np.memmap(partial, dtype=np.float32, mode="w+", shape=(n, dim))
        for start in range(0, n, CHUNK):
            vectors[start : start + CHUNK] = clustered(min(CHUNK, n - start), dim, seed=start)
        vectors.flush()
        del vectors
        os.replace(partial, path)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / exact.shape[1] for f, e in zip(found, exact)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    assert index_type_for(args.n) == IVFPQ, f"a library of {args.n:,} items does not get IVF-PQ"
    stored = vector_file(args.n, args.dim)

    def chunks():
        for start in range(0, args.n, CHUNK):
            yield np.arange(start, min(start + CHUNK, args.n), dtype=np.int64), stored[start : start + CHUNK]

    def exact_vectors(ids) -> dict[int, np.ndarray]:
        ids = np.asarray(sorted(ids), dtype=np.int64)
        return dict(zip(ids.tolist(), np.asarray(stored[ids])))

    started = time.perf_counter()
    index = VectorIndex.build_ivf(args.dim, args.n, chunks, exact_vectors)
    build_s = time.perf_counter() - started
    queries = clustered(args.queries, args.dim, seed=QUERY_SEED)
    exact = exact_top_k(chunks(), queries, 10)

    began = time.perf_counter()
    found = np.concatenate([index.search(q[None, :], 10)[1] for q in queries])
    qps = args.queries / (time.perf_counter() - began)
    reranked = recall(found, exact)
    index.exact = None
    pq_only = recall(index.search(queries, 10)[1], exact)
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "index.faiss")
        index_bytes = (Path(tmp) / "index.faiss").stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{args.n:,} vectors × {args.dim}-d: {index.describe()}; built and tuned in {build_s:.0f} s")
    print(f"recall@10 against exact search: {reranked:.3f} re-ranked ({pq_only:.3f} from PQ codes alone); "
          f"{qps:.0f} queries/s one at a time; index {index_bytes / 2**30:.2f} GiB; peak RSS {peak / 2**30:.1f} GiB "
          f"(the vectors are memory-mapped from disk)")
    if args.json:
        print(json.dumps({"recall_at_10": round(reranked, 4), "qps": round(qps, 1), "index_bytes": index_bytes,
                          "pq_only_recall_at_10": round(pq_only, 4), "build_s": round(build_s), "n": args.n,
                          "nprobe": index.index.nprobe, "nlist": index.index.nlist}))


if __name__ == "__main__":
    main()
