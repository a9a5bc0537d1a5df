"""`clipdex serve`'s view of the library: the timeline a page at a time, its months, one file's details,
near-duplicates, the status, fine-tuning reports, and XMP sidecars of chosen photos."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, StrictInt

from clipdex import api
from clipdex.cli.web_files import camera, can_open_folder
from clipdex.cli.web_served import After, Before, Folder, ItemId, Served, cursor, served, under
from clipdex.retrieval import config
from clipdex.retrieval.config import IMAGE
from clipdex.retrieval.search.hits import iso_date
from clipdex.retrieval.storage.selection import by_month

router = APIRouter()


class Selected(BaseModel):
    """Photos a person selected on the page."""

    ids: list[Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]] = Field(min_length=1, max_length=config.WEB_MAX_SELECTED)


def _entry(row: dict) -> dict:
    """A file as the page lists it: a photo, or a video (with `time`, the moment of its frame)."""
    found = {"id": row["id"], "path": row["key"], "size": row["size"], "width": row["width"],
             "height": row["height"], "taken": iso_date(row["date"])}
    return found | ({"time": row["frame_time"]} if row["frame_time"] is not None else {})


@router.get("/api/places", summary="Where the photos were taken, by country then city, with a photo of each")
def places(here: Served = Depends(served)) -> list[dict]:
    return [{"country": country, "region": region or None, "city": city, "count": count, "photo": newest}
            for country, region, city, count, newest in here.library.store.places()]


@router.get("/api/items", summary="The library newest first, a page at a time (the page's timeline)")
def timeline(
    cursor_text: Optional[str] = Query(None, alias="cursor",
                                       description="`next` of the previous page; none: the newest files"),
    limit: int = Query(60, ge=1, le=500),
    after: Optional[str] = After,
    before: Optional[str] = Before,
    folder: Optional[str] = Folder,
    here: Served = Depends(served),
) -> dict:
    chosen = under(folder, after, before)
    start = cursor(cursor_text) if cursor_text else None
    store = here.library.store
    with here.lock:
        rows = store.timeline(limit, start, chosen.folders, chosen.after, chosen.before)
        counts = store.counts(chosen.folders, chosen.after, chosen.before)
    last = rows[-1] if len(rows) == limit else None
    return {
        "items": [_entry(row) for row in rows],
        "next": f"{last['date']!r}:{last['id']}" if last else None,
        "photos": counts[IMAGE], "videos": counts["video"],
    }


@router.get("/api/months", summary="The months of the timeline, newest first, each with its count and the cursor "
                                   "that starts the timeline there")
def months(after: Optional[str] = After, before: Optional[str] = Before, folder: Optional[str] = Folder,
           here: Served = Depends(served)) -> list[dict]:
    chosen = under(folder, after, before)
    with here.lock:
        dates = here.library.store.dates(chosen.folders, chosen.after, chosen.before)
    return [{"month": month, "count": count, "cursor": f"{start!r}:0"} for month, count, start in by_month(dates)]


@router.get("/api/items/{item_id}", summary="One file: its date, size, folder, camera, lens and exposure (EXIF), "
                                         "recognised text and tags")
def details(item_id: ItemId, request: Request, here: Served = Depends(served)) -> dict:
    row = here.item(item_id)
    taken = row["taken_at"] if row["taken_at"] is not None else row["mtime"]
    store = here.library.store
    with here.lock:
        tags = store.tags_of([item_id])[item_id] if store.tags_enabled else None
    return _entry({**row, "date": taken}) | {
        "folder": os.path.dirname(row["key"]), "name": os.path.basename(row["key"]),
        "ocr": row["ocr_text"] or None, "tags": tags, "open_folder": can_open_folder(request),
    } | camera(row)


@router.post("/api/xmp", summary="Write the tags of chosen images into their XMP sidecars (as `clipdex export-xmp`)")
def export_xmp(chosen: Selected, here: Served = Depends(served)) -> dict:
    for item_id in chosen.ids:
        here.item(item_id)
    with here.lock:
        return api.export_xmp(here.library, items=chosen.ids).as_json()


@router.get("/api/duplicates", summary="Near-duplicate groups, largest first (as `clipdex duplicates --json`)")
def duplicates(response: Response, threshold: float = Query(config.DEFAULT_DUPLICATE_THRESHOLD, ge=0.5, le=1.0),
               here: Served = Depends(served)) -> list[list[dict]]:
    response.headers["x-threshold"] = f"{threshold:g}"  # (the page's control starts at the default)
    with here.lock:
        return api.duplicates(here.library, threshold)


@router.get("/api/status", summary="Counts, model and index, as `clipdex status --json`")
def status(paths: bool = Query(False, description="Include where the library, database and export live"),
           here: Served = Depends(served)) -> dict:
    with here.lock:
        return api.status(here.library, paths)


def _reports(here: Served) -> list[Path]:
    from clipdex.retrieval.models.checkpoint import report_chain

    return report_chain(here.library.require_identity().name)


@router.get("/api/reports", summary="Fine-tuning reports of the library's model and the models it came from")
def report_list(here: Served = Depends(served)) -> list[dict]:
    return [{"id": n, "name": path.name, "url": f"/reports/{n}"} for n, path in enumerate(_reports(here))]


@router.get("/reports/{number}", response_class=HTMLResponse, include_in_schema=False)
def report(number: int = PathParam(..., ge=0, le=1000), here: Served = Depends(served)) -> HTMLResponse:
    found = _reports(here)
    if number >= len(found):
        raise HTTPException(404, f"no report {number}")
    # A report is self-contained (inline SVG and data: images): it may load nothing and run nothing.
    return HTMLResponse(found[number].read_text(encoding="utf-8", errors="replace"), headers={
        "content-security-policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        "x-content-type-options": "nosniff",
    })
