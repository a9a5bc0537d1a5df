"""Index, incremental re-index, search both ways, captions, the FAISS cache and the model binding, on real
libraries built with the tiny model through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.digest import file_sha256
from clipdex.retrieval.library import Library
from clipdex.retrieval.search.query import Searcher
from clipdex.retrieval.storage.store import CAPTION, IMAGE
from tests.conftest import SAMPLE_ROWS
from tests.helpers import TINY, brute_force, json_output, stored_vectors, search_hits


@pytest.fixture
def database_url(both_databases):
    """Every core test runs on SQLite and on a real PostgreSQL server."""
    return both_databases


@pytest.mark.slow
def test_index_sample_data_then_search_both_ways(cli, library_dir: Path, database_url, tiny) -> None:
    report = json_output(cli("index", config.SAMPLE_DATA_DIR, *TINY, "--json"))
    assert report["added"] == len(SAMPLE_ROWS) and report["failed"] == []
    assert Library(library_dir).store.db.dialect.name == ("postgresql" if database_url else "sqlite")
    ids, _ = stored_vectors(library_dir)
    paths = [row["key"] for row in Library(library_dir).store.items(ids).values()]
    assert sorted(paths) == sorted(str(config.SAMPLE_DATA_DIR / row["image"]) for row in SAMPLE_ROWS)

    query = config.SAMPLE_DATA_DIR / SAMPLE_ROWS[3]["image"]  # a JPEG stored rotated, with an EXIF tag
    hits = search_hits(cli("search", "--image", query, "-k", "3", "--json"))
    assert hits[0]["path"] == str(query)
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)

    for text in ("a red circle", "three green stars on a white background"):
        hits = search_hits(cli("search", text, "-k", "10", "--json"))
        assert [h["id"] for h in hits] == brute_force(library_dir, tiny.encode_texts([text])[0], 10)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_reindex_touch_move_modify_delete(cli, library_dir: Path, photos) -> None:
    folder = photos(12)
    assert json_output(cli("index", folder, *TINY, "--json"))["added"] == 12
    hashed = {s.path: s.sha256 for s in Library(library_dir).store.images()}
    assert hashed == {str(f): file_sha256(f) for f in folder.iterdir()}  # hashed by the decode workers

    again = json_output(cli("index", folder, "--json"))
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 12)

    files = sorted(folder.iterdir())
    os.utime(files[0], (1_000_000_000, 1_000_000_000))  # touched, same bytes
    touched = json_output(cli("index", folder, "--json"))
    assert (touched["added"], touched["updated"], touched["unchanged"]) == (0, 0, 12)

    (folder / "sub").mkdir()
    moved_to = folder / "sub" / ("renamed" + files[1].suffix)
    ids_before, vectors_before = stored_vectors(library_dir)
    files[1].rename(moved_to)
    moved = json_output(cli("index", folder, "--json"))
    assert (moved["added"], moved["moved"], moved["removed"]) == (0, 1, 0)
    hit = search_hits(cli("search", "--image", moved_to, "-k", "1", "--json"))[0]
    assert hit["path"] == str(moved_to) and hit["score"] == pytest.approx(1.0, abs=1e-4)
    ids_after, vectors_after = stored_vectors(library_dir)
    assert set(ids_after) == set(ids_before)  # stable ids: the move kept its row and vector
    np.testing.assert_array_equal(vectors_after[np.argsort(ids_after)], vectors_before[np.argsort(ids_before)])

    with Image.open(files[2]) as im:
        changed = im.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    changed.save(files[2], format=Image.open(files[2]).format)
    modified = json_output(cli("index", folder, "--json"))
    assert (modified["added"], modified["updated"]) == (0, 1)

    gone_hit = search_hits(cli("search", "--image", files[3], "-k", "1", "--json"))[0]
    files[3].unlink()
    deleted = json_output(cli("index", folder, "--json"))
    assert deleted["removed"] == 1
    library = Library(library_dir)
    assert library.vector_index(IMAGE).count == 11
    everything = search_hits(cli("search", "anything", "-k", "50", "--json"))
    assert len(everything) == 11 and gone_hit["id"] not in {h["id"] for h in everything}


def test_indexing_one_folder_leaves_other_folders_alone(cli, photos) -> None:
    first, second = photos(3, "first"), photos(3, "second")
    cli("index", first, *TINY)
    assert json_output(cli("index", second, "--json"))["removed"] == 0
    assert len(search_hits(cli("search", "x", "-k", "10", "--json"))) == 6


def test_captions_rank_like_brute_force(cli, library_dir: Path, photos, tiny, tmp_path: Path) -> None:
    cli("index", photos(4), *TINY)
    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(row["caption"] for row in SAMPLE_ROWS[:40]) + "\n")
    assert json_output(cli("add-captions", corpus, "--json")) == {"added": 40, "already_present": 0, "skipped": []}
    assert json_output(cli("add-captions", corpus, "--json")) == {"added": 0, "already_present": 40, "skipped": []}
    image = config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"]
    hits = json_output(cli("captions", image, "-k", "5", "--json"))
    query = Searcher(Library(library_dir)).image_vector(image)
    assert [h["id"] for h in hits] == brute_force(library_dir, query, 5, CAPTION)
    assert all(set(h) == {"id", "caption", "score", "source"} and h["source"] == "corpus" for h in hits)


def _index_file(library_dir: Path, kind: str = "image") -> Path:
    """The index file the saved state names (the state file and the index it describes are replaced together)."""
    return library_dir / json.loads((library_dir / f"{kind}s.faiss.json").read_text())["file"]


def _cache_files(library_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in library_dir.iterdir() if ".faiss" in p.name}


@pytest.mark.slow
def test_deleted_or_damaged_faiss_file_is_rebuilt_in_memory_by_readers(cli, library_dir: Path, photos) -> None:
    cli("index", photos(10), *TINY)
    before = search_hits(cli("search", "a large blue square", "--json"))
    index_file = _index_file(library_dir)
    index_file.unlink()
    cached = _cache_files(library_dir)
    assert search_hits(cli("search", "a large blue square", "--json")) == before
    assert json_output(cli("status", "--json"))["counts"]["image"] == 10
    assert _cache_files(library_dir) == cached  # readers never write the cache
    index_file.write_bytes(b"not a faiss index")
    assert search_hits(cli("search", "a large blue square", "--json")) == before
    cli("index", photos(10, "again"), *TINY)  # a writer saves a good cache again
    assert _index_file(library_dir).is_file() and _index_file(library_dir) != index_file


def test_faiss_cache_that_lags_the_store_is_topped_up(cli, library_dir: Path, photos) -> None:
    folder = photos(6)
    cli("index", folder, *TINY)
    stale = _cache_files(library_dir)
    shutil.copy2(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[50]["image"], folder / "new.png")
    (folder / sorted(p.name for p in folder.iterdir())[0]).unlink()
    cli("index", folder)
    fresh = search_hits(cli("search", "x", "-k", "20", "--json"))
    for path in library_dir.glob("*.faiss*"):
        path.unlink()
    for name, data in stale.items():
        (library_dir / name).write_bytes(data)
    assert search_hits(cli("search", "x", "-k", "20", "--json")) == fresh


def test_a_state_file_paired_with_an_older_index_is_not_trusted(cli, library_dir: Path, photos) -> None:
    """The failure two unlocked savers once produced: a current state beside an older index of the same size."""
    folder = photos(6)
    cli("index", folder, *TINY)
    stale = _index_file(library_dir).read_bytes()
    shutil.copy2(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[50]["image"], folder / "new.png")
    (folder / sorted(p.name for p in folder.iterdir())[0]).unlink()  # same count, other ids
    cli("index", folder)
    fresh = search_hits(cli("search", "x", "-k", "20", "--json"))
    _index_file(library_dir).write_bytes(stale)
    assert search_hits(cli("search", "x", "-k", "20", "--json")) == fresh
    assert len(fresh) == 6


def test_a_library_refuses_another_model(cli, photos, tmp_path: Path) -> None:
    folder = photos(2)
    cli("index", folder, *TINY)
    result = cli("index", folder, "--model", "clipdex-small")
    assert result.exit_code == 1
    assert "this library was built with clipdex-tiny, not clipdex-small" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_queries_are_one_line_errors(cli, photos, tmp_path: Path) -> None:
    cli("index", photos(2), *TINY)
    for args, message in [
        (("search", ""), "query text is empty"),
        (("search", "--image", tmp_path / "missing.jpg"), "query image not found"),
        (("search",), "give TEXT, or --image FILE"),
    ]:
        result = cli(*args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)
    assert len(search_hits(cli("search", "x", "-k", "1000", "--json"))) == 2
    assert cli("search", "x", "-k", "0").exit_code == 2  # a usage error, said as typer says them


def test_a_corrupt_file_is_skipped_and_reported(cli, photos) -> None:
    folder = photos(3)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    report = json_output(cli("index", folder, *TINY, "--json"))
    assert report["added"] == 3
    assert [f["path"] for f in report["failed"]] == [str(folder / "broken.jpg")]
    status = json_output(cli("status", "--json"))
    assert status["counts"] == {"image": 3, "video": 0, "frame": 0, "caption": 0, "failed": 1}
    assert status["model"] == "clipdex-tiny"


def test_commands_have_help_and_a_missing_library_is_explained(cli) -> None:
    result = cli("--help")
    for command in ("index", "search", "captions", "add-captions", "status", "finetune", "eval"):
        assert command in result.stdout
    missing = cli("search", "x")
    assert missing.exit_code == 1 and "no library at" in missing.stderr
