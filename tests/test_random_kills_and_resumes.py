"""Data and caches under attack: crashes at random points, resumed re-embeds, checkpoints and exports that drift."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.storage.index_cache import ids_check, IndexState
from clipdex.retrieval.storage.store import CAPTION, IMAGE
from clipdex.retrieval.storage.vector_index import VectorIndex
from tests.conftest import SAMPLE_ROWS
from tests.helpers import clipdex_command


@pytest.fixture
def database_url(both_databases):
    return both_databases


def _clipdex(library_dir: Path, database_url: str | None, *args) -> subprocess.Popen:
    database = ["--database", database_url] if database_url else []
    return subprocess.Popen(
        clipdex_command(library_dir, *database, *args),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _store_ids(library: Library, kind: str) -> np.ndarray:
    dim = library.require_identity().dim
    parts = [ids for ids, _ in library.store.vectors(kind, dim)]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def assert_cache_on_disk_is_sound(library: Library) -> None:
    """Before any repair: a saved index whose state it matches must, topped up with the store's changes since its
    generation, hold exactly the store's ids. (One that does not match its state is rebuilt, never trusted.)"""
    for kind in (IMAGE, CAPTION):
        state_path = library.indexes.state_path(kind)
        if not state_path.is_file():
            continue
        state = IndexState(**json.loads(state_path.read_text()))
        try:
            index = VectorIndex(state.dim, faiss.read_index(str(library.root / state.file)))
        except RuntimeError:
            continue  # unreadable: the reader rebuilds it
        if ids_check(index) != state.ids_check or index.count != state.count:
            continue  # not the index its state describes: the reader rebuilds it
        held = set(index.ids().tolist()) - set(library.store.deleted_since(kind, state.generation).tolist())
        dim = library.require_identity().dim
        held |= {int(i) for ids, _ in library.store.vectors(kind, dim, since=state.generation) for i in ids}
        assert held == set(_store_ids(library, kind).tolist()), kind


def assert_consistent(library_dir: Path, database_url: str | None, folder: Path) -> None:
    library = Library(library_dir, database_url)
    assert_cache_on_disk_is_sound(library)
    ids = _store_ids(library, IMAGE)
    paths = [row["key"] for row in library.store.items(ids).values()]
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir())  # every image exactly once
    dim = library.require_identity().dim
    vectors = np.concatenate([v for _, v in library.store.vectors(IMAGE, dim)])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)  # every row has its vector
    assert np.array_equal(np.sort(library.vector_index(IMAGE).ids()), ids)  # FAISS ids are the database ids


@pytest.mark.slow
def test_kill_9_at_random_points_of_every_writer_leaves_a_sound_library(
    library_dir: Path, database_url: str | None, photos, tmp_path: Path
) -> None:
    folder = photos(40)
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(row["caption"] for row in SAMPLE_ROWS[:400]))
    rng = random.Random(14)
    steps = [
        ("index", folder, "--model", "clipdex-tiny", "--batch-size", "2", "--workers", "0", "--no-export"),
        ("add-captions", captions),
        ("index", "--reembed", "--model", "clipdex-small", "--batch-size", "2", "--workers", "0", "--no-export"),
    ]
    for args in steps:
        for _ in range(3):
            process = _clipdex(library_dir, database_url, *args)
            time.sleep(rng.uniform(2.5, 6.0))  # imports take ~2.5 s; then somewhere in the work or the saves
            process.send_signal(signal.SIGKILL)
            process.wait()
            if (library_dir / config.DATABASE_FILE).exists() or database_url:
                try:
                    assert_cache_on_disk_is_sound(Library(library_dir, database_url))
                except ClipdexError:
                    pass  # killed before the model was bound: nothing to check yet
        finished = _clipdex(library_dir, database_url, *args)
        assert finished.wait(timeout=300) == 0, finished.stderr.read().decode()
    assert_consistent(library_dir, database_url, folder)
    library = Library(library_dir, database_url)
    assert library.require_identity().name == "clipdex-small"
    assert library.store.counts()[CAPTION] == len(set(row["caption"] for row in SAMPLE_ROWS[:400]))


@pytest.mark.slow
def test_a_resumed_reembed_recomputes_vectors_of_photos_edited_meanwhile(
    library_dir: Path, database_url: str | None, photos, cli, small
) -> None:
    folder = photos(30)
    assert cli("index", folder, "--model", "clipdex-tiny", "--no-export").exit_code == 0
    library = Library(library_dir, database_url)
    process = _clipdex(library_dir, database_url, "index", "--reembed", "--model", "clipdex-small",
                       "--batch-size", "2", "--workers", "0", "--no-export")
    deadline = time.time() + 120
    staged: set[int] = set()
    while time.time() < deadline and process.poll() is None:
        staged = library.store.staged_ids(small.identity.fingerprint) if len(staged) < 4 else staged
        if len(staged) >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert staged, "the re-embed was killed before it staged anything"
    edited_id = sorted(staged)[0]
    edited = Path(library.store.items([edited_id])[edited_id]["key"])
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[200]["image"], edited)  # other content, same name
    assert json.loads(cli("index", folder, "--json", "--no-export").stdout)["updated"] == 1
    resumed = cli("index", "--reembed", "--model", "clipdex-small", "--no-export")
    assert resumed.exit_code == 0, resumed.output
    library = Library(library_dir, database_url)
    vector = library.store.vector(edited_id)[1]
    expected = small.encode_images([read_image(edited).image])[0]
    assert float(vector @ expected) > 0.999  # the new content's vector, not the one staged before the edit


@pytest.fixture(scope="module")
def small():
    from clipdex.retrieval.models.openclip.factory import load_encoder

    return load_encoder("clipdex-small", None, "cpu")
