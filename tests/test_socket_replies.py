"""A reply on the library's socket is input like any other. Whatever listens on `clipdex.sock` as this user (an
owner-only socket in the library folder) — dripping bytes, sending gigabytes, nesting deep, sending the wrong
types, NaN scores or paths that forge lines, or hanging up after reading the request — the CLI answers in its
own process, the same answer as with no server, within seconds, in bounded memory, with a note under -v."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clipdex.retrieval import config
from tests.helpers import SAMPLE, clipdex_command

pytestmark = pytest.mark.slow  # (each test runs the CLI in new processes)

ANSWERED = "answered by the running clipdex process"
NOT_USED = "not using the running clipdex process's answer"
QUERY = ("search", "a red circle", "-k", "3", "--json")
DUPLICATES = ("duplicates", "--threshold", "0.6", "--json")
CAPTIONS = ("captions", str(sorted(config.SAMPLE_DATA_DIR.glob("images/*"))[0]), "-k", "3", "--json")
OTHERS = (DUPLICATES, CAPTIONS)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A library over six sample photos, indexed with the bundled sample model."""
    root = tmp_path_factory.mktemp("replies") / "library"
    folder = root.parent / "photos"
    folder.mkdir()
    for image in sorted(config.SAMPLE_DATA_DIR.glob("images/*"))[:6]:
        (folder / image.name).write_bytes(image.read_bytes())
    assert subprocess.run(clipdex_command(root, "index", folder, *SAMPLE), capture_output=True).returncode == 0
    return root


@pytest.fixture(scope="module")
def own(library: Path) -> dict:
    """The CLI's in-process answers: the reference."""
    return {args: run(library, *args, env={config.NO_SERVER_ENV: "1"}) for args in (QUERY, QUERY[:-1] + ("-f",),
                                                                                    *OTHERS)}


