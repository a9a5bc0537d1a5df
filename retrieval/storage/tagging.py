"""The store's tag methods (mixed into `Store`, like the full-text ones): which vocabulary the library tags with,
which rows still need tags, the tags themselves, and the counts `clipdex tags` lists.

A row's tags hold for its current vector and the library's vocabulary in the bound model's space (`tags_key`):
new content, a re-embed or another vocabulary leaves it untagged until the next tag pass."""

from __future__ import annotations

import json
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine

from clipdex.retrieval.storage.schema import IMAGE, items_table, tags_table

TAGS_META_KEY = "tags_vocabulary"  # JSON: the concept list the library tags with; absent: no tags


class TagStore:
    db: Engine

    get_meta: Callable[[str], str | None]
    set_meta: Callable[[str, str], None]

    @property
    def tags_enabled(self) -> bool:
        """Whether the library tags its images (index --tags once; later runs remember it)."""
        return self.get_meta(TAGS_META_KEY) is not None

    def tag_concepts(self) -> list[str] | None:
        """The concepts the library was given to tag with (kept in the database: the library owns its list), or
        None for the built-in vocabulary (as this clipdex ships it)."""
        found = self.get_meta(TAGS_META_KEY)
        return json.loads(found) if found else None

    def enable_tags(self, concepts: Sequence[str] | None) -> None:
        self.set_meta(TAGS_META_KEY, json.dumps(None if concepts is None else list(concepts)))

    def untagged(self, key: str, dim: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of up to `limit` image rows not tagged with vocabulary `key`."""
        c = items_table.c
        query = (select(c.id, c.vector).where(c.kind == IMAGE, or_(c.tags_key.is_(None), c.tags_key != key))
                 .order_by(c.id).limit(limit))
        with self.db.connect() as conn:
            rows = conn.execute(query).all()
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vectors

    def untagged_count(self, key: str) -> int:
        c = items_table.c
        with self.db.connect() as conn:
            return conn.execute(select(func.count()).where(
                c.kind == IMAGE, or_(c.tags_key.is_(None), c.tags_key != key))).scalar()

    def set_tags(self, key: str, ids: Sequence[int], found: Sequence[Sequence[tuple[str, float]]]) -> None:
        """Each row's tags replaced by `found`, in one transaction."""
        ids = [int(i) for i in ids]
        with self.db.begin() as conn:
            conn.execute(delete(tags_table).where(tags_table.c.item_id.in_(ids)))
            rows = [{"item_id": i, "tag": tag, "score": score} for i, tags in zip(ids, found) for tag, score in tags]
            if rows:
                conn.execute(insert(tags_table), rows)
            conn.execute(update(items_table).where(items_table.c.id.in_(ids)).values(tags_key=key))

    def tags_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """Each row's tags, likeliest first."""
        t = tags_table.c
        found: dict[int, list[str]] = {int(i): [] for i in ids}
        with self.db.connect() as conn:
            for item_id, tag in conn.execute(select(t.item_id, t.tag).where(t.item_id.in_(list(found)))
                                             .order_by(t.item_id, t.score.desc(), t.tag)):
                found[item_id].append(tag)
        return found

    def tag_counts(self) -> list[tuple[str, int]]:
        """(tag, files holding it) most common first: a video counts once, whichever of its frames hold it."""
        t, c = tags_table.c, items_table.c
        files = func.count(c.key.distinct())
        query = (select(t.tag, files).join(items_table, c.id == t.item_id).group_by(t.tag)
                 .order_by(files.desc(), t.tag))
        with self.db.connect() as conn:
            return [(tag, int(n)) for tag, n in conn.execute(query)]

    def tags_by_file(self) -> dict[str, list[str]]:
        """Each tagged file's tags, likeliest first (a video's: those of all its frames, each once)."""
        t, c = tags_table.c, items_table.c
        best = func.max(t.score)
        query = (select(c.key, t.tag).join(items_table, c.id == t.item_id).group_by(c.key, t.tag)
                 .order_by(c.key, best.desc(), t.tag))
        found: dict[str, list[str]] = {}
        with self.db.connect() as conn:
            for key, tag in conn.execute(query):
                found.setdefault(key, []).append(tag)
        return found
