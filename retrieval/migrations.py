"""Bringing an older library database up to the current schema, in one transaction (part of the store).

Version 1 → 2: staged re-embed vectors record their source (the staged cache is dropped: it is only a cache).
Version 2 → 3: OCR text and the full-text index; video frames (a file may now have several rows, one a frame,
so uniqueness moves from (kind, key) to (kind, key, frame)). SQLite cannot change a table's constraints in
place, so `items` is rebuilt under its new definition with every row copied.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from clipdex.retrieval import fulltext
from clipdex.retrieval.schema import items_table, staged_table

_V2_COLUMNS = "id, kind, key, sha256, size, mtime, width, height, taken_at, vector, generation"


def migrate(conn: Connection, found: str) -> None:
    if found == "1":
        staged_table.drop(conn, checkfirst=True)
        staged_table.create(conn)
    if conn.dialect.name == "sqlite":
        for index in ("ix_items_sha256", "ix_items_generation"):
            conn.execute(text(f"DROP INDEX IF EXISTS {index}"))
        conn.execute(text("ALTER TABLE items RENAME TO items_v2"))
        items_table.create(conn)
        conn.execute(text(f"INSERT INTO items ({_V2_COLUMNS}) SELECT {_V2_COLUMNS} FROM items_v2"))
        conn.execute(text("DROP TABLE items_v2"))
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
    fulltext.create(conn)
    fulltext.rebuild(conn)