def run(library: Path, *args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(clipdex_command(library, "-v", *args), capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    result.seconds = time.monotonic() - started
    return result


def listen(library: Path, behave) -> threading.Thread:
    """A listener of this user at the library's socket (0600), not a clipdex server: `behave(connection)` is what
    it does with the one connection it takes; the socket file goes once it is taken."""
    path = library / config.SOCKET_FILE
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen()
    listener.settimeout(30)

    def serve() -> None:
        with listener:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            finally:
                path.unlink()  # (the CLI that connected needs it no more)
            with connection:
                try:
                    behave(connection)
                except OSError:  # the CLI gave up and closed: as it should
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def reply_with(answer: dict | bytes):
    """A peer that reads the request and sends `answer`: a dict as the reply's result for this library, bytes as
    they are (KEY: this library's key)."""
    def behave(connection: socket.socket) -> None:
        request = json.loads(connection.makefile("rb").readline())
        line = answer.replace(b"KEY", json.dumps(request["library"]).encode()) if isinstance(answer, bytes) else (
            json.dumps({"library": request["library"], "result": answer}, allow_nan=True).encode())
        connection.sendall(line + b"\n")
        time.sleep(0.5)
    return behave


READ = {"text": "a red circle", "place": None, "after": None, "before": None, "camera": None}  # as understood


def image_hit(**fields) -> dict:
    return {"id": 1, "kind": "image", "score": 0.5, "path": "/photos/a.jpg", "caption": None, "ocr": None, "time": None,
            "taken": None, "width": 10, "height": 10, "tags": None, "strong": True, "source": "corpus", **fields}


def test_a_well_formed_reply_from_the_listener_is_used(library) -> None:
    """The control: the fake listener is asked, and a reply of the right form is what the CLI prints."""
    thread = listen(library, reply_with({"hits": [image_hit()], "notes": [], "understood": READ}))
    asked = run(library, *QUERY)
    thread.join(10)
    assert ANSWERED in asked.stderr and asked.returncode == 0, asked.stderr
    assert [hit["path"] for hit in json.loads(asked.stdout)["hits"]] == ["/photos/a.jpg"]


def drip(connection: socket.socket) -> None:
    """Reads the request, then sends the start of an answer one byte at a time, never a newline."""
    connection.makefile("rb").readline()
    for _ in range(600):
        connection.sendall(b"{")
        time.sleep(0.1)


def beats(connection: socket.socket) -> None:
    """Reads the request, then beats (an empty line) forever without answering."""
    connection.makefile("rb").readline()
    for _ in range(600):
        connection.sendall(b"\n")
        time.sleep(0.1)


def huge(connection: socket.socket) -> None:
    """Reads the request, then sends up to 2 GB of answer with no newline."""
    connection.makefile("rb").readline()
    chunk = b'{"library": [' + b"1" * (1 << 20)
    for _ in range(2048):
        connection.sendall(chunk)


def read_then_close(connection: socket.socket) -> None:
    """Reads the request and closes cleanly (end of stream, no reset)."""
    connection.makefile("rb").readline()


HOSTILE = {
    "nested": reply_with(b'{"library": KEY, "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "nested-in-result": reply_with({"hits": [image_hit(tags=[[[[[[[[[["x"]]]]]]]]]])], "notes": [], "understood": READ}),
    "score-a-string": reply_with({"hits": [image_hit(score="high")], "notes": [], "understood": READ}),
    "score-nan": reply_with({"hits": [image_hit(score=float("nan"))], "notes": [], "understood": READ}),
    "score-infinite": reply_with({"hits": [image_hit(score=float("inf"))], "notes": [], "understood": READ}),
    "score-past-one": reply_with({"hits": [image_hit(score=7.5)], "notes": [], "understood": READ}),
    "hits-not-a-list": reply_with({"hits": 5, "notes": [], "understood": READ}),
    "path-a-number": reply_with({"hits": [image_hit(path=12)], "notes": [], "understood": READ}),
    "id-a-bool": reply_with({"hits": [image_hit(id=True)], "notes": [], "understood": READ}),
    "tags-a-string": reply_with({"hits": [image_hit(tags="dog")], "notes": [], "understood": READ}),
    "unknown-field": reply_with({"hits": [image_hit(evil=1)], "notes": [], "understood": READ}),
    "note-a-dict": reply_with({"hits": [], "notes": [{}], "understood": READ}),
    "a-caption-for-a-search": reply_with({"hits": [image_hit(kind="caption", path=None, caption="x")], "notes": [], "understood": READ}),
    "path-with-newline": reply_with({"hits": [image_hit(path="/photos/a.jpg\n/etc/forged-line")], "notes": [], "understood": READ}),
    "path-with-surrogate": reply_with({"hits": [image_hit(path="/photos/\ud800.jpg")], "notes": [], "understood": READ}),
    "understood-with-escape": reply_with({"hits": [], "notes": [], "understood": {**READ, "place": "\x1b]0;x\x07"}}),
    "understood-missing": reply_with({"hits": [], "notes": [], "understood": {"text": "x"}}),
    "path-with-escape": reply_with({"hits": [image_hit(path="/photos/\x1b]0;owned\x07a.jpg")], "notes": [], "understood": READ}),
    "unanswered": reply_with(b'{"library": KEY, "unanswered": "no"}'),
    "drip": drip,
    "beats-forever": beats,
    "huge": huge,
    "read-then-close": read_then_close,
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_reply_that_is_not_a_well_formed_answer_is_answered_in_process(library, own, name) -> None:
    # The whole answer may take 2 s here (300 by default): a drip or endless beats end there. A peer that hangs up
    # must end the wait at once, whatever the deadline: it gets 60 s, and the run must end well before.
    seconds = "60" if name == "read-then-close" else "2"
    for args in [QUERY, QUERY[:-1] + ("-f",)] if name.startswith("path") else [QUERY]:
        thread = listen(library, HOSTILE[name])
        asked = run(library, *args, env={config.SOCKET_ANSWER_ENV: seconds})
        thread.join(10)
        reference = own[args]
        assert asked.returncode == 0 and "Traceback" not in asked.stderr, asked.stderr
        assert ANSWERED not in asked.stderr and NOT_USED in asked.stderr, asked.stderr
        assert asked.stdout == reference.stdout, asked.stdout
        assert asked.seconds < reference.seconds + 8, f"{asked.seconds:.1f} s"


def test_a_huge_reply_is_not_kept_in_memory(library, own) -> None:
    """The client keeps at most SOCKET_MAX_REPLY_BYTES of a reply, not the 2 GB the peer would send."""
    thread = listen(library, huge)
    process = subprocess.Popen(clipdex_command(library, *QUERY), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The client's own peak, read while it runs: VmHWM starts anew at exec (a fork's ru_maxrss would count the
    # test process it was forked from, gigabytes late in a whole run)
    peak_kb = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak_kb = max(peak_kb, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
        except (OSError, AttributeError):
            pass
        time.sleep(0.02)
    thread.join(10)
    assert process.returncode == 0 and process.stdout.read().decode() == own[QUERY].stdout
    assert peak_kb * 1024 < config.SOCKET_MAX_REPLY_BYTES + (600 << 20), peak_kb


def member(**fields) -> dict:
    return {"id": 2, "size": 10, "width": 4, "height": 4, "path": "/photos/b.jpg", "taken": None, "keep": False,
            "similarity": 0.9, **fields}


def caption_hit(**fields) -> dict:
    return {**image_hit(kind="caption", path=None, caption="a red circle", width=None, height=None, strong=None),
            **fields}


KEEPER = member(id=1, path="/photos/a.jpg", keep=True, reason="the most pixels", similarity=1.0)
OTHER_QUERIES = {
    "duplicates-well-formed": (DUPLICATES, [[KEEPER, member()]], True),
    "duplicates-similarity-nan": (DUPLICATES, [[KEEPER, member(similarity=float("nan"))]], False),
    "duplicates-path-with-newline": (DUPLICATES, [[KEEPER, member(path="/photos/b.jpg\n/forged")]], False),
    "duplicates-two-keepers": (DUPLICATES, [[KEEPER, member(keep=True)]], False),
    "duplicates-size-a-string": (DUPLICATES, [[KEEPER, member(size="big")]], False),
    "captions-well-formed": (CAPTIONS, {"hits": [caption_hit()], "notes": [], "understood": None}, True),
    "captions-with-newline": (CAPTIONS, {"hits": [caption_hit(caption="a\nforged line")], "notes": [], "understood": None}, False),
    "captions-unknown-source": (CAPTIONS, {"hits": [caption_hit(source="elsewhere")], "notes": [], "understood": None}, False),
    "captions-an-image": (CAPTIONS, {"hits": [image_hit()], "notes": [], "understood": None}, False),
}


@pytest.mark.parametrize("name", OTHER_QUERIES)
def test_duplicates_and_captions_replies_are_checked_as_searches_are(library, own, name) -> None:
    args, result, used = OTHER_QUERIES[name]
    thread = listen(library, reply_with(result))
    asked = run(library, *args)
    thread.join(10)
    assert asked.returncode == 0 and "Traceback" not in asked.stderr, asked.stderr
    if used:  # the control: a reply of the right form is what the CLI prints
        printed = json.loads(asked.stdout)
        assert ANSWERED in asked.stderr, asked.stderr
        assert printed == result if args == DUPLICATES else [hit["caption"] for hit in printed] == ["a red circle"]
    else:
        assert ANSWERED not in asked.stderr and NOT_USED in asked.stderr, asked.stderr
        assert asked.stdout == own[args].stdout


FOREIGN_LISTENER = """
import ctypes, json, os, socket, sys
path, answer = sys.argv[1], sys.argv[2]
os.seteuid(65534)  # listen() records this user, which the CLI sees at connect...
ctypes.CDLL(None).setfsuid(0)  # ...while the socket file is made as root's (what ours() checks)
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
os.chmod(path, 0o600)
listener.listen()
print("listening", flush=True)
listener.settimeout(30)
connection, _ = listener.accept()
request = json.loads(connection.makefile("rb").readline())
connection.sendall(json.dumps({"library": request["library"], "result": json.loads(answer)}).encode() + b"\\n")
connection.close()
os.unlink(path)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="making a process of another user takes root")
def test_a_listener_of_another_user_behind_this_users_socket_file_is_not_asked(library, own) -> None:
    """The socket file is this user's and private, but the process listening on it is another user's (its peer
    credentials say so): its well-formed answer is not used."""
    answer = json.dumps({"hits": [image_hit()], "notes": [], "understood": READ})
    listener = subprocess.Popen([sys.executable, "-c", FOREIGN_LISTENER, str(library / config.SOCKET_FILE), answer],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "listening"
        asked = run(library, *QUERY)
    finally:
        listener.wait(timeout=30)  # (it fails once the CLI hangs up unasked)
        (library / config.SOCKET_FILE).unlink(missing_ok=True)
    assert asked.returncode == 0 and ANSWERED not in asked.stderr and "its peer is user 65534" in asked.stderr
    assert asked.stdout == own[QUERY].stdout
