"""The CLI's side of a running server: a `watch` or `serve` that holds this library's model and index answers a query
in milliseconds. Whenever the answer cannot be trusted (no server, a stale socket file, someone else's socket,
another library's server, one that stops or stalls, a reply that does not read) `ask` gives None and the caller
answers in its own process, with the same code, so the answer is the same either way. Light on purpose: a query
sent here imports neither numpy nor the database layer nor the model runtime.

A reply is input like any other: it must arrive whole within the answer's deadline (checked as its bytes come, not
only between lines), fit `SOCKET_MAX_REPLY_BYTES`, nest no deeper than `SOCKET_MAX_REPLY_DEPTH`, hold only finite
numbers, and match its query's schema field by field (scores of cosines, strings with no control characters: a
name that holds one is answered in-process, and printed as the CLI prints any other). Anything else: None."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import stat
import struct
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from clipdex.retrieval import config
from clipdex.retrieval.search.hits import UNDERSTOOD

PROTOCOL = 1
T = TypeVar("T")
log = logging.getLogger("clipdex")


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


class Untrusted(ValueError):
    """A reply this process does not use (it answers the query itself)."""


def answer_seconds() -> float:
    """How long the whole answer may take, heartbeats included: config, or the environment's override."""
    try:
        seconds = float(os.environ.get(config.SOCKET_ANSWER_ENV, ""))
    except ValueError:
        return config.SOCKET_ANSWER_SECONDS
    return seconds if math.isfinite(seconds) and seconds > 0 else config.SOCKET_ANSWER_SECONDS


def ask(root: Path, op: str, arguments: dict, read: Callable[[object], T]) -> T | None:
    """The running server's answer to `op`, read with `read`; None when this process should answer itself."""
    if os.environ.get(config.NO_SERVER_ENV, "") not in ("", "0") or op not in _RESULTS:
        return None
    try:
        if not ours(os.path.join(root, config.SOCKET_FILE)):
            return None
    except OSError:
        return None  # no server (or no library folder): nothing to say
    try:
        key = library_key(root)
        request = {"protocol": PROTOCOL, "library": key, "op": op, "arguments": arguments}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(config.SOCKET_CONNECT_SECONDS)
            with socket_address(root) as address:
                connection.connect(address)
            other = peer(connection)
            if other is not None and other[1] != os.getuid():
                raise Untrusted(f"its peer is user {other[1]}")
            connection.settimeout(config.SOCKET_SILENCE_SECONDS)
            connection.sendall(json.dumps(request).encode() + b"\n")
            line = read_reply(connection, time.monotonic() + answer_seconds())
        answer = parse_reply(line)
        if not isinstance(answer, dict) or answer.get("library") != key:
            raise Untrusted("it answers for another library")
        if "result" not in answer:
            raise Untrusted(f"it did not answer ({_said(answer.get('unanswered'))})")
        result = read(_RESULTS[op](answer["result"]))
    except (OSError, ValueError, TypeError, KeyError) as exc:  # socket.timeout is an OSError; Untrusted a ValueError
        log.info("not using the running clipdex process's answer (%s): answering here", _reason(exc))
        return None
    log.info("answered by the running clipdex process %s", other[0] if other else "")
    return result


def read_reply(connection: socket.socket, deadline: float) -> bytes:
    """The answer line: the server beats with empty lines while it works, each within SOCKET_SILENCE_SECONDS, but
    the whole answer must end by `deadline`, and once its line has begun, within SOCKET_REPLY_SECONDS (a server
    writes it at once). Checked at every chunk received; at most SOCKET_MAX_REPLY_BYTES are kept."""
    received = bytearray()
    begun: float | None = None
    while True:
        now = time.monotonic()
        end = deadline if begun is None else min(deadline, begun + config.SOCKET_REPLY_SECONDS)
        if now >= end:
            raise Untrusted("it beat without answering in time" if begun is None else "its answer came too slowly")
        connection.settimeout(min(config.SOCKET_SILENCE_SECONDS, end - now))
        chunk = connection.recv(1 << 20)
        if not chunk:
            raise Untrusted("it closed the connection without an answer")
        if begun is None:
            chunk = chunk.lstrip(b" \t\r\n")  # empty lines: the server is still working
            if not chunk:
                continue
            begun = now
        ends = chunk.find(b"\n")
        received += chunk if ends < 0 else chunk[:ends]
        if len(received) > config.SOCKET_MAX_REPLY_BYTES:
            raise Untrusted(f"its answer is over {config.SOCKET_MAX_REPLY_BYTES} bytes")
        if ends >= 0:
            return bytes(received)


_ESCAPES = re.compile(rb"\\.", re.DOTALL)  # (only strings hold backslashes)
_STRINGS = re.compile(rb'"[^"]*"')
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))


def parse_reply(line: bytes) -> object:
    """JSON no deeper than SOCKET_MAX_REPLY_DEPTH, told before parsing (escapes, then every byte but quotes and
    brackets, then strings taken out: that many passes removing innermost brackets must leave none), whose numbers
    are all finite (no NaN, Infinity, 1e999)."""
    kept = _ESCAPES.sub(b"", line) if b"\\" in line else line
    brackets = _STRINGS.sub(b"", kept.translate(None, delete=_NOT_STRUCTURE))
    for _ in range(config.SOCKET_MAX_REPLY_DEPTH):
        if not brackets:
            break
        brackets = _INNERMOST.sub(b"", brackets)
    if brackets:
        raise Untrusted(f"its answer nests deeper than {config.SOCKET_MAX_REPLY_DEPTH} or does not read")
    return json.loads(line, parse_constant=_not_finite, parse_float=_finite)


