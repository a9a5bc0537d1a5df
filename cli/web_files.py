"""Files as `clipdex serve` sends them: an original (or one byte range of it) or a thumbnail, only for a library
file still exactly as it was indexed (no link swapped in, same size and mtime); and why an upload was refused,
with its HTTP status."""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import re
import stat
import threading
from typing import IO, Iterator, Optional

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import FileResponse, Response, StreamingResponse
from PIL import Image

from clipdex.cli.web_served import ItemId, Served, served
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.media.video import frame_at

CHUNK_BYTES = 256 * 1024
SIDES = ", ".join(map(str, config.WEB_THUMBNAIL_SIDES))
router = APIRouter()


def upload_refusal(stream: IO[bytes], max_pixels: int) -> HTTPException:
    """Why read_image refused an upload, as an HTTP error. read_image already refused it from the header when
    it declares too many pixels; this looks at the header again only to pick the status (413) and say why."""
    try:
        stream.seek(0)
        with Image.open(stream) as im:
            width, height = im.size
    except Image.DecompressionBombError:  # so large that Pillow itself refuses to open it
        return HTTPException(413, f"the upload declares more pixels than this server's limit of {max_pixels:,}")
    except Exception:  # any other failure means the same as read_image's: not an image Pillow can read
        width = height = 0
    if width * height > max_pixels:
        return HTTPException(
            413, f"the upload declares {width}×{height} pixels, over this server's limit of {max_pixels:,}"
        )
    return HTTPException(400, "the upload is not a readable image")


def _open_flags() -> int:
    """Read-only; never through a final symlink; never waiting on a FIFO put where a photo was."""
    return os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _opened_path(fd: int, st: os.stat_result, path: str) -> bool:
    """Whether the open descriptor is the file at `path` itself, reached through no link in any folder.

    On Linux the kernel names the opened file (/proc/self/fd), so nothing can change between check and read;
    elsewhere the resolved path must equal `path` and still lead to the very inode that is open."""
    if os.path.isdir("/proc/self/fd"):
        try:
            return os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            return False
    try:
        return os.path.realpath(path) == path and os.path.samestat(os.stat(path), st)
    except OSError:
        return False


def open_indexed(row: dict) -> tuple[IO[bytes], os.stat_result]:
    """The library file of `row`, open, only while it is still what was indexed: a regular file at exactly the
    stored real path (links were resolved when it was indexed: no link swapped in since, in the path or at its
    end) with the stored size and mtime. Otherwise 404: a photo replaced by a link to ~/.ssh/id_rsa must not be
    sent as image/png. The caller closes it.

    The checks are made on the open descriptor (fstat), so the file read is the file checked. A file that changed
    is not marked anywhere from here: a reader does not write to the store, and the next `clipdex index` compares
    size and mtime with the same rows, so it re-reads (or drops) exactly the files this refuses."""
    path = row["real_path"] or row["key"]  # the file as it really is when indexed, links resolved then
    gone = HTTPException(404, "the file is gone or changed since it was indexed; `clipdex index` brings the "
                         "library up to date")
    try:
        handle = os.fdopen(os.open(path, _open_flags()), "rb")  # a link at the end: ELOOP
    except OSError:
        raise gone from None
    st = os.fstat(handle.fileno())
    unchanged = stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime) == (row["size"], row["mtime"])
    if not (unchanged and _opened_path(handle.fileno(), st, path)):
        handle.close()
        raise gone
    return handle, st


def chunks(handle: IO[bytes], length: int | None = None) -> Iterator[bytes]:
    """The open file (or `length` bytes of it) in pieces, closed once sent (or, if the client leaves early, when
    the response is dropped)."""
    left = length
    with handle:
        while (left is None or left > 0) and (chunk := handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))):
            left = None if left is None else left - len(chunk)
            yield chunk


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range within the file; None for no header or one not understood
    (the whole file is sent); 416 for a range outside the file."""
    found = re.fullmatch(r"bytes=(\d{0,18})-(\d{0,18})", (header or "").strip())
    if found is None or found.groups() == ("", "") or (found[1] and found[2] and int(found[2]) < int(found[1])):
        return None  # absent, several ranges, or not a range at all: the whole file (RFC 9110)
    first, last = found.groups()
    start, end = (max(size - int(last), 0), size - 1) if not first else (int(first), int(last) if last else size - 1)
    if not first and int(last) == 0:
        start = size  # an empty suffix: nothing to send
    if start < 0 or start >= size:
        raise HTTPException(416, "the range is outside the file", headers={"content-range": f"bytes */{size}"})
    return start, min(end, size - 1)


@router.get("/api/items/{item_id}/image", summary="The original file (a byte range of it with a Range header)")
def original(item_id: ItemId, range_header: Optional[str] = Header(None, alias="range"),
             here: Served = Depends(served)) -> StreamingResponse:
    row = here.item(item_id)
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


@router.get("/api/items/{item_id}/thumbnail", summary="A small JPEG, made on first request and cached")
def thumbnail(item_id: ItemId, side: int = Query(config.WEB_THUMBNAIL_SIDES[0], description=f"Longest side: {SIDES}"),
              here: Served = Depends(served)) -> Response:
    if side not in config.WEB_THUMBNAIL_SIDES:
        raise HTTPException(400, f"side: one of {SIDES}")
    row = here.item(item_id)
    cached = here.thumbnails / f"{item_id}-{(row['sha256'] or 'x')[:16]}-{side}.jpg"
    handle, _ = open_indexed(row)  # a cached thumbnail too is only for a file still as indexed
    with handle:
        if cached.is_file():
            return FileResponse(cached, media_type="image/jpeg")

        def decode_and_shrink() -> Image.Image:  # on a decode thread (of a video: its frame at its moment)
            try:
                if row["frame_time"] is not None:
                    return frame_at(handle, row["frame_time"], side)
                image = read_image(handle, side, name=row["key"]).image
            except ClipdexError:
                raise HTTPException(404, "the file is no longer a readable image") from None
            image.thumbnail((side, side))
            return image

        made = io.BytesIO()
        here.decode(decode_and_shrink).save(made, format="JPEG", quality=85)
    tmp = cached.with_suffix(f".{threading.get_ident()}.tmp")
    try:  # kept for the next request; a library folder this server cannot write only means making it again
        here.thumbnails.mkdir(mode=0o700, exist_ok=True)
        tmp.write_bytes(made.getvalue())
        tmp.replace(cached)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return Response(made.getvalue(), media_type="image/jpeg")
