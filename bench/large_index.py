"""Exact flat search vs the IVF index clipdex picks for a large library, side by side in one run.

    python bench/large_index.py [--n 1000000] [--dim 512] [--queries 1000] [--json]

Vectors are synthetic but clustered like real embeddings (uniform noise has no neighbours worth finding). The
last line of stdout is one JSON object with the figures (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import clustered  # noqa: E402
from clipdex.retrieval.storage.vector_index import VectorIndex, exact_top_k  # noqa: E402


def file_bytes(index: VectorIndex) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.faiss")
        index.save(Path(path))
        return os.path.getsize(path)


def queries_per_second(index: VectorIndex, queries: np.ndarray) -> float:
    started = time.perf_counter()
    for q in queries:  # one query at a time, as a person searching does
        index.search(q[None, :], 10)
    return len(queries) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()

    vectors = np.concatenate([clustered(min(100_000, args.n - i), args.dim, seed=i) for i in range(0, args.n, 100_000)])
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    queries = clustered(args.queries, args.dim, seed=1)
    chunk = 100_000
    chunks = lambda: ((ids[i : i + chunk], vectors[i : i + chunk]) for i in range(0, args.n, chunk))  # noqa: E731

    started = time.perf_counter()
    flat = VectorIndex(args.dim)
    for part_ids, part in chunks():
        flat.add(part_ids, part, replace=False)
    flat_build = time.perf_counter() - started
    started = time.perf_counter()
    ivf = VectorIndex.build_ivf(args.dim, args.n, chunks)
    ivf_build = time.perf_counter() - started

    exact = exact_top_k(chunks(), queries, 10)
    _, found = ivf.search(queries, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
    flat_qps = queries_per_second(flat, queries[: max(20, args.queries // 10)])
    ivf_qps = queries_per_second(ivf, queries)

    print(f"{args.n:,} vectors × {args.dim}-d, {args.queries} fresh queries, one at a time")
    print(f"{'index':<44} {'build s':>8} {'queries/s':>10} {'bytes/vector':>13} {'recall@10':>10}")
    print(f"{flat.describe():<44} {flat_build:>8.1f} {flat_qps:>10.1f} {file_bytes(flat) / args.n:>13.0f} {1.0:>10.3f}")
    print(f"{ivf.describe():<44} {ivf_build:>8.1f} {ivf_qps:>10.1f} {file_bytes(ivf) / args.n:>13.0f} {recall:>10.3f}")
    print(f"speed-up {ivf_qps / flat_qps:.1f}×")
    if args.json:
        print(json.dumps({"flat_qps": round(flat_qps, 1), "ivf_qps": round(ivf_qps, 1), "recall_at_10": round(recall, 4),
                          "ivf_build_s": round(ivf_build, 1), "n": args.n}))


if __name__ == "__main__":
    main()
