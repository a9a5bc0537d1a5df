"""`clipdex serve`: an HTTP JSON API and a small page over one library, with the model and index kept warm.

Files are served only by item id, for items in the library; nothing in a request is ever used as a path.
Uploads are read into memory (bounded) and decoded there, never written to disk.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.images import open_image, read_image
from clipdex.retrieval.library import Library
from clipdex.retrieval.query import Searcher
from clipdex.retrieval.store import CAPTION, IMAGE
from clipdex.retrieval.terms import parse_terms, split_query

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
THUMBNAIL_SIDE = 320
PAGE = Path(__file__).with_name("static") / "index.html"


def _read_upload(upload: UploadFile) -> bytes:
    data = upload.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    return data


def create_app(library: Library, device: str = "auto", precision: str = "fp32") -> FastAPI:
    engine = Searcher(library, device, precision)
    lock = threading.Lock()  # one query at a time: the index cache is refreshed and saved in place
    thumbnails = library.root / "thumbnails"
    app = FastAPI(title="clipdex", description="Search a photo library by sentence or by image.")

    @app.exception_handler(ClipdexError)
    def clipdex_error(_request, exc: ClipdexError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def item(item_id: int, kind: str = IMAGE) -> dict:
        row = library.store.items([item_id]).get(item_id)
        if row is None or row["kind"] != kind:
            raise HTTPException(404, f"no {kind} with id {item_id}")
        return row

    def hits(vector, kind: str, k: int) -> list[dict]:
        with lock:
            return [hit.as_json() for hit in engine.nearest(vector, kind, k)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/search", summary="Images for a text query (the CLI's + / - syntax)")
    def search(q: str = Query(..., max_length=10_000), k: int = Query(config.DEFAULT_TOP_K, ge=1, le=1000)) -> list[dict]:
        with lock:
            vector = engine.terms_vector(parse_terms(split_query(q), files=False))
        return hits(vector, IMAGE, k)

    @app.post("/api/search/image", summary="Images like an uploaded image")
    def search_image(file: UploadFile = File(...), k: int = Query(config.DEFAULT_TOP_K, ge=1, le=1000)) -> list[dict]:
        try:
            image = open_image(io.BytesIO(_read_upload(file)), engine.encoder.image_size)
        except ClipdexError:
            raise HTTPException(400, "the upload is not a readable image") from None
        with lock:
            vector = engine.image_vector(image)
        return hits(vector, IMAGE, k)

    @app.get("/api/items/{item_id}/similar", summary="Images like a library image")
    def similar(item_id: int, k: int = Query(config.DEFAULT_TOP_K, ge=1, le=1000)) -> list[dict]:
        item(item_id)
        return hits(library.store.vector(item_id)[1], IMAGE, k)

    @app.get("/api/items/{item_id}/captions", summary="Corpus captions that describe a library image")
    def captions(item_id: int, k: int = Query(5, ge=1, le=1000)) -> list[dict]:
        item(item_id)
        return hits(library.store.vector(item_id)[1], CAPTION, k)

    @app.post("/api/captions", summary="Add captions (txt: one a line; csv/jsonl with a caption field)")
    def add_captions(file: UploadFile = File(...)) -> dict:
        from clipdex.retrieval.captions import add_captions as add
        from clipdex.retrieval.pairs import parse_captions

        suffix = Path(file.filename or "captions.txt").suffix.lower()
        try:
            texts = parse_captions(_read_upload(file).decode("utf-8"), suffix)
        except UnicodeDecodeError:
            raise HTTPException(400, "captions must be UTF-8 text") from None
        with lock, library.writer():
            added, present = add(library, engine.encoder, texts)
        return {"added": added, "already_present": present}

    @app.get("/api/items/{item_id}/image", summary="The original image file")
    def original(item_id: int) -> FileResponse:
        path = Path(item(item_id)["key"])
        if not path.is_file():
            raise HTTPException(410, "the file is no longer on disk; re-index to drop it")
        return FileResponse(path)

    @app.get("/api/items/{item_id}/thumbnail", summary="A small JPEG, made on first request and cached")
    def thumbnail(item_id: int) -> FileResponse:
        row = item(item_id)
        cached = thumbnails / f"{item_id}-{(row['sha256'] or 'x')[:16]}.jpg"
        if not cached.is_file():
            try:
                image = read_image(Path(row["key"]), THUMBNAIL_SIDE).image
            except ClipdexError:
                raise HTTPException(410, "the file is no longer readable") from None
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            thumbnails.mkdir(mode=0o700, exist_ok=True)
            tmp = cached.with_suffix(f".{threading.get_ident()}.tmp")
            image.save(tmp, format="JPEG", quality=85)
            tmp.replace(cached)
        return FileResponse(cached, media_type="image/jpeg")

    @app.get("/api/status", summary="Counts, model and index, as `clipdex status --json`")
    def status() -> dict:
        from clipdex.api import status as library_status

        with lock:
            return library_status(library)

    return app
