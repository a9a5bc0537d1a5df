"""`clipdex serve`: an HTTP JSON API and a small page over one library, with the model and index kept warm.

Files are served only by item id, for items in the library; nothing in a request is ever used as a path, and a
file is sent only while it is still the one that was indexed (see cli/web_files.py).
Uploads are never decoded past what their header declares allowed, nor more than a few at a time; request bodies
are bounded as they arrive, and only loopback (or token-holding) clients on this server's own page get answers
(cli/web_security.py).
"""

from __future__ import annotations

import contextlib
import io
import math
import mimetypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Iterable, Literal, Optional

import numpy as np
from fastapi import FastAPI, File, Header, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from PIL import Image
from pydantic import BaseModel, Field, StrictInt

from clipdex.cli.web_files import byte_range, chunks, open_indexed, upload_refusal
from clipdex.cli.web_security import BodyLimit, RequestGuard
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.library import Library
from clipdex.retrieval.search.hits import Filters, iso_date
from clipdex.retrieval.search.query import Searcher
from clipdex.retrieval.storage.selection import by_month
from clipdex.retrieval.storage.store import IMAGE
from clipdex.retrieval.search.terms import parse_terms, split_query
from clipdex.retrieval.media.video import frame_at

MAX_UPLOAD_BYTES = config.WEB_MAX_BODY_BYTES
PAGE, ICON = Path(__file__).with_name("static") / "index.html", Path(__file__).with_name("static") / "favicon.svg"
# Item ids are SQLite/PostgreSQL 64-bit integers: a larger one cannot name an item (and must not reach the driver).
ItemId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="An item id from a search result")]
TopK = Query(config.DEFAULT_TOP_K, ge=1, le=1000)


class Selected(BaseModel):
    """Photos a person selected on the page."""

    ids: list[Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]] = Field(min_length=1, max_length=config.WEB_MAX_SELECTED)


def _seconds(moment: str | None) -> float | None:
    """POSIX seconds of an ISO 8601 date (a date alone is local midnight); a bare number is refused, not guessed."""
    if moment is None:
        return None
    try:
        return datetime.fromisoformat(moment).timestamp()
    except (OverflowError, OSError, ValueError):
        raise HTTPException(400, "not a date: use ISO 8601, e.g. 2024-06-30 or 2024-06-30T18:00") from None


def _cursor(text: str) -> tuple[float, int]:
    """The (date, id) a timeline page continues after, from the `next` the previous page gave."""
    date, _, item_id = text.rpartition(":")
    try:
        found = (float(date), int(item_id))
    except ValueError:
        raise HTTPException(400, "cursor: give the `next` of the previous page") from None
    if not math.isfinite(found[0]) or not 0 <= found[1] < 2**63:
        raise HTTPException(400, "cursor: give the `next` of the previous page")
    return found


