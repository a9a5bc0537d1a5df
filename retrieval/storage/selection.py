"""The store's reading by exact filters (mixed into `Store`, like the full-text and tag methods): which items pass
a folder, a date range and tags, the library page by page newest first (the web page's timeline), and counts."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from clipdex.retrieval.config import CAPTION, IMAGE
from clipdex.retrieval.storage.reading import Reader, in_list

if TYPE_CHECKING:
    from clipdex.retrieval.search.hits import Filters

_TAKEN = "coalesce(taken_at, mtime)"  # a photo's date: EXIF DateTimeOriginal, else the file's mtime


def _folded(tag: str) -> str:
    return " ".join(tag.split()).casefold()


def _passing(folders: Sequence[str], after: float | None, before: float | None, tags: Sequence[str] = (),
             place: tuple[str, str, str] | None = None, cameras: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
    """SQL conditions (each starting with AND) for items under any of `folders` (by the path the user reached
    them through, or by their real path) whose photo date lies in [after, before), holding every tag of `tags`
    (exactly: a tag is a concept of the vocabulary), taken in `place` (city, region, country: "" for any) with one
    of `cameras`; with their parameters.

    Prefixes are compared exactly, byte for byte, on every database: `LIKE` ignores case on SQLite and gives
    `%` and `_` a meaning, so a folder `Photos` would have matched `photos`."""
    sql, params = [], {}
    if folders:
        prefixes = sorted({folder.rstrip(os.sep) + os.sep for folder in folders})
        tests = []
        for n, prefix in enumerate(prefixes):
            params[f"prefix{n}"], params[f"length{n}"] = prefix, len(prefix)
            tests += [f"substr({column}, 1, :length{n}) = :prefix{n}" for column in ("key", "real_path")]
        sql.append(f" AND ({' OR '.join(tests)})")
    if after is not None:
        sql.append(f" AND {_TAKEN} >= :after")
        params["after"] = after
    if before is not None:
        sql.append(f" AND {_TAKEN} < :before")
        params["before"] = before
    for part, value in zip(("city", "region", "country"), place or ("", "", "")):
        if value:
            sql.append(f" AND {part} = :{part}")
            params[part] = value
    if cameras:
        sql.append(f" AND camera IN ({', '.join(f':camera{n}' for n in range(len(cameras)))})")
        params.update({f"camera{n}": camera for n, camera in enumerate(cameras)})
    for n, tag in enumerate(tags):
        sql.append(f" AND id IN (SELECT item_id FROM tags WHERE tag = :tag{n})")
        params[f"tag{n}"] = tag
    return "".join(sql), params


def within_km(positions: np.ndarray, centre: tuple[float, float], km: float) -> np.ndarray:
    """Which (latitude, longitude) rows lie within `km` of `centre`, by great-circle distance."""
    from clipdex.retrieval.places.gazetteer import haversine_km

    return haversine_km(positions, np.asarray(centre, dtype=np.float64)) <= km


class SelectionStore:
    reads: Reader

    def ids_matching(self, kind: str, filters: Filters) -> np.ndarray:
        """Ids of items that pass the filters (see `_passing`)."""
        tags = filters.tags
        if tags:  # as a vocabulary reads concepts: case and runs of spaces do not make another tag
            stored = {_folded(t): t for (t,) in self.reads.rows("SELECT DISTINCT tag FROM tags")}
            tags = [stored.get(_folded(tag), tag) for tag in tags]
        where, params = _passing(filters.folders, filters.after, filters.before, tags, filters.place, filters.cameras)
        if filters.near is None:
            rows = self.reads.rows(f"SELECT id FROM items WHERE kind = :kind{where}", {**params, "kind": kind})
            return np.asarray([i for (i,) in rows], dtype=np.int64)
        latitude, longitude, km = filters.near
        rows = self.reads.rows(f"SELECT id, latitude, longitude FROM items WHERE kind = :kind AND latitude "
                               f"BETWEEN :south AND :north{where}", {**params, "kind": kind, "south": latitude - km / 111,
                                                                     "north": latitude + km / 111})
        found = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        close = within_km(found[:, 1:], (latitude, longitude), km)
        return found[close, 0].astype(np.int64)

    def files_under(self, paths: Sequence[str] = (), ids: Sequence[int] = ()) -> dict[str, tuple]:
        """Image and video files that are any of `paths` or lie under them (by either spelling, as `_passing`
        reads folders), or exactly the files of the items `ids`; each with (real path, size, mtime) as indexed (the
        real path None where an older library has not recorded it yet)."""
        where, params = "", {"kind": IMAGE}
        if paths:
            listed, bound = in_list("path", list(paths))
            under, more = _passing(paths, None, None)
            where += f" AND (key IN ({listed}) OR real_path IN ({listed}) OR (1 = 1{under}))"
            params.update(bound, **more)
        if ids:
            listed, bound = in_list("id", [int(i) for i in ids])
            where += f" AND id IN ({listed})"
            params.update(bound)
        rows = self.reads.rows(f"SELECT DISTINCT key, real_path, size, mtime FROM items WHERE kind = :kind{where}",
                               params)
        return {key: (real, size, mtime) for key, real, size, mtime in rows}

    def timeline(
        self, limit: int, cursor: tuple[float, int] | None = None, folders: Sequence[str] = (),
        after: float | None = None, before: float | None = None,
    ) -> list[dict]:
        """Files newest first by photo date (EXIF, else mtime), then id: a photo's row, a video's first frame.
        `cursor` is the (date, id) of the last file shown: the page after it (stable while files are added)."""
        where, params = _passing(folders, after, before)
        if cursor is not None:
            where += f" AND ({_TAKEN} < :date OR ({_TAKEN} = :date AND id < :id))"
            params.update(date=cursor[0], id=cursor[1])
        columns = ("id", "key", "size", "width", "height", "frame_time", "date")
        rows = self.reads.rows(
            f"SELECT id, key, size, width, height, frame_time, {_TAKEN} AS taken FROM items "
            f"WHERE kind = :kind AND frame = 0{where} ORDER BY taken DESC, id DESC LIMIT :limit",
            {**params, "kind": IMAGE, "limit": limit},
        )
        return [dict(zip(columns, row)) for row in rows]

    def dates(self, folders: Sequence[str] = (), after: float | None = None, before: float | None = None,
              ) -> np.ndarray:
        """The photo date (EXIF, else mtime) of every file the timeline lists under these filters."""
        where, params = _passing(folders, after, before)
        rows = self.reads.rows(f"SELECT {_TAKEN} FROM items WHERE kind = :kind AND frame = 0{where}",
                               {**params, "kind": IMAGE})
        return np.asarray([date for (date,) in rows], dtype=np.float64)

    def counts(self, folders: Sequence[str] = (), after: float | None = None, before: float | None = None,
               ) -> dict[str, int]:
        """Photos, videos and their embedded frames (of those passing the filters), captions, failed files: a
        video's frames are rows of kind image, counted apart so that a 10-minute video is not 300 photos."""
        where, params = _passing(folders, after, before)
        photos, frames, videos = self.reads.rows(
            "SELECT count(*) FILTER (WHERE frame_time IS NULL), count(*) FILTER (WHERE frame_time IS NOT NULL), "
            f"count(DISTINCT key) FILTER (WHERE frame_time IS NOT NULL) FROM items WHERE kind = :kind{where}",
            {**params, "kind": IMAGE},
        )[0]
        captions = self.reads.value("SELECT count(*) FROM items WHERE kind = :kind", {"kind": CAPTION})
        failed = self.reads.value("SELECT count(*) FROM failures") or 0
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
