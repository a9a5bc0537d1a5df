"""Words found inside the recognised text: OCR glues "CORNER BAKERY" into CORNERBAKERY, and Chinese or Japanese
text has no spaces; `--mode text bakery` must still find the receipt, below every whole-word match, with the
same answers on SQLite (FTS5 trigram) and PostgreSQL (pg_trgm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipdex.retrieval.library import Library
from tests.helpers import search_hits

TEXTS = {  # what OCR read in four of the photos (as rapidocr reads a rendered receipt: words glued)
    0: "CORNERBAKERY INVOICE 4711 TOTAL 12.40",
    1: "BAKERY OPEN DAILY",
    2: "東京タワーに行く 入場券",
    3: "HARBOURVIEW CAFE",
}


@pytest.fixture
def database_url(both_databases):
    return both_databases


@pytest.fixture
def read(cli, photos, library_dir: Path, database_url) -> dict[int, str]:
    """Index 10 photos, and record the text of four as the OCR pass does; returns position → path."""
    folder = photos(10)
    assert cli("index", folder, "--model", "clipdex-tiny", "--no-export").exit_code == 0
    library = Library(library_dir, database_url)
    rows = library.store.items(range(1, 100))
    by_path = {row["key"]: (i, row["sha256"]) for i, row in rows.items()}
    paths = sorted(by_path)
    library.store.set_ocr([(*by_path[p], TEXTS.get(n, "")) for n, p in enumerate(paths)])
    return dict(enumerate(paths))


def _found(cli, query: str, *extra: str) -> list[str]:
    result = cli("search", query, "--mode", "text", "-k", "10", "--json", *extra)
    assert result.exit_code == 0, result.output
    return [h["path"] for h in search_hits(result)]


def test_a_word_glued_to_another_is_found_below_whole_words(cli, read) -> None:
    assert _found(cli, "bakery") == [read[1], read[0]]  # the whole word first, then the glued one
    assert _found(cli, "corner bakery") == [read[0], read[1]]  # both words (inside), then one of them
    assert _found(cli, "cornerbakery") == [read[0]]
    assert _found(cli, "harbour") == [read[3]] and _found(cli, "VIEW") == [read[3]]
    assert read[0] in _found(cli, "bakery invoice")  # one whole word, one inside
    assert _found(cli, "ba") == []  # two letters are inside too many words to mean anything


def test_chinese_and_japanese_words_of_two_characters_are_found(cli, read) -> None:
    assert _found(cli, "東京") == [read[2]]
    assert _found(cli, "入場券") == [read[2]]
    assert cli("search", "東", "--mode", "text").exit_code == 1  # one character is not a word to look for


def test_the_index_follows_new_text_and_deleted_files(cli, read, library_dir: Path, database_url) -> None:
    library = Library(library_dir, database_url)
    item = next(i for i, row in library.store.items(range(1, 100)).items() if row["key"] == read[3])
    library.store.set_ocr([(item, library.store.items([item])[item]["sha256"], "SEASIDEBAKERY")])
    assert _found(cli, "harbour") == [] and _found(cli, "bakery") == [read[1], read[0], read[3]]
    Path(read[0]).unlink()
    assert cli("index", Path(read[0]).parent, "--no-export").exit_code == 0
    assert _found(cli, "bakery") == [read[1], read[3]]


def test_the_database_keeps_a_trigram_index_of_the_text(read, library_dir: Path, database_url) -> None:
    from sqlalchemy import text

    store = Library(library_dir, database_url).store
    with store.db.connect() as conn:
        if store.is_sqlite:
            assert conn.execute(text("SELECT count(*) FROM items_grams")).scalar() == len(TEXTS)
        else:
            assert conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'items_ocr_grams'")).scalar()


@pytest.mark.slow
def test_a_version_4_library_gains_tags_and_the_trigram_index(cli, read, library_dir: Path, database_url) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url or f"sqlite:///{library_dir / 'library.db'}")
    with engine.begin() as conn:  # back to the shape version 4 had
        conn.execute(text("DROP TABLE tags"))
        if engine.dialect.name == "sqlite":
            for trigger in ("items_grams_insert", "items_grams_update", "items_grams_delete"):
                conn.execute(text(f"DROP TRIGGER {trigger}"))
            conn.execute(text("DROP TABLE items_grams"))
        else:
            conn.execute(text("DROP INDEX items_ocr_grams"))
        conn.execute(text("ALTER TABLE items DROP COLUMN tags_key"))
        conn.execute(text("UPDATE meta SET value = '4' WHERE key = 'schema_version'"))
    engine.dispose()
    assert _found(cli, "bakery") == [read[1], read[0]]  # opening migrates, and the text is indexed again
    assert json.loads(cli("index", "--tags", "--json").stdout)["tags"]["tagged"] == 10
