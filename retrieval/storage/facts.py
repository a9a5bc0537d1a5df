"""The store's facts methods (mixed into `Store`, like the tag and full-text ones): which files' position, camera
and place are still unread, recording them, and the places and cameras `clipdex places` and a query's reading
know.

A file's facts hold for the content they were read from (`facts_key`, its sha256): new content leaves the file
unread until the next facts pass; a move keeps them (the same content)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from clipdex.retrieval.config import IMAGE
from clipdex.retrieval.storage.reading import Reader

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from clipdex.retrieval.media.facts import Facts
    from clipdex.retrieval.places.gazetteer import Place

_UNREAD = "kind = :kind AND (facts_key IS NULL OR facts_key != coalesce(sha256, ''))"


class FactsStore:
    db: Engine  # writes
    reads: Reader

    def unread_facts(self, limit: int) -> list[tuple[str, str, str]]:
        """(path, file to open, sha256) of up to `limit` files whose current content's facts are unread."""
        return self.reads.rows(
            f"SELECT key, coalesce(real_path, key), coalesce(sha256, '') FROM items WHERE {_UNREAD} "
            "GROUP BY key, real_path, sha256 ORDER BY min(id) LIMIT :limit", {"kind": IMAGE, "limit": limit})

    def unread_facts_count(self) -> int:
        return self.reads.value(f"SELECT count(DISTINCT key) FROM items WHERE {_UNREAD}", {"kind": IMAGE}) or 0

    def set_facts(self, rows: Sequence[tuple[str, str, Facts, Place | None]]) -> None:
        """Record (path, sha256 read, facts, place) for every row of each file, in one transaction; a file whose
        content changed since stays unread."""
        from sqlalchemy import update

        from clipdex.retrieval.storage.schema import items_table

        c = items_table.c
        with self.db.begin() as conn:
            for path, sha256, facts, place in rows:
                conn.execute(
                    update(items_table)
                    .where(c.kind == IMAGE, c.key == path, c.sha256.is_(None) if not sha256 else c.sha256 == sha256)
                    .values(latitude=facts.latitude, longitude=facts.longitude, camera=facts.camera, lens=facts.lens,
                            exposure=facts.exposure, city=place and place.city, region=place and place.region,
                            country=place and place.country, facts_key=sha256)
                )

    def places(self) -> list[tuple[str, str, str, int, int]]:
        """(country, region, city, files, the id of its newest file) of every place the library's photos were
        taken in, by country then city; a video counts once (its first frame stands for it)."""
        rows = self.reads.rows(
            "SELECT country, coalesce(region, ''), city, count(DISTINCT key), max(CASE WHEN frame = 0 THEN id END) "
            "FROM items WHERE kind = :kind AND city IS NOT NULL GROUP BY country, coalesce(region, ''), city "
            "ORDER BY country, city", {"kind": IMAGE})
        return [(country, region, city, int(n), int(newest)) for country, region, city, n, newest in rows]

    def cameras(self) -> list[tuple[str, int]]:
        """(camera, files) most used first."""
        rows = self.reads.rows("SELECT camera, count(DISTINCT key) AS n FROM items WHERE kind = :kind AND camera IS "
                               "NOT NULL GROUP BY camera ORDER BY n DESC, camera", {"kind": IMAGE})
        return [(camera, int(n)) for camera, n in rows]
