"""Several processes on one library: a second writer is refused, searches answer while an index runs (a reader
holding the database open while a writer commits: test_crash_safety.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipdex.retrieval.library import Library
from tests.helpers import TINY, start_index, search_hits


def test_a_second_writer_is_refused(cli, library_dir: Path, photos) -> None:
    folder = photos(2)
    cli("index", folder, *TINY)
    with Library(library_dir).writer():
        result = cli("index", folder)
    assert result.exit_code == 1 and "is being written by clipdex (pid" in result.stderr
    assert cli("index", folder).exit_code == 0


@pytest.mark.slow
def test_search_answers_while_index_runs(cli, library_dir: Path, photos) -> None:
    """Every answer given during indexing is the answer of some committed state: ids are assigned in commit order,
    so a committed state is all ids up to some id, each with its final score, ranked by it."""
    folder = photos(150)
    first = photos(1, "first")
    cli("index", first, *TINY)
    process = start_index(library_dir, folder)
    answers = []
    while process.poll() is None:
        result = cli("search", "a red circle", "-k", "200", "--json")
        assert result.exit_code == 0, result.output
        answers.append(search_hits(result))
    assert process.returncode == 0, process.stderr.read().decode()
    final = search_hits(cli("search", "a red circle", "-k", "200", "--json"))
    assert len(final) == 151
    score = {hit["id"]: hit["score"] for hit in final}
    assert answers and any(1 < len(answer) < 151 for answer in answers)  # some answers came mid-index
    for answer in answers:
        ids = [hit["id"] for hit in answer]
        assert sorted(ids) == sorted(i for i in score if i <= max(ids))  # one committed state, whole
        assert [hit["score"] for hit in answer] == pytest.approx([score[i] for i in ids], abs=1e-5)
        assert [hit["score"] for hit in answer] == sorted((hit["score"] for hit in answer), reverse=True)


def test_a_reader_cannot_write(cli, library_dir: Path, photos) -> None:
    """The store's reads run on a `query_only` connection (storage/reading.py): whatever SQL reaches a reader, the
    library stays as it was."""
    import sqlite3

    cli("index", photos(3), "--model", "sample")
    library = Library(library_dir)
    reader = library.store.reads
    for sql in ("DELETE FROM items", "UPDATE meta SET value = '0' WHERE key = 'generation'",
                "CREATE TABLE planted (x)"):
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.rows(sql)
    assert library.store.count("image") == 3 and library.store.generation() == 1
    assert reader.value("SELECT count(*) FROM sqlite_master WHERE name = 'planted'") == 0
