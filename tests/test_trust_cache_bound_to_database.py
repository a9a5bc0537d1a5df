"""The caches kept in a library folder (the FAISS files and their state, the relevance floor) belong to one
database: a database moved aside, emptied or deleted and indexed again is never answered from the old one's
cache, even when generation, count and ids all match by coincidence."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from clipdex.retrieval import config
from clipdex.retrieval.storage.database_id import DATABASE_ID
from tests.conftest import SAMPLE_ROWS
from tests.helpers import SAMPLE, clipdex_command


def _run(library: Path, *args) -> object:
    """The real CLI in a new process, as a user runs each command; its JSON."""
    done = subprocess.run(clipdex_command(library, *args, "--json"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _same_count_other_ids(folder: Path) -> None:
    """The first photo gone and another come: ten photos again, each under the id its neighbour had."""
    first = sorted(folder.iterdir())[0]
    first.unlink()
    shutil.copy2(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[10]["image"], folder / Path(SAMPLE_ROWS[10]["image"]).name)


def _each_finds_itself(library: Path, folder: Path) -> None:
    for photo in sorted(folder.iterdir())[::4]:  # (any photo, with the ids shifted by one)
        hit = _run(library, "search", "--image", photo, "-k", "1")["hits"][0]
        assert hit["path"] == str(photo) and hit["score"] > 0.99, (photo, hit)


@pytest.mark.parametrize("how", ["moved aside", "emptied", "deleted"])
def test_a_database_made_again_is_never_answered_from_the_old_ones_cache(library_dir: Path, photos,
                                                                          how: str) -> None:
    folder = photos(10)
    _run(library_dir, "index", folder, *SAMPLE)
    database = library_dir / config.DATABASE_FILE
    for extra in ("-wal", "-shm"):
        Path(f"{database}{extra}").unlink(missing_ok=True)
    if how == "moved aside":  # what the error for a damaged database advises
        database.rename(library_dir / "library.db.aside")
    elif how == "emptied":
        database.write_bytes(b"")
    else:
        database.unlink()
    _same_count_other_ids(folder)
    assert _run(library_dir, "index", folder, *SAMPLE)["added"] == 10
    _each_finds_itself(library_dir, folder)
    state = json.loads((library_dir / "images.faiss.json").read_text())
    with sqlite3.connect(database) as conn:
        (found,) = conn.execute("SELECT value FROM meta WHERE key = ?", (DATABASE_ID,)).fetchone()
    assert state["database"] == found


def test_a_database_from_before_ids_trusts_no_cache_until_its_next_write(library_dir: Path, photos,
                                                                           tmp_path: Path) -> None:
    """An older clipdex wrote neither id: the cache beside such a database may be another database's."""
    folder = photos(10)
    _run(library_dir, "index", folder, *SAMPLE)
    old_cache = {p.name: p.read_bytes() for p in library_dir.iterdir() if ".faiss" in p.name}
    database = library_dir / config.DATABASE_FILE
    database.rename(tmp_path / "aside.db")
    _same_count_other_ids(folder)
    _run(library_dir, "index", folder, *SAMPLE)
    for path in library_dir.glob("*.faiss*"):
        path.unlink()
    for name, data in old_cache.items():  # the old database's cache, as a clipdex without ids wrote it
        if name.endswith(".json"):
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "database"}).encode()
        (library_dir / name).write_bytes(data)
    with sqlite3.connect(database) as conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (DATABASE_ID,))
    _each_finds_itself(library_dir, folder)
    assert _run(library_dir, "index", folder)["unchanged"] == 10  # a write: the database gets its id
    with sqlite3.connect(database) as conn:
        (found,) = conn.execute("SELECT value FROM meta WHERE key = ?", (DATABASE_ID,)).fetchone()
    assert json.loads((library_dir / "images.faiss.json").read_text())["database"] == found
    _each_finds_itself(library_dir, folder)  # from the cache it saved for this database


def test_the_relevance_floor_kept_for_another_database_is_measured_again(library_dir: Path, photos) -> None:
    folder = photos(10)
    _run(library_dir, "index", folder, *SAMPLE)
    _run(library_dir, "search", "a red circle")
    kept = library_dir / config.RELEVANCE_FILE
    saved = json.loads(kept.read_text())
    saved["floor"] = 0.999  # what another library's floor could be: every hit a weak match
    kept.write_text(json.dumps(saved))
    (library_dir / config.DATABASE_FILE).unlink()
    _run(library_dir, "index", folder, *SAMPLE)  # the same photos: same model, count and generation
    _run(library_dir, "search", "a red circle")
    assert json.loads(kept.read_text())["floor"] != 0.999
