"""Full-text search over each image's recognised text (OCR) and the words of its file and folder names.

Part of the store (only store.py calls it): the index is kept by the database itself, so it can never drift from
the rows. SQLite: an FTS5 table maintained by triggers on `items`, in the same transaction as every insert, move,
update and delete. PostgreSQL: a generated tsvector column with a GIN index. Both are rebuilt from the rows.

A query is a list of words (see `query_words`); matching is on whole words, case- and accent-insensitive on
SQLite, case-insensitive on PostgreSQL. OCR glues words ("CORNERBAKERY") and Chinese or Japanese text has no
spaces at all, so recognised text is also searched for the words inside it: through a trigram index (SQLite:
FTS5's trigram tokenizer; PostgreSQL: pg_trgm), ranked below every whole-word match. Both read `LIKE` patterns,
case-insensitive for ASCII letters on both.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Sequence

from clipdex.retrieval.config import IMAGE
from clipdex.retrieval.storage.reading import Reader

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

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
    "CREATE VIRTUAL TABLE IF NOT EXISTS items_grams USING fts5(ocr, tokenize = 'trigram')",
    """CREATE TRIGGER IF NOT EXISTS items_grams_insert AFTER INSERT ON items
       WHEN new.kind = 'image' AND coalesce(new.ocr_text, '') != '' BEGIN
         INSERT INTO items_grams(rowid, ocr) VALUES (new.id, new.ocr_text);
       END""",
    """CREATE TRIGGER IF NOT EXISTS items_grams_update AFTER UPDATE OF ocr_text ON items WHEN new.kind = 'image' BEGIN
         DELETE FROM items_grams WHERE rowid = old.id;
         INSERT INTO items_grams(rowid, ocr) SELECT new.id, new.ocr_text WHERE coalesce(new.ocr_text, '') != '';
       END""",
    """CREATE TRIGGER IF NOT EXISTS items_grams_delete AFTER DELETE ON items BEGIN
         DELETE FROM items_grams WHERE rowid = old.id;
       END""",
]
_GRAMS = "lower(coalesce(ocr_text, ''))"  # what PostgreSQL's trigram index holds and substring queries read
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
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    for statement in _SQLITE_DDL if conn.dialect.name == "sqlite" else _POSTGRES_DDL:
        conn.execute(text(statement))
    if conn.dialect.name != "sqlite":
        try:  # pg_trgm ships with PostgreSQL (contrib) and is trusted: a database owner may enable it
            with conn.begin_nested():
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
                conn.execute(text(f"CREATE INDEX IF NOT EXISTS items_ocr_grams ON items USING GIN ({_GRAMS} gin_trgm_ops)"))
        except DBAPIError:  # without it substring queries still answer, by reading every row
            pass


def rebuild(conn: Connection) -> None:
    """Make the index again from the rows (after a migration, or if it was ever damaged)."""
    from sqlalchemy import text

    if conn.dialect.name == "sqlite":
        conn.execute(text("DELETE FROM items_text"))
        conn.execute(text("INSERT INTO items_text(rowid, names, ocr) SELECT id, key, coalesce(ocr_words, '') "
                          "FROM items WHERE kind = 'image'"))
        conn.execute(text("DELETE FROM items_grams"))
        conn.execute(text("INSERT INTO items_grams(rowid, ocr) SELECT id, ocr_text FROM items "
                          "WHERE kind = 'image' AND coalesce(ocr_text, '') != ''"))
    # PostgreSQL's generated column is recomputed by the database on every write: nothing to rebuild.


def _expression(reads: Reader, words: Sequence[str], join: str) -> str:
    """An FTS5 MATCH or a tsquery string; words are letters and digits only, each quoted as one term."""
    terms = [w for word in words for w in _WORD.findall(word)]
    if reads.dialect == "sqlite":
        return f" {join} ".join(f'"{w}"' for w in terms)
    return (" & " if join == "AND" else " | ").join(f"'{w}'" for w in terms)


def _match(reads: Reader, words: Sequence[str], join: str, limit: int) -> list[tuple[int, float]]:
    query = {"q": _expression(reads, words, join), "limit": limit}
    if reads.dialect == "sqlite":
        rows = reads.rows(
            "SELECT rowid, -bm25(items_text) AS relevance FROM items_text WHERE items_text MATCH :q "
            "ORDER BY relevance DESC, rowid LIMIT :limit", query)
    else:
        rows = reads.rows(
            "SELECT id, ts_rank(words, query) AS relevance FROM items, to_tsquery('simple', :q) AS query "
            "WHERE kind = 'image' AND words @@ query ORDER BY relevance DESC, id LIMIT :limit", query)
    return [(int(i), float(r)) for i, r in rows]


def _count(reads: Reader, word: str) -> int:
    if reads.dialect == "sqlite":
        sql = "SELECT count(*) FROM items_text WHERE items_text MATCH :q"
    else:
        sql = "SELECT count(*) FROM items WHERE kind = 'image' AND words @@ to_tsquery('simple', :q)"
    return int(reads.value(sql, {"q": _expression(reads, [word], "AND")}) or 0)


def search(reads: Reader, words: Sequence[str], limit: int, total: int,
           alone: bool = False) -> list[tuple[int, float]]:
    """(item id, relevance) best first. Words on over half the items are dropped (a folder every photo is in
    says nothing about which one is meant); then the items holding every remaining word, or, if none does,
    those holding any of the rarer ones. `alone` (the words are all there is to rank by: --mode text): when every
    word is common, the common ones are searched rather than none."""
    found, every_word = _whole_words(reads, words, limit, total, alone)
    if len(found) >= limit and every_word:
        return found
    # The photos whose text holds every word, some inside longer ones: below the photos holding every word
    # whole, above those holding only some of them.
    inside = [i for i in _inside_words(reads, words, limit + len(found), total) if i not in dict(found)]
    if every_word:
        lowest = min((r for _, r in found), default=0.0)
        return (found + [(i, lowest - 1.0 - n / (len(inside) + 1)) for n, i in enumerate(inside)])[:limit]
    highest = max((r for _, r in found), default=0.0)
    return ([(i, highest + 1.0 + (len(inside) - n) / (len(inside) + 1)) for n, i in enumerate(inside)] + found)[:limit]


def _whole_words(reads: Reader, words: Sequence[str], limit: int, total: int,
                 alone: bool) -> tuple[list[tuple[int, float]], bool]:
    """The matches of whole words, and whether they hold every word (else some words matched nowhere, or no
    photo held them all and the rarer ones were matched alone)."""
    count = {w: _count(reads, w) for w in words}
    present = [w for w in words if count[w] > 0]
    kept = [w for w in present if count[w] <= max(COMMON_SHARE * total, 5)]
    if not kept and alone:
        kept = present
    if not kept:
        return [], False
    found = _match(reads, kept, "AND", limit)
    if found or len(kept) == 1:
        return found, len(present) == len(words)
    rare = [w for w in kept if count[w] <= max(RARE_SHARE * total, 3)]
    return (_match(reads, rare, "OR", limit) if rare else []), False


def _worth_finding_inside(word: str) -> bool:
    """Three letters or more (a shorter one is inside too many words), or two of a script written without
    spaces (Chinese, Japanese), where a word is two characters as often as not."""
    return len(word) >= 3 or (len(word) == 2 and all(ord(ch) >= 0x2E80 for ch in word))


def _inside_words(reads: Reader, words: Sequence[str], limit: int, total: int) -> list[int]:
    """Images whose recognised text holds every word worth finding inside (see above), rarest words decide;
    ids in order. Words on over half the images say nothing, as for whole words."""
    wanted = [w for w in words if _worth_finding_inside(w)]
    if not wanted or len(wanted) < len([w for w in words if len(w) > 1]):  # every word must be findable
        return []
    if reads.dialect == "sqlite" and all(len(w) >= 3 for w in wanted):
        table, column, key = "items_grams", "ocr", "rowid"
    else:  # (SQLite's trigram index misses some patterns shorter than a trigram: those read the rows)
        table, column, key = "items", _GRAMS, "id"
    patterns = {f"p{n}": f"%{w}%" for n, w in enumerate(wanted)}  # words are letters and digits: no wildcards
    for name in patterns:
        held = reads.value(f"SELECT count(*) FROM {table} WHERE {column} LIKE :{name}", patterns)
        if held > max(COMMON_SHARE * total, 5):
            return []
    where = " AND ".join(f"{column} LIKE :{name}" for name in patterns)
    rows = reads.rows(f"SELECT {key} FROM {table} WHERE {where} ORDER BY {key} LIMIT :limit",
                      {**patterns, "limit": limit})
    return [int(i) for (i,) in rows]


class TextStore:
    """The store's OCR and full-text methods (mixed into `Store`, which provides `db` and `reads`)."""

    db: Engine
    reads: Reader
    get_meta: Callable[[str], str | None]
    set_meta: Callable[[str, str], None]

    @property
    def ocr_enabled(self) -> bool:
        """Whether the library reads the text in its images (index --ocr once; later runs remember it)."""
        return self.get_meta(OCR_META_KEY) == "on"

    def enable_ocr(self) -> None:
        self.set_meta(OCR_META_KEY, "on")

    def unread_images(self, limit: int) -> list[tuple[int, str, str | None]]:
        """(id, path, sha256) of images whose current content OCR has not read yet."""
        return self.reads.rows("SELECT id, key, sha256 FROM items WHERE kind = :kind AND ocr_text IS NULL "
                               "ORDER BY id LIMIT :limit", {"kind": IMAGE, "limit": limit})

    def set_ocr(self, rows: Sequence[tuple[int, str | None, str]]) -> None:
        """Record (id, sha256 read, text) in one transaction; a row whose content changed since is left unread."""
        from clipdex.retrieval.storage.schema import items_table
        from sqlalchemy import update

        c = items_table.c
        with self.db.begin() as conn:
            for item_id, sha256, found in rows:
                same = c.sha256.is_(None) if sha256 is None else c.sha256 == sha256
                conn.execute(update(items_table).where(c.id == item_id, same).values(
                    ocr_text=found, ocr_words=searchable_words(found)
                ))

    def texts_by_file(self) -> dict[str, str]:
        """The recognised text of each image that holds some."""
        return dict(self.reads.rows("SELECT key, ocr_text FROM items WHERE kind = :kind AND ocr_text != ''",
                                    {"kind": IMAGE}))

    def ocr_counts(self) -> dict[str, int]:
        unread, empty, with_text = self.reads.rows(
            "SELECT count(*) FILTER (WHERE ocr_text IS NULL), count(*) FILTER (WHERE ocr_text = ''), "
            "count(*) FILTER (WHERE ocr_text != '') FROM items WHERE kind = :kind", {"kind": IMAGE})[0]
        return {"unread": unread, "without_text": empty, "with_text": with_text}

    def text_search(self, words: Sequence[str], limit: int, images: int, alone: bool = False) -> list[tuple[int, float]]:
        """Images whose recognised text or file and folder names hold the words, best first (see `search`);
        `images` is how many the library holds (the caller knows it without counting rows)."""
        return search(self.reads, words, limit, images, alone)
