"""Full-text search over each image's recognised text (OCR) and the words of its file and folder names.

Part of the store (only store.py calls it): the index is kept by the database itself, so it can never drift from
the rows. SQLite: an FTS5 table maintained by triggers on `items`, in the same transaction as every insert, move,
update and delete. PostgreSQL: a generated tsvector column with a GIN index. Both are rebuilt from the rows.

A query is a list of words (see `query_words`); matching is on whole words, case- and accent-insensitive on
SQLite, case-insensitive on PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection, Engine

from clipdex.retrieval.schema import IMAGE, items_table

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that say how to search rather than what for: never matched on their own.
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were with "
    "photo photos picture pictures image images find show me my".split()
)
COMMON_SHARE = 0.5  # a word on more than this share of items is not matched at all
OCR_META_KEY = "ocr"
RARE_SHARE = 0.05  # with no item holding every word, only words on at most this share of items are matched

_SQLITE_DDL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS items_text USING fts5(names, ocr, tokenize = 'unicode61')",
    """CREATE TRIGGER IF NOT EXISTS items_text_insert AFTER INSERT ON items WHEN new.kind = 'image' BEGIN
         INSERT INTO items_text(rowid, names, ocr) VALUES (new.id, new.key, coalesce(new.ocr_words, ''));
       END""",
    """CREATE TRIGGER IF NOT EXISTS items_text_update AFTER UPDATE OF key, ocr_words ON items
       WHEN new.kind = 'image' BEGIN
         DELETE FROM items_text WHERE rowid = old.id;
         INSERT INTO items_text(rowid, names, ocr) VALUES (new.id, new.key, coalesce(new.ocr_words, ''));
       END""",
    """CREATE TRIGGER IF NOT EXISTS items_text_delete AFTER DELETE ON items BEGIN
         DELETE FROM items_text WHERE rowid = old.id;
       END""",
]
_POSTGRES_DDL = [
    """ALTER TABLE items ADD COLUMN IF NOT EXISTS words tsvector GENERATED ALWAYS AS (
         to_tsvector('simple', regexp_replace(key, '[^[:alnum:]]+', ' ', 'g') || ' ' || coalesce(ocr_words, ''))
       ) STORED""",
    "CREATE INDEX IF NOT EXISTS items_words ON items USING GIN (words)",
]


def query_words(query: str) -> list[str]:
    """The words of a query worth matching: lower-cased, without stopwords and single letters, each once."""
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    return list(dict.fromkeys(kept))


def searchable_words(recognised: str) -> str:
    """The recognised text as the index reads it: OCR often glues a word to a number ("INVOICE9031"), so a token
    mixing letters and digits is also indexed as its letter and digit runs (while "B22" still matches itself)."""
    extra = [
        " ".join(re.findall(r"[^\W\d_]+|\d+", token))
        for token in _WORD.findall(recognised)
        if re.search(r"\d", token) and re.search(r"[^\W\d_]", token)
    ]
    return " ".join([recognised, *extra])


def create(conn: Connection) -> None:
    for statement in _SQLITE_DDL if conn.dialect.name == "sqlite" else _POSTGRES_DDL:
        conn.execute(text(statement))


def rebuild(conn: Connection) -> None:
    """Make the index again from the rows (after a migration, or if it was ever damaged)."""
    if conn.dialect.name == "sqlite":
        conn.execute(text("DELETE FROM items_text"))
        conn.execute(text("INSERT INTO items_text(rowid, names, ocr) SELECT id, key, coalesce(ocr_words, '') "
                          "FROM items WHERE kind = 'image'"))
    # PostgreSQL's generated column is recomputed by the database on every write: nothing to rebuild.


def _expression(conn: Connection, words: Sequence[str], join: str) -> str:
    """An FTS5 MATCH or a tsquery string; words are letters and digits only, each quoted as one term."""
    terms = [w for word in words for w in _WORD.findall(word)]
    if conn.dialect.name == "sqlite":
        return f" {join} ".join(f'"{w}"' for w in terms)
    return (" & " if join == "AND" else " | ").join(f"'{w}'" for w in terms)


def _match(conn: Connection, words: Sequence[str], join: str, limit: int) -> list[tuple[int, float]]:
    query = {"q": _expression(conn, words, join), "limit": limit}
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text(
            "SELECT rowid, -bm25(items_text) AS relevance FROM items_text WHERE items_text MATCH :q "
            "ORDER BY relevance DESC, rowid LIMIT :limit"
        ), query)
    else:
        rows = conn.execute(text(
            "SELECT id, ts_rank(words, query) AS relevance FROM items, to_tsquery('simple', :q) AS query "
            "WHERE kind = 'image' AND words @@ query ORDER BY relevance DESC, id LIMIT :limit"
        ), query)
    return [(int(i), float(r)) for i, r in rows]


def _count(conn: Connection, word: str) -> int:
    if conn.dialect.name == "sqlite":
        sql = "SELECT count(*) FROM items_text WHERE items_text MATCH :q"
    else:
        sql = "SELECT count(*) FROM items WHERE kind = 'image' AND words @@ to_tsquery('simple', :q)"
    return int(conn.execute(text(sql), {"q": _expression(conn, [word], "AND")}).scalar() or 0)


def search(conn: Connection, words: Sequence[str], limit: int, total: int,
           alone: bool = False) -> list[tuple[int, float]]:
    """(item id, relevance) best first. Words on over half the items are dropped (a folder every photo is in
    says nothing about which one is meant); then the items holding every remaining word, or, if none does,
    those holding any of the rarer ones. `alone` (the words are all there is to rank by: --mode text): when every
    word is common, the common ones are searched rather than none."""
    count = {w: _count(conn, w) for w in words}
    present = [w for w in words if count[w] > 0]
    words = [w for w in present if count[w] <= max(COMMON_SHARE * total, 5)]
    if not words and alone:
        words = present
    if not words:
        return []
    found = _match(conn, words, "AND", limit)
    if found or len(words) == 1:
        return found
    rare = [w for w in words if count[w] <= max(RARE_SHARE * total, 3)]
    return _match(conn, rare, "OR", limit) if rare else []


class TextStore:
    """The store's OCR and full-text methods (mixed into `Store`, which provides `db`)."""

    db: Engine

    @property
    def ocr_enabled(self) -> bool:
        """Whether the library reads the text in its images (index --ocr once; later runs remember it)."""
        return self.get_meta(OCR_META_KEY) == "on"

    def enable_ocr(self) -> None:
        self.set_meta(OCR_META_KEY, "on")

    def unread_images(self, limit: int) -> list[tuple[int, str, str | None]]:
        """(id, path, sha256) of images whose current content OCR has not read yet."""
        c = items_table.c
        query = select(c.id, c.key, c.sha256).where(c.kind == IMAGE, c.ocr_text.is_(None)).order_by(c.id).limit(limit)
        with self.db.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def set_ocr(self, rows: Sequence[tuple[int, str | None, str]]) -> None:
        """Record (id, sha256 read, text) in one transaction; a row whose content changed since is left unread."""
        c = items_table.c
        with self.db.begin() as conn:
            for item_id, sha256, found in rows:
                same = c.sha256.is_(None) if sha256 is None else c.sha256 == sha256
                conn.execute(update(items_table).where(c.id == item_id, same).values(
                    ocr_text=found, ocr_words=searchable_words(found)
                ))

    def texts_by_file(self) -> dict[str, str]:
        """The recognised text of each image that holds some."""
        c = items_table.c
        with self.db.connect() as conn:
            return dict(conn.execute(select(c.key, c.ocr_text).where(c.kind == IMAGE, c.ocr_text != "")).all())

    def ocr_counts(self) -> dict[str, int]:
        c = items_table.c
        with self.db.connect() as conn:
            unread, empty, with_text = conn.execute(select(
                func.count().filter(c.ocr_text.is_(None)), func.count().filter(c.ocr_text == ""),
                func.count().filter(c.ocr_text != ""),
            ).where(c.kind == IMAGE)).one()
        return {"unread": unread, "without_text": empty, "with_text": with_text}

    def text_search(self, words: Sequence[str], limit: int, images: int, alone: bool = False) -> list[tuple[int, float]]:
        """Images whose recognised text or file and folder names hold the words, best first (see `search`);
        `images` is how many the library holds (the caller knows it without counting rows)."""
        with self.db.connect() as conn:
            return search(conn, words, limit, images, alone)
