"""Bringing an older library database up to the current schema, in one transaction (part of the store).

Version 1 → 2: staged re-embed vectors record their source (the staged cache is dropped: it is only a cache).
Version 2 → 3: OCR text and the full-text index; video frames (a file may now have several rows, one a frame,
so uniqueness moves from (kind, key) to (kind, key, frame)). SQLite cannot change a table's constraints in
place, so `items` is rebuilt under its new definition with every row copied.
Version 3 → 4: each file's real path (filled in by the next index run: until then a row is served only at its
own path, as before); on SQLite ids are never reused (AUTOINCREMENT, which also needs the rebuild), starting
past every id ever given.
Version 4 → 5: tags (a table, and which vocabulary each row was tagged with; nothing is tagged yet); the
trigram index of recognised text (words found inside longer ones).
Version 5 → 6: each file's position, camera, lens, exposure and place (read by the next index run, no re-embed).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from clipdex.retrieval.storage import fulltext
from clipdex.retrieval.storage.schema import items_table, staged_table, tags_table

_V2_COLUMNS = "id, kind, key, sha256, size, mtime, width, height, taken_at, vector, generation"
_V3_COLUMNS = _V2_COLUMNS + ", frame, frame_time, ocr_text, ocr_words"
FACT_COLUMNS = ("latitude", "longitude", "camera", "lens", "exposure", "city", "region", "country", "facts_key")


def migrate(conn: Connection, found: str) -> None:
    """From schema version `found` to the current one, each step in turn."""
    if found != "5":
        _to_version_5(conn, found)
    present = _columns(conn) if conn.dialect.name == "sqlite" else set()  # (a rebuild has them already)
    for name in FACT_COLUMNS:  # (their types as schema.py defines them)
        if name not in present:
            kind = items_table.c[name].type.compile(conn.dialect)
            conn.execute(text(f"ALTER TABLE items ADD COLUMN {'IF NOT EXISTS ' if conn.dialect.name != 'sqlite' else ''}"
                              f"{name} {kind}"))


def _to_version_5(conn: Connection, found: str) -> None:
    if found == "1":
        staged_table.drop(conn, checkfirst=True)
        staged_table.create(conn)
    if found in ("1", "2"):
        if conn.dialect.name == "sqlite":
            _rebuild_items(conn, _V2_COLUMNS)
        else:
            for statement in (
                "ALTER TABLE items ADD COLUMN frame INTEGER NOT NULL DEFAULT 0",
                "ALTER TABLE items ADD COLUMN frame_time DOUBLE PRECISION",
                "ALTER TABLE items ADD COLUMN ocr_text TEXT",
                "ALTER TABLE items ADD COLUMN ocr_words TEXT",
                "ALTER TABLE items DROP CONSTRAINT IF EXISTS items_kind_key_key",
                "ALTER TABLE items ADD CONSTRAINT items_kind_key_frame_key UNIQUE (kind, key, frame)",
            ):
                conn.execute(text(statement))
    if conn.dialect.name == "sqlite":
        if "real_path" not in _columns(conn):
            _rebuild_items(conn, _V3_COLUMNS)
        # ids never reused: the sequence starts past every id ever given, deleted ones (tombstones) included
        conn.execute(text("DELETE FROM sqlite_sequence WHERE name = 'items'"))
        conn.execute(text("INSERT INTO sqlite_sequence (name, seq) SELECT 'items', max(coalesce((SELECT max(id) "
                          "FROM items), 0), coalesce((SELECT max(id) FROM tombstones), 0))"))
    else:  # PostgreSQL's sequences never hand out an id twice
        conn.execute(text("ALTER TABLE items ADD COLUMN IF NOT EXISTS real_path TEXT"))
    if conn.dialect.name != "sqlite" or "tags_key" not in _columns(conn):  # (a v3 rebuild above has it already)
        conn.execute(text(f"ALTER TABLE items ADD COLUMN {'IF NOT EXISTS ' if conn.dialect.name != 'sqlite' else ''}"
                          f"tags_key VARCHAR(64)"))
    tags_table.create(conn, checkfirst=True)
    fulltext.create(conn)  # (again where items was rebuilt: its triggers went with the old table)
    fulltext.rebuild(conn)


def _columns(conn: Connection) -> set[str]:
    return {row[1] for row in conn.execute(text("PRAGMA table_info(items)"))}


def _rebuild_items(conn: Connection, columns: str) -> None:
    """SQLite: `items` made again under its current definition, every row copied (SQLite cannot change a
    table's constraints in place). The full-text triggers go with the old table: callers make them again."""
    for index in ("ix_items_sha256", "ix_items_generation"):
        conn.execute(text(f"DROP INDEX IF EXISTS {index}"))
    conn.execute(text("ALTER TABLE items RENAME TO items_old"))
    items_table.create(conn)
    conn.execute(text(f"INSERT INTO items ({columns}) SELECT {columns} FROM items_old"))
    conn.execute(text("DROP TABLE items_old"))
