"""A library written by the previous release (schema 2) opens in this one with nothing lost: every row and vector
kept, searches answering as before, file names searchable, videos and OCR possible from then on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.schema import SCHEMA_VERSION
from tests.helpers import search_hits


@pytest.fixture
def database_url(both_databases):
    return both_databases


# What schema 2 was (SQLAlchemy's DDL of the previous release's `items`, indexes included).
_V2_SQLITE = """CREATE TABLE items (
    id INTEGER NOT NULL, kind VARCHAR(16) NOT NULL, key TEXT NOT NULL, sha256 VARCHAR(64), size BIGINT, mtime FLOAT,
    width INTEGER, height INTEGER, taken_at FLOAT, vector BLOB NOT NULL, generation BIGINT NOT NULL,
    PRIMARY KEY (id), UNIQUE (kind, key))"""
_V2_COLUMNS = "id, kind, key, sha256, size, mtime, width, height, taken_at, vector, generation"


def _downgrade_to_v2(library_dir: Path, database_url: str | None) -> None:
    """Turn a library written now into the very shape the previous release wrote."""
    engine = create_engine(database_url or f"sqlite:///{library_dir / 'library.db'}")
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for trigger in ("items_text_insert", "items_text_update", "items_text_delete"):
                conn.execute(text(f"DROP TRIGGER {trigger}"))
            conn.execute(text("DROP TABLE items_text"))
            conn.execute(text("ALTER TABLE items RENAME TO items_v3"))
            conn.execute(text("DROP INDEX ix_items_sha256"))
            conn.execute(text("DROP INDEX ix_items_generation"))
            conn.execute(text(_V2_SQLITE))
            conn.execute(text("CREATE INDEX ix_items_sha256 ON items (sha256)"))
            conn.execute(text("CREATE INDEX ix_items_generation ON items (generation)"))
            conn.execute(text(f"INSERT INTO items ({_V2_COLUMNS}) SELECT {_V2_COLUMNS} FROM items_v3"))
            conn.execute(text("DROP TABLE items_v3"))
        else:
            conn.execute(text("DROP INDEX items_words"))
            for column in ("words", "ocr_text", "ocr_words", "frame_time"):
                conn.execute(text(f"ALTER TABLE items DROP COLUMN {column}"))
            conn.execute(text("ALTER TABLE items DROP CONSTRAINT items_kind_key_frame_key"))
            conn.execute(text("ALTER TABLE items DROP COLUMN frame"))
            conn.execute(text("ALTER TABLE items ADD CONSTRAINT items_kind_key_key UNIQUE (kind, key)"))
        conn.execute(text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
    engine.dispose()


def test_a_version_2_library_is_migrated_with_nothing_lost(cli, photos, library_dir: Path, database_url) -> None:
    folder = photos(8)
    assert cli("index", folder, "--model", "clipdex-tiny", "--no-export").exit_code == 0
    before = search_hits(cli("search", "a red circle", "-k", "8", "--json"))
    library = Library(library_dir, database_url)
    vectors_before = library.store.vectors_of([h["id"] for h in before])
    _downgrade_to_v2(library_dir, database_url)

    migrated = Library(library_dir, database_url)  # opening migrates
    assert migrated.store.get_meta("schema_version") == str(SCHEMA_VERSION)
    vectors_after = migrated.store.vectors_of([h["id"] for h in before])
    assert all((vectors_after[i] == v).all() for i, v in vectors_before.items())
    after = search_hits(cli("search", "a red circle", "-k", "8", "--json"))
    assert [(h["id"], h["path"], h["score"]) for h in after] == [(h["id"], h["path"], h["score"]) for h in before]
    name = Path(before[3]["path"]).stem
    assert [h["id"] for h in search_hits(cli("search", name, "--mode", "text", "--json"))] == [before[3]["id"]]
    again = json.loads(cli("index", folder, "--json").stdout)
    assert (again["added"], again["unchanged"], again["removed"]) == (0, 8, 0)