def create_app(
    library: Library,
    device: str = "auto",
    precision: str = "fp32",
    *,
    allowed_hosts: Iterable[str] = (),
    token: str | None = None,
    max_upload_pixels: int = config.WEB_MAX_UPLOAD_PIXELS,
    max_body_bytes: int = config.WEB_MAX_BODY_BYTES,
    body_seconds: float = config.WEB_BODY_SECONDS,
) -> FastAPI:
    """The app for one library.

    allowed_hosts: Host names to answer besides the loopback ones (e.g. the name given to `serve --host`).
    token: when set, every request must carry it (bearer header, or the cookie `/login?token=…` sets).
    max_upload_pixels: uploads declaring more pixels are refused from their header (413).
    max_body_bytes: larger request bodies are refused as they arrive (413).
    body_seconds: a body still incomplete this long after the app asked for it is refused (408)."""
    if token is not None and len(token) < config.WEB_MIN_TOKEN_CHARS:
        raise ClipdexError(f"the access token must be at least {config.WEB_MIN_TOKEN_CHARS} characters long")
    engine = Searcher(library, device, precision)
    # Decoding is what costs memory (width × height × 4 bytes), so images are decoded, and dropped, on a few threads
    # of their own: at most that many at once, and the freed memory stays with those threads' allocator arenas instead
    # of being kept by each of the 40 request threads in turn (a semaphore alone let 20 uploads grow the process by
    # 2 GB). A decode thread may take `lock` after it; request threads never wait for a decode while holding `lock`.
    decoder = ThreadPoolExecutor(config.WEB_DECODE_SLOTS, thread_name_prefix="clipdex-decode")
    thumbnails = library.root / "thumbnails"
    app = FastAPI(title="clipdex", description="Search a photo library by sentence or by image.")
    lock = app.state.query_lock = threading.Lock()  # one query at a time (the index cache is refreshed in place)
    app.add_middleware(BodyLimit, limit=max_body_bytes, seconds=body_seconds)
    app.add_middleware(RequestGuard, allowed_hosts={*config.WEB_LOOPBACK_HOSTS, *allowed_hosts}, token=token)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request, exc: RequestValidationError) -> JSONResponse:
        """What was wrong with a request, without echoing its values (NaN or 1e400 in a body are no JSON)."""
        return JSONResponse({"detail": [{key: error[key] for key in ("type", "loc", "msg") if key in error}
                                        for error in exc.errors()]}, status_code=422)

    @app.exception_handler(ClipdexError)
    def clipdex_error(_request, exc: ClipdexError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    def item(item_id: int, kind: str = IMAGE) -> dict:
        row = library.store.items([item_id]).get(item_id)
        if row is None or row["kind"] != kind:
            raise HTTPException(404, f"no {kind} with id {item_id}")
        return row

    def hits(vector, kind: str, k: int) -> list[dict]:
        with lock:
            return [hit.as_json() for hit in engine.nearest(vector, kind, k)]

    def upload_vector(stream: IO[bytes]) -> np.ndarray:
        """The query vector of an uploaded image, made on a decode thread: its full-size pixels never leave it."""

        def decode_and_embed() -> np.ndarray:
            try:
                image = read_image(stream, engine.encoder.image_size, max_pixels=max_upload_pixels).image
            except ClipdexError:
                raise upload_refusal(stream, max_upload_pixels) from None
            with lock:
                return engine.image_vector(image)

        return decoder.submit(decode_and_embed).result()

    def small_image(handle: IO[bytes], name: str, side: int, moment: float | None = None) -> Image.Image:
        """A thumbnail of an open library file (of a video: its frame at `moment`), made on a decode thread."""

        def decode_and_shrink() -> Image.Image:
            try:
                if moment is not None:
                    return frame_at(handle, moment, side)
                image = read_image(handle, side, name=name).image
            except ClipdexError:
                raise HTTPException(404, "the file is no longer a readable image") from None
            image.thumbnail((side, side))
            return image

        return decoder.submit(decode_and_shrink).result()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    app.get("/favicon.ico", include_in_schema=False)(lambda: FileResponse(ICON, media_type="image/svg+xml"))

    @app.get("/api/search", summary="Images for a text query (the CLI's + / - syntax)")
    def search(
        q: str = Query(...),
        k: int = TopK,
        mode: Literal["hybrid", "clip", "text"] = Query("hybrid", description="As `clipdex search --mode`"),
        sort: Literal["score", "date"] = Query("score", description="date: the same matches, newest first"),
        after: Optional[str] = Query(None, description="Only photos taken on or after this date (ISO 8601)"),
        before: Optional[str] = Query(None, description="Only photos taken before this date (ISO 8601)"),
        tag: list[str] = Query([], description="Only images with every one of these tags (index --tags)"),
        folder: Optional[str] = Query(None, description="Only files under this folder (an absolute path)"),
    ) -> list[dict]:
        terms = parse_terms(split_query(q), files=False)  # refuses over-long queries before any work
        filters = Filters(folder or None, _seconds(after), _seconds(before), tags=tuple(tag))
        with lock:
            return [hit.as_json() for hit in engine.search(terms, k, filters, mode, sort)]

    @app.post("/api/search/image", summary="Images like an uploaded image")
    def search_image(file: UploadFile = File(...), k: int = TopK) -> list[dict]:
        return hits(upload_vector(file.file), IMAGE, k)

    @app.get("/api/items/{item_id}/similar", summary="Images like a library image")
    def similar(item_id: ItemId, k: int = TopK) -> list[dict]:
        item(item_id)
        return hits(library.store.vector(item_id)[1], IMAGE, k)

    @app.get("/api/items/{item_id}/captions", summary="Captions that describe a library image (as `clipdex captions`)")
    def captions(
        item_id: ItemId,
        k: int = Query(5, ge=1, le=1000),
        source: Literal["auto", "corpus", "builtin", "all"] = Query("auto", alias="from",
                                                                     description="As `clipdex captions --from`"),
    ) -> list[dict]:
        item(item_id)
        with lock:
            return [hit.as_json() for hit in engine.captions(library.store.vector(item_id)[1], k, source)]

    @app.get("/api/tags", summary="The library's tags with how many files hold each (as `clipdex tags --json`)")
    def tags() -> list[dict]:
        with lock:
            return [{"tag": tag, "count": count} for tag, count in library.store.tag_counts()]

    @app.post("/api/captions", summary="Add captions (txt: one a line; csv/jsonl with a caption field)")
    def add_captions(file: UploadFile = File(...)) -> dict:
        from clipdex.retrieval.describe.captions import add_captions as add
        from clipdex.retrieval.describe.pairs import parse_captions

        suffix = Path(file.filename or "captions.txt").suffix.lower()
        try:
            given = parse_captions(file.file.read().decode("utf-8"), suffix)  # the body is bounded by BodyLimit
        except UnicodeDecodeError:
            raise HTTPException(400, "captions must be UTF-8 text") from None
        if len(given.captions) > config.WEB_MAX_CAPTIONS:
            raise HTTPException(413, f"{len(given.captions):,} captions in one request: at most "
                                     f"{config.WEB_MAX_CAPTIONS:,} (`clipdex add-captions` takes any number)")
        if given.skipped and not given.captions:
            raise HTTPException(400, f"no captions: {len(given.skipped)} entries skipped, first {given.skipped[0]}")
        added, present = add(library, engine.encoder, given.captions, exclusive=lock)  # queries wait per write only
        return {"added": added, "already_present": present, "skipped": given.skipped}

    @app.get("/api/items/{item_id}/image", summary="The original file (a byte range of it with a Range header)")
    def original(item_id: ItemId, range_header: Optional[str] = Header(None, alias="range")) -> StreamingResponse:
        row = item(item_id)
        handle, st = open_indexed(row)
        media_type = mimetypes.guess_type(row["key"])[0] or "application/octet-stream"
        headers = {"x-content-type-options": "nosniff", "accept-ranges": "bytes"}
        span = byte_range(range_header, st.st_size)  # a video player seeks with these
        if span is None:
            headers["content-length"] = str(st.st_size)
            return StreamingResponse(chunks(handle), media_type=media_type, headers=headers)
        start, end = span
        handle.seek(start)
        headers.update({"content-length": str(end - start + 1), "content-range": f"bytes {start}-{end}/{st.st_size}"})
        return StreamingResponse(chunks(handle, end - start + 1), 206, media_type=media_type, headers=headers)

    @app.get("/api/items/{item_id}/thumbnail", summary="A small JPEG, made on first request and cached")
    def thumbnail(
        item_id: ItemId,
        side: int = Query(config.WEB_THUMBNAIL_SIDES[0],
                          description=f"Its longest side: one of {', '.join(map(str, config.WEB_THUMBNAIL_SIDES))}"),
    ) -> Response:
        if side not in config.WEB_THUMBNAIL_SIDES:
            raise HTTPException(400, f"side: one of {', '.join(map(str, config.WEB_THUMBNAIL_SIDES))}")
        row = item(item_id)
        cached = thumbnails / f"{item_id}-{(row['sha256'] or 'x')[:16]}-{side}.jpg"
        handle, _ = open_indexed(row)  # a cached thumbnail too is only for a file still as indexed
        with handle:
            if cached.is_file():
                return FileResponse(cached, media_type="image/jpeg")
            made = io.BytesIO()
            small_image(handle, row["key"], side, row["frame_time"]).save(made, format="JPEG", quality=85)
        tmp = cached.with_suffix(f".{threading.get_ident()}.tmp")
        try:  # kept for the next request; a library folder this server cannot write only means making it again
            thumbnails.mkdir(mode=0o700, exist_ok=True)
            tmp.write_bytes(made.getvalue())
            tmp.replace(cached)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        return Response(made.getvalue(), media_type="image/jpeg")

    def reports() -> list[Path]:
        from clipdex.retrieval.models.checkpoint import report_chain

        return report_chain(library.require_identity().name)

    @app.get("/api/reports", summary="Fine-tuning reports of the library's model and the models it came from")
    def report_list() -> list[dict]:
        return [{"id": n, "name": path.name, "url": f"/reports/{n}"} for n, path in enumerate(reports())]

    @app.get("/reports/{number}", response_class=HTMLResponse, include_in_schema=False)
    def report(number: int = PathParam(..., ge=0, le=1000)) -> HTMLResponse:
        found = reports()
        if number >= len(found):
            raise HTTPException(404, f"no report {number}")
        # A report is self-contained (inline SVG and data: images): it may load nothing and run nothing.
        return HTMLResponse(found[number].read_text(encoding="utf-8", errors="replace"), headers={
            "content-security-policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
            "x-content-type-options": "nosniff",
        })

    def entry(row: dict) -> dict:
        """A file as the page lists it: a photo, or a video (with `time`, the moment of its frame)."""
        found = {"id": row["id"], "path": row["key"], "size": row["size"], "width": row["width"],
                 "height": row["height"], "taken": iso_date(row["date"])}
        return found | ({"time": row["frame_time"]} if row["frame_time"] is not None else {})

    @app.get("/api/items", summary="The library newest first, a page at a time (the page's timeline)")
    def timeline(
        cursor: Optional[str] = Query(None, description="`next` of the previous page; none: the newest files"),
        limit: int = Query(60, ge=1, le=500),
        after: Optional[str] = Query(None, description="Only photos taken on or after this date (ISO 8601)"),
        before: Optional[str] = Query(None, description="Only photos taken before this date (ISO 8601)"),
        folder: Optional[str] = Query(None, description="Only files under this folder (an absolute path)"),
    ) -> dict:
        folders = Filters(folder=folder).folders if folder else ()
        start = _cursor(cursor) if cursor else None
        with lock:
            rows = library.store.timeline(limit, start, folders, _seconds(after), _seconds(before))
            counts = library.store.counts(folders, _seconds(after), _seconds(before))
        last = rows[-1] if len(rows) == limit else None
        return {
            "items": [entry(row) for row in rows],
            "next": f"{last['date']!r}:{last['id']}" if last else None,
            "photos": counts[IMAGE], "videos": counts["video"],
        }

    @app.get("/api/months", summary="The months of the timeline, newest first, each with its count and the cursor "
                                    "that starts the timeline there")
    def months(
        after: Optional[str] = Query(None, description="Only photos taken on or after this date (ISO 8601)"),
        before: Optional[str] = Query(None, description="Only photos taken before this date (ISO 8601)"),
        folder: Optional[str] = Query(None, description="Only files under this folder (an absolute path)"),
    ) -> list[dict]:
        folders = Filters(folder=folder).folders if folder else ()
        with lock:
            dates = library.store.dates(folders, _seconds(after), _seconds(before))
        return [{"month": month, "count": count, "cursor": f"{start!r}:0"} for month, count, start in by_month(dates)]

    @app.get("/api/similar", summary="Images like several library images together (their mean), themselves left out")
    def similar_to_many(ids: list[int] = Query(..., alias="id", min_length=1, max_length=config.WEB_MAX_SELECTED),
                        k: int = TopK) -> list[dict]:
        if not all(1 <= i < 2**63 for i in ids):
            raise HTTPException(422, "id: item ids from search results")
        chosen = {i: item(i)["key"] for i in set(ids)}  # (a video's other moments are the video too: left out)
        mean = np.mean([library.store.vector(i)[1] for i in chosen], axis=0)
        if float(np.linalg.norm(mean)) < 1e-6:
            raise HTTPException(400, "these photos cancel each other out")
        found = hits((mean / np.linalg.norm(mean)).astype(np.float32), IMAGE, k + len(chosen))
        return [hit for hit in found if hit["path"] not in chosen.values()][:k]

    @app.post("/api/xmp", summary="Write the tags of chosen images into their XMP sidecars (as `clipdex export-xmp`)")
    def export_xmp(chosen: Selected) -> dict:
        from clipdex.api import export_xmp as export

        for i in chosen.ids:
            item(i)
        with lock:
            return export(library, items=chosen.ids).as_json()

    @app.get("/api/items/{item_id}", summary="One file: its date, size, folder, recognised text and tags")
    def details(item_id: ItemId) -> dict:
        row = item(item_id)
        taken = row["taken_at"] if row["taken_at"] is not None else row["mtime"]
        with lock:
            tags = library.store.tags_of([item_id])[item_id] if library.store.tags_enabled else None
        return entry({**row, "date": taken}) | {
            "folder": os.path.dirname(row["key"]), "name": os.path.basename(row["key"]),
            "ocr": row["ocr_text"] or None, "tags": tags,
        }

    @app.get("/api/duplicates", summary="Near-duplicate groups, largest first (as `clipdex duplicates --json`)")
    def duplicates(
        threshold: float = Query(config.DEFAULT_DUPLICATE_THRESHOLD, ge=0.5, le=1.0),
    ) -> list[list[dict]]:
        from clipdex.api import duplicates as groups

        with lock:
            return groups(library, threshold)

    @app.get("/api/status", summary="Counts, model and index, as `clipdex status --json`")
    def status(paths: bool = Query(False, description="Include where the library, database and export live")) -> dict:
        from clipdex.api import status as library_status

        with lock:
            return library_status(library, paths)

    return app
