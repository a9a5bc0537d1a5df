"""The approximate index: recall against exact search, correct removals, and the switch by library size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import IMAGE
from clipdex.retrieval.storage.vector_index import exact_top_k, FLAT, IVF, ivf_lists, IVFPQ, VectorIndex
from tests.helpers import json_output, search_hits


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 200, spread: float = 0.6) -> np.ndarray:
    """Unit vectors around random centres: the shape real embeddings have, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
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
    assert json_output(cli("status", "--json"))["index"]["kind"] == FLAT
    monkeypatch.setattr(config, "IVF_MIN_ITEMS", 30)  # a small library "grows past" the threshold
    status = json_output(cli("status", "--json"))
    assert status["index"]["kind"] == IVF and status["index"]["preference"] == "auto"
    library = Library(library_dir)
    ivf_hits = search_hits(cli("search", "--image", sorted((library_dir.parent / "photos").iterdir())[0], "-k", "1", "--json"))
    assert ivf_hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert sorted(library.vector_index(IMAGE).ids()) == sorted(i for ids, _ in library.store.vectors(IMAGE, 64) for i in ids)
    cli("index", library_dir.parent / "photos", "--index-type", "flat")
    assert json_output(cli("status", "--json"))["index"] == {
        "type": "flat inner product (exact)", "kind": FLAT, "preference": "flat", "gpu": False
    }
    bad = cli("index", library_dir.parent / "photos", "--index-type", "hnsw")
    assert bad.exit_code == 1 and "unknown index type" in bad.stderr


def test_ivfpq_reranks_its_shortlist_with_exact_vectors() -> None:
    """The fast path at 10M scale (PQ codes) against exact search: recall after the re-rank, exact scores,
    removals, filters and range searches (duplicates) all agree with the flat index."""
    everything = clustered(20_200, 64)
    vectors, queries = everything[:20_000], everything[20_000:]  # queries: new points among the same clusters
    ids = np.arange(1, 20_001, dtype=np.int64) * 3
    stored = dict(zip(ids.tolist(), vectors))
    chunks = [(ids[i : i + 3000], vectors[i : i + 3000]) for i in range(0, len(ids), 3000)]
    index = VectorIndex.build_ivf(64, len(ids), lambda: chunks, lambda wanted: {i: stored[i] for i in wanted if i in stored})
    assert index.type == IVFPQ and "IVF-PQ" in index.describe() and index.index.pq.M == 8
    assert recall_at_10(index, vectors, ids, queries) >= 0.95
    scores, found = index.search(queries[:5], 10)
    assert np.allclose(scores, np.einsum("qd,qkd->qk", queries[:5], np.stack([[stored[i] for i in row] for row in found])),
                       atol=1e-5)  # the scores shown are exact cosines, not PQ estimates
    index.exact = None  # without the store, PQ estimates alone: the re-rank is what makes the recall
    assert recall_at_10(index, vectors, ids, queries) < 0.6
    index.exact = lambda wanted: {i: stored[i] for i in wanted if i in stored}

    gone = ids[:5000]
    index.remove(gone)
    for i in gone.tolist():
        del stored[i]
    _, found = index.search(queries, 10)
    assert not set(found.ravel()) & set(gone)
    assert recall_at_10(index, vectors[5000:], ids[5000:], queries) >= 0.95
    allowed = ids[5000:5050]
    _, found = index.search(queries[:3], 5, allowed)
    assert np.array_equal(found, allowed[np.argsort(-(queries[:3] @ vectors[5000:5050].T), axis=1)[:, :5]])

    near = vectors[5000:5020]  # each a stored vector: its neighbours above 0.8 by range search, as duplicates asks
    flat = VectorIndex(64)
    flat.add(ids[5000:], vectors[5000:], replace=False)
    lims, scores, found = index.range_search(near, 0.8)
    flat_lims, _, flat_found = flat.range_search(near, 0.8)
    assert (scores >= 0.8).all() and all(ids[5000 + row] in found[lims[row] : lims[row + 1]] for row in range(20))
    for row in range(len(near)):
        ours, exact = set(found[lims[row] : lims[row + 1]]), set(flat_found[flat_lims[row] : flat_lims[row + 1]])
        assert ours <= exact and len(ours) >= 0.95 * len(exact)


def test_the_library_chooses_ivfpq_past_its_threshold(cli, library_dir: Path, photos, monkeypatch) -> None:
    folder = photos(40)
    first = sorted(folder.iterdir())[3]
    shutil.copy(first, folder / f"copy-of-{first.name}")  # an exact copy: duplicates must find it through PQ too
    cli("index", folder, "--model", "clipdex-tiny")
    monkeypatch.setattr(config, "IVF_MIN_ITEMS", 10)
    monkeypatch.setattr(config, "IVFPQ_MIN_ITEMS", 30)
    status = json_output(cli("status", "--json"))["index"]
    assert status["kind"] == IVFPQ and "re-ranked exactly" in status["type"]
    query = sorted((library_dir.parent / "photos").iterdir())[0]
    hits = search_hits(cli("search", "--image", query, "-k", "5", "--json"))
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5) and hits[0]["path"] == str(query)
    groups = json_output(cli("duplicates", "--json"))
    assert any({first.name, f"copy-of-{first.name}"} <= {Path(m["path"]).name for m in g} for g in groups), groups
    monkeypatch.setattr(config, "IVF_MIN_ITEMS", 10**9)
    monkeypatch.setattr(config, "IVFPQ_MIN_ITEMS", 10**9)
    assert json_output(cli("status", "--json"))["index"]["kind"] == FLAT
    exact = search_hits(cli("search", "--image", query, "-k", "5", "--json"))
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in exact], abs=1e-5)


def test_a_saved_ivfpq_index_is_loaded_and_still_reranks(cli, library_dir: Path, photos, monkeypatch) -> None:
    """`index` writes an IVF-PQ index; a later search reads that file (mapped) and must still show exact cosines
    from the re-rank, not the PQ estimates stored in it."""
    monkeypatch.setattr(config, "IVF_MIN_ITEMS", 10)
    monkeypatch.setattr(config, "IVFPQ_MIN_ITEMS", 30)
    folder = photos(40)
    cli("index", folder, "--model", "clipdex-tiny")
    state = json.loads((library_dir / "images.faiss.json").read_text())
    assert state["type"] == IVFPQ and (library_dir / state["file"]).is_file()
    library = Library(library_dir)
    ids, vectors = (np.concatenate(chunks) for chunks in zip(*library.store.vectors(IMAGE, 64)))
    stored = dict(zip(ids.tolist(), vectors))
    query = sorted(folder.iterdir())[5]
    hits = search_hits(cli("search", "--image", query, "-k", "8", "--json"))
    assert hits[0]["path"] == str(query) and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    by_path = {row["key"]: i for i, row in library.store.items(list(stored)).items()}
    exact = [float(stored[by_path[str(query)]] @ stored[by_path[h["path"]]]) for h in hits]
    assert [h["score"] for h in hits] == pytest.approx(exact, abs=1e-5)
    assert library.indexes._load(IMAGE, library.require_identity(), library.store.generation())[0].type == IVFPQ