def _not_finite(text: str) -> float:
    raise Untrusted(f"its answer holds {text}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Untrusted(f"its answer holds {text[:20]}")
    return value


# What a user's data may not hold to be taken from a server: what cli/output.py never prints as it is (C0, DEL,
# C1, line and paragraph separators, bidi controls), and surrogates (a name that is not UTF-8 reads as some, and a
# lone one cannot be printed at all). The CLI's own answer prints such a name its own way.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SCORE_SLACK = 1e-3  # float32 cosines of unit vectors reach 1.0000001
_LARGEST_ID = 1 << 63


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise Untrusted(f"its answer has {what}")


def _text(value: object, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    _check(isinstance(value, str) and not _CONTROL.search(value), f"a {what} that is not a plain string")


def _number(value: object, what: str, optional: bool = False, low: float = -math.inf, high: float = math.inf) -> None:
    if value is None and optional:
        return
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
           and low <= value <= high, f"a {what} out of range")


def _integer(value: object, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    _check(isinstance(value, int) and not isinstance(value, bool) and abs(value) < _LARGEST_ID, f"a wrong {what}")


def _score(value: object, what: str = "score", optional: bool = False) -> None:
    _number(value, what, optional, -1 - _SCORE_SLACK, 1 + _SCORE_SLACK)


_HIT_FIELDS = {"id", "kind", "score", "path", "caption", "ocr", "time", "taken", "width", "height", "tags", "strong",
               "why", "rank_score", "source"}
_REASONS = ("picture", "file name", "folder name", "text in the photo")


def _hits(result: object, kind: str) -> object:
    """A search's (images) or captions' (captions) result as `Hits.to_wire` writes it, every field of every hit."""
    _check(isinstance(result, dict) and set(result) == {"hits", "notes", "understood"}, "no hits and notes")
    _check(isinstance(result["hits"], list) and isinstance(result["notes"], list), "hits or notes not a list")
    for note in result["notes"]:
        _text(note, "note")
    understood = result["understood"]
    _check(understood is None if kind != config.IMAGE else isinstance(understood, dict) and set(understood) ==
           set(UNDERSTOOD), "no reading of the sentence")
    for said in (understood or {}).values():
        _text(said, "what the sentence was read as", optional=True)
    for hit in result["hits"]:
        _check(isinstance(hit, dict) and set(hit) <= _HIT_FIELDS and {"id", "kind", "score"} <= set(hit),
               "a hit of unknown fields")
        _integer(hit["id"], "id")
        _score(hit["score"])
        _check(hit["kind"] == kind, f"a hit that is not of kind {kind}")
        _text(hit.get("path"), "path", optional=hit["kind"] != config.IMAGE)
        _text(hit.get("caption"), "caption", optional=hit["kind"] == config.IMAGE)
        _text(hit.get("ocr"), "recognised text", optional=True)
        _check(hit.get("source", "corpus") in ("corpus", "builtin", "vocabulary"), "a caption of unknown source")
        for field in ("time", "taken"):
            _number(hit.get(field), field, optional=True)
        for field in ("width", "height"):
            _integer(hit.get(field), field, optional=True)
        tags = hit.get("tags")
        _check(tags is None or isinstance(tags, list), "tags that are not a list")
        for tag in tags or ():
            _text(tag, "tag")
        _check(hit.get("strong") is None or isinstance(hit.get("strong"), bool), "a strength that is not true or false")
        why = hit.get("why")
        _check(why is None or (isinstance(why, list) and all(reason in _REASONS for reason in why)),
               "reasons that are not a list of known reasons")
        _number(hit.get("rank_score"), "rank score", optional=True, low=0.0, high=1.0 + _SCORE_SLACK)
    return result


_MEMBER_FIELDS = {"id", "size", "width", "height", "path", "taken", "keep", "similarity"}


def _groups(result: object) -> object:
    """A duplicates result as `duplicate_groups` makes it: groups of two or more members, the one to keep first."""
    _check(isinstance(result, list), "groups that are not a list")
    for group in result:
        _check(isinstance(group, list) and len(group) >= 2, "a group that is not a list of members")
        for n, member in enumerate(group):
            _check(isinstance(member, dict) and _MEMBER_FIELDS <= set(member)
                   and set(member) <= _MEMBER_FIELDS | {"time", "reason"}, "a member of unknown fields")
            _integer(member["id"], "id")
            _text(member["path"], "path")
            _text(member["taken"], "date", optional=True)
            for field in ("size", "width", "height"):
                _integer(member[field], field, optional=True)
            _number(member.get("time"), "time", optional=True)
            _check(member["keep"] is (n == 0), "a keeper that is not the first of its group")
            _score(member["similarity"], "similarity", optional=n > 0)
            if n == 0:
                _text(member.get("reason"), "reason")
            else:
                _check("reason" not in member, "a reason for a copy")
    return result


_RESULTS: dict[str, Callable[[object], object]] = {
    "search": lambda result: _hits(result, config.IMAGE), "captions": lambda result: _hits(result, config.CAPTION),
    "duplicates": _groups,
}


def _said(value: object) -> str:
    return value[:200] if isinstance(value, str) and not _CONTROL.search(value) else "no reason given"


def _reason(exc: Exception) -> str:
    if isinstance(exc, Untrusted):
        return str(exc)
    if isinstance(exc, OSError):
        return f"socket: {exc.strerror or exc or type(exc).__name__}"
    return f"an answer that does not read: {type(exc).__name__}"
