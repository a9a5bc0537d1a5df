"""Files as `clipdex serve` sends them: an original (or one byte range of it) or a thumbnail, only for a library
file still exactly as it was indexed (no link swapped in, same size and mtime); and why an upload was refused,
with its HTTP status. Also what the page does to files: a photo's camera from its EXIF, its folder opened in the
file manager (for a browser on this machine), chosen files moved into a folder with an undo list (never a
delete)."""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Annotated, Iterator, Optional

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from PIL import Image
from pydantic import BaseModel, Field, StrictInt

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


def _exif_text(value) -> str | None:
    text = str(value).replace("\x00", "").strip() if value is not None else ""
    return "".join(c for c in text if c.isprintable())[:120] or None


def _place(gps) -> str | None:
    """Latitude and longitude in degrees from EXIF's GPS IFD ("48.85840, 2.29450"), when both are there."""
    try:
        lat, lon = (sum(float(part) / 60**n for n, part in enumerate(gps[key])) for key in (2, 4))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    lat, lon = -lat if gps.get(1) == "S" else lat, -lon if gps.get(3) == "W" else lon
    return f"{lat:.5f}, {lon:.5f}" if abs(lat) <= 90 and abs(lon) <= 180 else None


def camera(row: dict) -> dict:
    """The camera, lens, exposure and place a photo's EXIF names (its header only: cheap), each only when present."""
    try:
        handle, _ = open_indexed(row)
    except HTTPException:
        return {}
    try:
        with handle, Image.open(handle) as im:
            exif = im.getexif()
            detail = exif.get_ifd(0x8769)  # the Exif IFD: lens and exposure
            gps = exif.get_ifd(0x8825)
    except Exception:  # no EXIF, or none Pillow reads: nothing to say
        return {}
    make, model = _exif_text(exif.get(0x010F)), _exif_text(exif.get(0x0110))
    body = model if make and model and model.lower().startswith(make.lower()) else " ".join(filter(None, (make, model)))
    parts = []
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError):
        if (seconds := detail.get(0x829A)) is not None and float(seconds) > 0:
            parts.append(f"1/{round(1 / float(seconds))} s" if float(seconds) < 1 else f"{float(seconds):g} s")
        if (stop := detail.get(0x829D)) is not None and float(stop) > 0:
            parts.append(f"f/{float(stop):g}")
        if (iso := detail.get(0x8827)) is not None:
            parts.append(f"ISO {int(iso[0] if isinstance(iso, tuple) else iso)}")
        if (focal := detail.get(0x920A)) is not None and float(focal) > 0:
            parts.append(f"{float(focal):g} mm")
    found = {"camera": body or None, "lens": _exif_text(detail.get(0xA434)), "exposure": " · ".join(parts) or None,
             "place": _place(gps)}
    return {key: value for key, value in found.items() if value}


def _opener() -> list[str] | None:
    """The command that shows a folder in this machine's file manager, when there is one to show it on."""
    if sys.platform == "darwin":
        return ["open"]
    if sys.platform == "win32":
        return ["explorer"]
    found = shutil.which("xdg-open")
    return [found] if found and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) else None


def can_open_folder(request: Request) -> bool:
    """Whether "Open folder" can work: the browser is on this machine (loopback) and it has a file manager."""
    from clipdex.cli.web_security import is_loopback

    return bool(request.client and is_loopback(request.client.host) and _opener())


@router.post("/api/items/{item_id}/open-folder", summary="Show the file's folder in this machine's file manager")
def open_folder(item_id: ItemId, request: Request, here: Served = Depends(served)) -> dict:
    row = here.item(item_id)
    command = _opener()
    if not can_open_folder(request) or command is None:
        raise HTTPException(409, "this server cannot open folders for this browser: copy the folder path instead")
    folder = os.path.dirname(row["real_path"] or row["key"])
    subprocess.Popen([*command, folder], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    return {"opened": folder}


class Moving(BaseModel):
    """Files chosen on the page, and the folder to move them into."""

    ids: list[Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]] = Field(min_length=1, max_length=config.WEB_MAX_SELECTED)
    folder: str = Field(min_length=1, max_length=4096)


def _undo_list(folder: Path) -> IO[str]:
    """A new shell script in `folder` that moves back what this move brings there."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        try:
            script = open(folder / f"clipdex-undo-{stamp}{f'-{n}' if n else ''}.sh", "x", encoding="utf-8")
        except FileExistsError:
            continue
        script.write("#!/bin/sh\n# Moves the files clipdex moved into this folder back where they were: sh THIS_FILE\n")
        return script
    raise HTTPException(409, "too many undo lists in that folder this second: try again")


@router.post("/api/move", summary="Move chosen files into a folder (made if missing), an undo list written there")
def move(chosen: Moving, here: Served = Depends(served)) -> dict:
    """Each file moves only while it is still as indexed and nothing of its name is in the folder (nothing is
    ever replaced, nothing deleted); `clipdex index` of the folders then sees the moves."""
    if not os.path.isabs(chosen.folder) or "\x00" in chosen.folder:
        raise HTTPException(400, "folder: an absolute path")
    folder = Path(os.path.normpath(chosen.folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        script = _undo_list(folder)
    except OSError as exc:
        raise HTTPException(400, f"cannot write in {folder}: {exc.strerror or exc}") from None
    rows = here.library.store.items(list(dict.fromkeys(chosen.ids)))
    moved, failed, seen = [], [], set()
    with script:
        for item_id in dict.fromkeys(chosen.ids):
            row = rows.get(item_id)
            if row is None or row["key"] in seen:
                continue
            seen.add(row["key"])
            source = row["real_path"] or row["key"]
            target = folder / os.path.basename(source)
            try:
                open_indexed(row)[0].close()
            except HTTPException as refused:
                failed.append({"path": row["key"], "error": refused.detail})
                continue
            if os.path.lexists(target):
                failed.append({"path": row["key"], "error": f"{target.name} is already in {folder}: nothing replaced"})
                continue
            try:
                shutil.move(source, target)
            except OSError as exc:
                failed.append({"path": row["key"], "error": exc.strerror or str(exc)})
                continue
            script.write(f"mv -n -- {shlex.quote(str(target))} {shlex.quote(source)}\n")
            script.flush()
            moved.append({"from": source, "to": str(target)})
    if not moved:
        Path(script.name).unlink(missing_ok=True)
    return {"moved": moved, "failed": failed, "undo": script.name if moved else None}
