"""Files as the server sends them: only a library file still exactly as it was indexed (no link swapped in, same
size and mtime), streamed in pieces or as one byte range; and why an upload was refused, with its HTTP status."""

from __future__ import annotations

import os
import re
import stat
from typing import IO, Iterator

from fastapi import HTTPException
from PIL import Image

CHUNK_BYTES = 256 * 1024


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
