"""The approximate index: recall against exact search, correct removals, and the switch by library size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.store import IMAGE
from clipdex.retrieval.vector_index import FLAT, IVF, VectorIndex, exact_top_k, ivf_lists
from tests.test_core import _json


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 200) -> np.ndarray:
    """Unit vectors around random centres: the shape real embeddings have, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at_10(approx: VectorIndex, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    exact = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :10]]
    _, found = approx.search(queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))


def test_ivf_recall_and_removals_on_a_small_synthetic_set() -> None:
    vectors = clustered(20_000, 64)
    ids = np.arange(1, 20_001, dtype=np.int64) * 3  # database ids, not positions
    index = VectorIndex.ivf(64, len(vectors), vectors)
    index.add(ids, vectors, replace=False)
    assert index.type == IVF and index.index.nlist == ivf_lists(20_000)
    tuning = clustered(200, 64, seed=2)
    chunks = [(ids[i : i + 3000], vectors[i : i + 3000]) for i in range(0, len(ids), 3000)]
    assert index.tune_probes(tuning, exact_top_k(chunks, tuning, 10)) >= 0.97
    assert index.index.nprobe < index.index.nlist / 4  # far fewer lists than an exhaustive scan
    queries = clustered(200, 64, seed=1)  # other queries than those it was tuned on
    assert recall_at_10(index, vectors, ids, queries) >= 0.95

    gone = ids[:5000]
    index.remove(gone)
    _, found = index.search(queries, 10)
    assert not set(found.ravel()) & set(gone)
    assert recall_at_10(index, vectors[5000:], ids[5000:], queries) >= 0.95
    allowed = ids[5000:5050]
    scores, found = index.search(queries[:3], 5, allowed)  # filtered: exact among the allowed
    exact = allowed[np.argsort(-(queries[:3] @ vectors[5000:5050].T), axis=1)[:, :5]]
    assert np.array_equal(found, exact)


def test_the_library_switches_index_kind_by_size_and_by_choice(cli, library_dir: Path, photos, monkeypatch) -> None:
    cli("index", photos(40), "--model", "clipdex-tiny")
    assert _json(cli("status", "--json"))["index"]["kind"] == FLAT
    monkeypatch.setattr(config, "IVF_MIN_ITEMS", 30)  # a small library "grows past" the threshold
    status = _json(cli("status", "--json"))
    assert status["index"]["kind"] == IVF and status["index"]["preference"] == "auto"
    library = Library(library_dir)
    ivf_hits = _json(cli("search", "--image", sorted((library_dir.parent / "photos").iterdir())[0], "-k", "1", "--json"))
    assert ivf_hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert sorted(library.vector_index(IMAGE).ids()) == sorted(i for ids, _ in library.store.vectors(IMAGE, 64) for i in ids)
    cli("index", library_dir.parent / "photos", "--index-type", "flat")
    assert _json(cli("status", "--json"))["index"] == {
        "type": "flat inner product (exact)", "kind": FLAT, "preference": "flat", "gpu": False
    }
    bad = cli("index", library_dir.parent / "photos", "--index-type", "hnsw")
    assert bad.exit_code == 1 and "unknown index type" in bad.stderr
