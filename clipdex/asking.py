"""The CLI's side of a running server: a `watch` or `serve` that holds this library's model and index answers a query
in milliseconds. Whenever the answer cannot be trusted (no server, a stale socket file, someone else's socket,
another library's server, one that stops or stalls, a reply that does not read) `ask` gives None and the caller
answers in its own process, with the same code, so the answer is the same either way. Light on purpose: a query
sent here imports neither numpy nor the database layer nor the model runtime."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from clipdex.retrieval import config

PROTOCOL = 1
T = TypeVar("T")


def library_key(root: Path) -> list[int]:
    """Which folder a library is, whatever path names it (a link, a relative path): its device and inode."""
    found = os.stat(root)
    return [found.st_dev, found.st_ino]


@contextmanager
def socket_address(root: Path) -> Iterator[str]:
    """The socket's path, short enough for AF_UNIX (about 100 bytes): a deep library folder is reached through
    its descriptor (Linux's /proc/self/fd), which binds and connects as the real path does."""
    path = os.path.join(root, config.SOCKET_FILE)
    if len(os.fsencode(path)) < 100 or not os.path.isdir("/proc/self/fd"):
        yield path
        return
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{descriptor}/{config.SOCKET_FILE}"
    finally:
        os.close(descriptor)


def peer(connection: socket.socket) -> tuple[int, int] | None:
    """The process id and user at the other end, where the system says (Linux's SO_PEERCRED)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    pid, uid, _gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return pid, uid


def ours(path: str) -> bool:
    """Whether `path` is a socket (not a link to one) that only this user can reach."""
    found = os.lstat(path)
    return stat.S_ISSOCK(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & 0o077


def ask(root: Path, op: str, arguments: dict, read: Callable[[object], T]) -> T | None:
    """The running server's answer to `op`, read with `read`; None when this process should answer itself."""
    if os.environ.get(config.NO_SERVER_ENV, "") not in ("", "0"):
        return None
    try:
        if not ours(os.path.join(root, config.SOCKET_FILE)):
            return None
        key = library_key(root)
        request = {"protocol": PROTOCOL, "library": key, "op": op, "arguments": arguments}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(config.SOCKET_CONNECT_SECONDS)
            with socket_address(root) as address:
                connection.connect(address)
            other = peer(connection)
            if other is not None and other[1] != os.getuid():
                return None
            connection.settimeout(config.SOCKET_SILENCE_SECONDS)
            connection.sendall(json.dumps(request).encode() + b"\n")
            deadline = time.monotonic() + config.SOCKET_ANSWER_SECONDS
            with connection.makefile("rb") as replies:
                line = b""
                while not line.strip():  # empty lines: the server is still working
                    line = replies.readline()
                    if not line or time.monotonic() > deadline:
                        return None  # it closed without an answer, or beats and never answers
        answer = json.loads(line)
        if not isinstance(answer, dict) or answer.get("library") != key or "result" not in answer:
            return None
        result = read(answer["result"])
    except (OSError, ValueError, TypeError, KeyError):  # socket.timeout is an OSError
        return None
    logging.getLogger("clipdex").info("answered by the running clipdex process %s", other[0] if other else "")
    return result
