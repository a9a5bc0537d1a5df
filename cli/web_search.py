"""`clipdex serve`'s queries: text, an uploaded image, library images alike, captions, tags; adding captions. Each
route reads its request and calls `clipdex.api`, one query at a time."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import IO, Literal, Optional

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, Response, UploadFile

from clipdex import api
from clipdex.cli.web_files import upload_refusal
from clipdex.cli.web_served import After, Before, Folder, ItemId, Served, TopK, served, under
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.search.terms import parse_terms, split_query

router = APIRouter()


def _nearest(here: Served, vector: np.ndarray, k: int) -> list[dict]:
    with here.lock:
        return [hit.as_json() for hit in api.nearest(here.library, vector, k, None, here.device, here.precision)]


@router.get("/api/search", summary="Images for a text query (the CLI's + / - syntax)")
def search(
    response: Response,
    q: str = Query(...),
    k: int = TopK,
    mode: Literal[config.SEARCH_MODES] = Query("hybrid", description="As `clipdex search --mode`"),
    sort: Literal[config.SORT_ORDERS] = Query("score", description="date: the same matches, newest first"),
    after: Optional[str] = After,
    before: Optional[str] = Before,
    tag: list[str] = Query([], description="Only images with every one of these tags (index --tags)"),
    folder: Optional[str] = Folder,
    unread: list[Literal[config.READ_KINDS]] = Query(
        [], description="Phrases the sentence is not read for: place, date, camera (as the page's chips remove them)"),
    here: Served = Depends(served),
) -> list[dict]:
    """What the sentence was read as is in the x-understood header (JSON, ASCII: as `search --json` has it)."""
    terms = parse_terms(split_query(q), files=False)  # refuses over-long queries before any work
    filters = under(folder, after, before, tuple(tag))
    with here.lock:
        found = api.search(here.library, terms, k, filters, here.device, here.precision, mode, sort,
                           unread=tuple(unread))
    response.headers["x-understood"] = json.dumps(found.understood)
    return [hit.as_json() for hit in found]


UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
KEPT_UPLOADS = 1000


def _kept_upload(here: Served, upload_id: str) -> Path:
    """Where an upload's embedding is kept (its id is the digest of its bytes), so its query has a URL."""
    return here.library.root / "uploads" / f"{upload_id}.npy"


def _forget_old_uploads(folder: Path, keep: int = KEPT_UPLOADS) -> None:
    """Only the latest `keep` uploads' queries are kept (2 kB each): older links say to drop the image again."""
    kept = sorted(folder.glob("*.npy"), key=lambda path: path.stat().st_mtime)
    for path in kept[:-keep]:
        path.unlink(missing_ok=True)


@router.post("/api/search/image", summary="Images like an uploaded image (its id, to ask again: x-upload-id)")
def search_image(response: Response, file: UploadFile = File(...), k: int = TopK,
                 here: Served = Depends(served)) -> list[dict]:
    stream: IO[bytes] = file.file
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):  # (the body is bounded by BodyLimit)
        digest.update(chunk)
    stream.seek(0)
    upload_id = digest.hexdigest()[:32]

    def decode_and_embed() -> np.ndarray:  # on a decode thread: the upload's full-size pixels never leave it
        encoder = here.library.encoder(here.device, here.precision)
        try:
            image = read_image(stream, encoder.image_size, max_pixels=here.max_upload_pixels).image
        except ClipdexError:
            raise upload_refusal(stream, here.max_upload_pixels) from None
        with here.lock:
            return encoder.encode_images([image])[0]

    vector = here.decode(decode_and_embed)
    kept = _kept_upload(here, upload_id)
    try:  # kept for the page's URL of this query; a folder this server cannot write only means no URL
        kept.parent.mkdir(mode=0o700, exist_ok=True)
        np.save(kept.with_suffix(".tmp.npy"), vector.astype(np.float32))
        kept.with_suffix(".tmp.npy").replace(kept)
        response.headers["x-upload-id"] = upload_id
        _forget_old_uploads(kept.parent)
    except OSError:
        pass
    return _nearest(here, vector, k)


@router.get("/api/uploads/{upload_id}/similar", summary="Images like an image uploaded before, by its x-upload-id")
def similar_to_upload(upload_id: str, k: int = TopK, here: Served = Depends(served)) -> list[dict]:
    if not UPLOAD_ID.fullmatch(upload_id):
        raise HTTPException(404, "no such upload")
    try:
        vector = np.load(_kept_upload(here, upload_id), allow_pickle=False)
    except (OSError, ValueError):
        raise HTTPException(404, "that image is no longer kept here: drop or paste it again") from None
    try:
        return _nearest(here, vector.astype(np.float32).reshape(-1), k)
    except ValueError:  # kept under another model than the library's now
        raise HTTPException(404, "that image was kept for another model: drop or paste it again") from None


@router.get("/api/items/{item_id}/similar", summary="Images like a library image")
def similar(item_id: ItemId, k: int = TopK, here: Served = Depends(served)) -> list[dict]:
    here.item(item_id)
    return _nearest(here, here.library.store.vector(item_id)[1], k)


@router.get("/api/similar", summary="Images like several library images together (their mean), themselves left out")
def similar_to_many(ids: list[int] = Query(..., alias="id", min_length=1, max_length=config.WEB_MAX_SELECTED),
                    k: int = TopK, here: Served = Depends(served)) -> list[dict]:
    if not all(1 <= i < 2**63 for i in ids):
        raise HTTPException(422, "id: item ids from search results")
    chosen = {i: here.item(i)["key"] for i in set(ids)}  # (a video's other moments are the video too: left out)
    mean = np.mean([here.library.store.vector(i)[1] for i in chosen], axis=0)
    if float(np.linalg.norm(mean)) < 1e-6:
        raise HTTPException(400, "these photos cancel each other out")
    found = _nearest(here, (mean / np.linalg.norm(mean)).astype(np.float32), k + len(chosen))
    return [hit for hit in found if hit["path"] not in chosen.values()][:k]


@router.get("/api/items/{item_id}/captions", summary="Captions that describe a library image (as `clipdex captions`)")
def captions(
    item_id: ItemId,
    k: int = Query(5, ge=1, le=1000),
    source: Literal[config.CAPTION_SOURCES] = Query("auto", alias="from", description="As `clipdex captions --from`"),
    here: Served = Depends(served),
) -> list[dict]:
    here.item(item_id)
    with here.lock:
        found = api.captions(here.library, here.library.store.vector(item_id)[1], k, here.device, source)
    return [hit.as_json() for hit in found]


@router.get("/api/tags", summary="The library's tags with how many files hold each (as `clipdex tags --json`)")
def tags(here: Served = Depends(served)) -> list[dict]:
    with here.lock:
        return [{"tag": tag, "count": count} for tag, count in api.tags(here.library)]


@router.post("/api/captions", summary="Add captions (txt: one a line; csv/jsonl with a caption field)")
def add_captions(file: UploadFile = File(...), here: Served = Depends(served)) -> dict:
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
    report = api.add_captions(here.library, given.captions, here.device, exclusive=here.lock)  # queries wait per write
    return {"added": report.added, "already_present": report.already_present, "skipped": given.skipped}
