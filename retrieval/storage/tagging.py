"""The store's tag methods (mixed into `Store`, like the full-text ones): which vocabulary the library tags with,
which rows still need tags, the tags themselves, and the counts `clipdex tags` lists.

A row's tags hold for its current vector and the library's vocabulary in the bound model's space (`tags_key`):
new content, a re-embed or another vocabulary leaves it untagged until the next tag pass."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from clipdex.retrieval.config import IMAGE
from clipdex.retrieval.storage.reading import Reader

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

TAGS_META_KEY = "tags_vocabulary"  # JSON: the concept list the library tags with; absent: no tags
_UNTAGGED = "kind = :kind AND (tags_key IS NULL OR tags_key != :key)"


class TagStore:
    db: Engine  # writes
    reads: Reader

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
        rows = self.reads.rows(f"SELECT id, vector FROM items WHERE {_UNTAGGED} ORDER BY id LIMIT :limit",
                               {"kind": IMAGE, "key": key, "limit": limit})
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vectors

    def untagged_count(self, key: str) -> int:
        return self.reads.value(f"SELECT count(*) FROM items WHERE {_UNTAGGED}", {"kind": IMAGE, "key": key})

    def set_tags(self, key: str, ids: Sequence[int], found: Sequence[Sequence[tuple[str, float]]]) -> None:
        """Each row's tags replaced by `found`, in one transaction."""
        from clipdex.retrieval.storage.schema import items_table, tags_table
        from sqlalchemy import delete, insert, update

        ids = [int(i) for i in ids]
        with self.db.begin() as conn:
            conn.execute(delete(tags_table).where(tags_table.c.item_id.in_(ids)))
            rows = [{"item_id": i, "tag": tag, "score": score} for i, tags in zip(ids, found) for tag, score in tags]
            if rows:
                conn.execute(insert(tags_table), rows)
            conn.execute(update(items_table).where(items_table.c.id.in_(ids)).values(tags_key=key))

    def tags_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """Each row's tags, likeliest first."""
        found: dict[int, list[str]] = {int(i): [] for i in ids}
        for item_id, tag in self.reads.rows_in(
            "SELECT item_id, tag FROM tags WHERE item_id IN ({values}) ORDER BY item_id, score DESC, tag", list(found)
        ):
            found[item_id].append(tag)
        return found

    def tag_counts(self) -> list[tuple[str, int]]:
        """(tag, files holding it) most common first: a video counts once, whichever of its frames hold it."""
        rows = self.reads.rows("SELECT tags.tag, count(DISTINCT items.key) AS files FROM tags "
                               "JOIN items ON items.id = tags.item_id GROUP BY tags.tag ORDER BY files DESC, tags.tag")
        return [(tag, int(n)) for tag, n in rows]

    def tags_by_file(self) -> dict[str, list[str]]:
        """Each tagged file's tags, likeliest first (a video's: those of all its frames, each once)."""
        found: dict[str, list[str]] = {}
        for key, tag in self.reads.rows(
            "SELECT items.key, tags.tag FROM tags JOIN items ON items.id = tags.item_id GROUP BY items.key, tags.tag "
            "ORDER BY items.key, max(tags.score) DESC, tags.tag"
        ):
            found.setdefault(key, []).append(tag)
        return found
