"""The store's reading by exact filters (mixed into `Store`, like the full-text and tag methods): which items pass
a folder, a date range and tags, the library page by page newest first (the web page's timeline), and counts."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Sequence

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.engine import Engine

from clipdex.retrieval.storage.schema import CAPTION, IMAGE, failures_table, items_table, tags_table


def _folded(tag: str) -> str:
    return " ".join(tag.split()).casefold()


class SelectionStore:
    db: Engine

    def ids_matching(
        self, kind: str, folders: Sequence[str] = (), after: float | None = None, before: float | None = None,
        tags: Sequence[str] = (),
    ) -> np.ndarray:
        """Ids of items that pass the filters (see `_passing`)."""
        with self.db.connect() as conn:
            if tags:  # as a vocabulary reads concepts: case and runs of spaces do not make another tag
                stored = {_folded(t): t for t in conn.execute(select(tags_table.c.tag).distinct()).scalars()}
                tags = [stored.get(_folded(tag), tag) for tag in tags]
            query = select(items_table.c.id).where(items_table.c.kind == kind, *self._passing(folders, after, before, tags))
            return np.asarray(conn.execute(query).scalars().all(), dtype=np.int64)

    @staticmethod
    def _passing(folders: Sequence[str], after: float | None, before: float | None, tags: Sequence[str] = ()) -> list:
        """Conditions for items under any of `folders` (by the path the user reached them through, or by their
        real path) whose photo date (EXIF DateTimeOriginal, else file mtime) lies in [after, before), holding
        every tag of `tags` (exactly: a tag is a concept of the vocabulary).

        Prefixes are compared exactly, byte for byte, on every database: `LIKE` ignores case on SQLite and gives
        `%` and `_` a meaning, so a folder `Photos` would have matched `photos`."""
        c = items_table.c
        conditions = []
        if folders:
            prefixes = {folder.rstrip(os.sep) + os.sep for folder in folders}
            conditions.append(or_(*(
                func.substr(column, 1, len(prefix)) == prefix for prefix in prefixes for column in (c.key, c.real_path)
            )))
        taken = func.coalesce(c.taken_at, c.mtime)
        if after is not None:
            conditions.append(taken >= after)
        if before is not None:
            conditions.append(taken < before)
        for tag in tags:
            conditions.append(c.id.in_(select(tags_table.c.item_id).where(tags_table.c.tag == tag)))
        return conditions

    def files_under(self, paths: Sequence[str] = (), ids: Sequence[int] = ()) -> dict[str, tuple]:
        """Image and video files that are any of `paths` or lie under them (by either spelling, as `_passing`
        reads folders), or exactly the files of the items `ids`; each with (real path, size, mtime) as indexed (the
        real path None where an older library has not recorded it yet)."""
        c = items_table.c
        where = [or_(c.key.in_(list(paths)), c.real_path.in_(list(paths)), *self._passing(paths, None, None))] if paths else []
        if ids:
            where.append(c.id.in_([int(i) for i in ids]))
        with self.db.connect() as conn:
            rows = conn.execute(select(c.key, c.real_path, c.size, c.mtime).where(c.kind == IMAGE, *where).distinct())
            return {key: (real, size, mtime) for key, real, size, mtime in rows}

    def timeline(
        self, limit: int, cursor: tuple[float, int] | None = None, folders: Sequence[str] = (),
        after: float | None = None, before: float | None = None,
    ) -> list[dict]:
        """Files newest first by photo date (EXIF, else mtime), then id: a photo's row, a video's first frame.
        `cursor` is the (date, id) of the last file shown: the page after it (stable while files are added)."""
        c = items_table.c
        taken = func.coalesce(c.taken_at, c.mtime)
        query = select(c.id, c.key, c.size, c.width, c.height, c.frame_time, taken.label("date")).where(
            c.kind == IMAGE, c.frame == 0, *self._passing(folders, after, before)
        )
        if cursor is not None:
            query = query.where(or_(taken < cursor[0], (taken == cursor[0]) & (c.id < cursor[1])))
        with self.db.connect() as conn:
            rows = conn.execute(query.order_by(taken.desc(), c.id.desc()).limit(limit)).mappings().all()
        return [dict(row) for row in rows]

    def dates(self, folders: Sequence[str] = (), after: float | None = None, before: float | None = None,
              ) -> np.ndarray:
        """The photo date (EXIF, else mtime) of every file the timeline lists under these filters."""
        c = items_table.c
        query = select(func.coalesce(c.taken_at, c.mtime)).where(
            c.kind == IMAGE, c.frame == 0, *self._passing(folders, after, before))
        with self.db.connect() as conn:
            return np.asarray(conn.execute(query).scalars().all(), dtype=np.float64)

    def counts(self, folders: Sequence[str] = (), after: float | None = None, before: float | None = None,
               ) -> dict[str, int]:
        """Photos, videos and their embedded frames (of those passing the filters), captions, failed files: a
        video's frames are rows of kind image, counted apart so that a 10-minute video is not 300 photos."""
        c = items_table.c
        frame = c.frame_time.is_not(None)
        with self.db.connect() as conn:
            photos, frames, videos = conn.execute(
                select(func.count().filter(~frame), func.count().filter(frame), func.count(c.key.distinct()).filter(frame))
                .where(c.kind == IMAGE, *self._passing(folders, after, before))
            ).one()
            captions = conn.execute(select(func.count()).where(c.kind == CAPTION)).scalar()
            failed = conn.execute(select(func.count()).select_from(failures_table)).scalar() or 0
        return {IMAGE: photos, "video": videos, "frame": frames, CAPTION: captions, "failed": failed}


def by_month(dates: np.ndarray) -> list[tuple[str, int, float]]:
    """(YYYY-MM, how many, start of the next month) for each month holding a date, newest first, in local time
    (as a photo's date is shown). A timeline continuing after (that start, id 0) begins with that month.

    Walks the sorted dates a month at a time (two local-time conversions a month, not one a file)."""
    order = np.sort(dates[np.isfinite(dates)])
    months, end = [], len(order)
    while end > 0:
        try:
            newest = datetime.fromtimestamp(order[end - 1])
            start = datetime(newest.year, newest.month, 1).timestamp()
        except (OverflowError, OSError, ValueError):  # a date no calendar shows: not listed
            end -= 1
            continue
        try:
            after = datetime(newest.year + newest.month // 12, newest.month % 12 + 1, 1).timestamp()
        except (OverflowError, OSError, ValueError):  # December 9999: everything after its start
            after = float(order[-1]) + 1.0
        first = int(np.searchsorted(order, start, side="left"))
        months.append((f"{newest.year:04d}-{newest.month:02d}", end - first, after))
        end = first
    return months
