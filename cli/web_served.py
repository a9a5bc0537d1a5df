"""What every route of `clipdex serve` shares: the library, the query lock, the decode threads, and the reading of
ids, dates and cursors a request carries."""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, TypeVar

from fastapi import HTTPException, Query, Request
from fastapi import Path as PathParam

from clipdex.retrieval import config
from clipdex.retrieval.config import IMAGE
from clipdex.retrieval.library import Library
from clipdex.retrieval.search.hits import Filters, iso_seconds

# Item ids are SQLite/PostgreSQL 64-bit integers: a larger one cannot name an item (and must not reach the driver).
ItemId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="An item id from a search result")]
TopK = Query(config.DEFAULT_TOP_K, ge=1, le=1000)
After = Query(None, description="Only photos taken on or after this date (ISO 8601)")
Before = Query(None, description="Only photos taken before this date (ISO 8601)")
Folder = Query(None, description="Only files under this folder (an absolute path)")
T = TypeVar("T")


@dataclass
class Served:
    """One served library. Decoding is what costs memory (width × height × 4 bytes), so images are decoded, and
    dropped, on a few threads of their own: at most that many at once, and the freed memory stays with those
    threads' allocator arenas instead of being kept by each of the 40 request threads in turn (a semaphore alone
    let 20 uploads grow the process by 2 GB). A decode thread may take `lock` after it; request threads never
    wait for a decode while holding `lock`."""

    library: Library
    device: str
    precision: str
    max_upload_pixels: int
    lock: threading.Lock = field(default_factory=threading.Lock)  # one query at a time (indexes refresh in place)
    decoder: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(config.WEB_DECODE_SLOTS, thread_name_prefix="clipdex-decode"))

    @property
    def thumbnails(self) -> Path:
        return self.library.root / "thumbnails"

    def item(self, item_id: int, kind: str = IMAGE) -> dict:
        row = self.library.store.items([item_id]).get(item_id)
        if row is None or row["kind"] != kind:
            raise HTTPException(404, f"no {kind} with id {item_id}")
        return row

    def decode(self, work: Callable[[], T]) -> T:
        return self.decoder.submit(work).result()


def served(request: Request) -> Served:
    """The served library, for a route's `Depends`."""
    return request.app.state.served


def seconds(moment: str | None) -> float | None:
    """POSIX seconds of an ISO 8601 date (a date alone is local midnight); a bare number is refused, not guessed."""
    if moment is None:
        return None
    try:
        return iso_seconds(moment)
    except ValueError:
        raise HTTPException(400, "not a date: use ISO 8601, e.g. 2024-06-30 or 2024-06-30T18:00") from None


def under(folder: str | None, after: str | None = None, before: str | None = None,
          tags: tuple[str, ...] = ()) -> Filters:
    """The filters a request names. Its folder must be absolute: a relative one would be read from wherever the
    server happened to start."""
    if folder and not os.path.isabs(folder):
        raise HTTPException(400, "folder: an absolute path")
    return Filters(folder or None, seconds(after), seconds(before), tags=tags)


def cursor(text: str) -> tuple[float, int]:
    """The (date, id) a timeline page continues after, from the `next` the previous page gave."""
    date, _, item_id = text.rpartition(":")
    try:
        found = (float(date), int(item_id))
    except ValueError:
        raise HTTPException(400, "cursor: give the `next` of the previous page") from None
    if not math.isfinite(found[0]) or not 0 <= found[1] < 2**63:
        raise HTTPException(400, "cursor: give the `next` of the previous page")
    return found
