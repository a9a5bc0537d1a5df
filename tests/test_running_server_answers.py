"""A running `watch` or `serve` answers the CLI's search, captions and duplicates on the library's socket: the same
answers as the CLI's own, and the CLI's own whenever that server cannot be trusted (stale, silent, someone else's,
another library's, stopped) — never a hang, never another library's hits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clipdex.retrieval import config
from tests.conftest import SAMPLE_ROWS
from tests.helpers import clipdex_command, start_running, stop_running

TINY = ("--model", "clipdex-tiny", "--no-export")
ANSWERED = "answered by the running clipdex process"
QUERIES = [
    ("search", "a red circle", "-k", "5", "--json"),
    ("search", "a large star", "-", "a blue square", "--mode", "clip", "--sort", "date", "--json"),
    ("search", "a photo", "-k", "3", "--in", "{folder}", "-f"),
    ("search", "{image}", "+", "a green triangle", "-k", "4", "--json"),
    ("captions", "{image}", "-k", "3", "--json"),
    ("duplicates", "--threshold", "0.6", "--json"),
]


def clipdex(library: Path, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a new process, with -v so that it says who answered."""
    return subprocess.run(
        clipdex_command(library, "-v", *args), capture_output=True, text=True,
        timeout=120, env={**os.environ, **(env or {})}, cwd=cwd,
    )


def in_process(library: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return clipdex(library, *args, env={config.NO_SERVER_ENV: "1"}, cwd=cwd)


@pytest.fixture
def library(tmp_path: Path, photos) -> tuple[Path, Path]:
    """A library whose path is too long for a unix socket's address (the server and client must cope), over six
    photos, with a caption corpus."""
    folder = photos(6)
    root = tmp_path / ("a-library-folder-with-a-long-name-" * 3)
    assert len(str(root / config.SOCKET_FILE)) > 108
    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(row["caption"] for row in SAMPLE_ROWS[:20]), encoding="utf-8")
    assert clipdex(root, "index", str(folder), *TINY).returncode == 0
    assert clipdex(root, "add-captions", str(corpus)).returncode == 0
    return root, folder


def query(folder: Path, args: tuple[str, ...]) -> tuple[str, ...]:
    """A query's arguments, its image and folder named relative to `folder` (the command runs there)."""
    return tuple(a.format(folder=".", image=sorted(folder.iterdir())[0].name) for a in args)


@pytest.mark.slow
def test_a_running_watch_answers_every_query_as_the_cli_would(library) -> None:
    root, folder = library
    watch = start_running(root, "watch", str(folder), "--settle", "0.3", "--keep-alive", "1")
    try:
        for args in QUERIES:
            args = query(folder, args)
            asked, own = clipdex(root, *args, cwd=folder), in_process(root, *args, cwd=folder)
            assert asked.returncode == own.returncode == 0, asked.stderr + own.stderr
            assert ANSWERED in asked.stderr and ANSWERED not in own.stderr, args
            assert asked.stdout == own.stdout, args
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[30]["image"], folder / "arrived.png")
        deadline = time.time() + 60  # what watch indexes is in its answers
        while "arrived.png" not in clipdex(root, "search", "a photo", "-f", "-k", "50").stdout:
            assert time.time() < deadline, "a new photo never reached the server's answers"
            time.sleep(0.3)
        time.sleep(2)  # past the keep-alive: the model was dropped, and is loaded again for the next query
        asked, own = clipdex(root, *QUERIES[0]), in_process(root, *QUERIES[0])
        assert ANSWERED in asked.stderr and asked.stdout == own.stdout
    finally:
        output = stop_running(watch)
    assert "Traceback" not in output, output
    assert not (root / config.SOCKET_FILE).exists(), "the socket outlived its server"


HEAVY = ("numpy", "sqlalchemy", "onnxruntime", "faiss", "tokenizers", "PIL", "torch")
CLIENT = """
import sys
from clipdex.cli.app import main
sys.argv = ["clipdex", "-v", "--library", sys.argv[1], "search", "a red circle", "-k", "3", "--json"]
try:
    main()
except SystemExit:
    pass
print("loaded:", [name for name in %r if name in sys.modules], file=sys.stderr)
""" % (HEAVY,)


@pytest.mark.slow
def test_a_query_the_server_answers_loads_no_numpy_database_layer_or_model_runtime(library) -> None:
    root, folder = library
    watch = start_running(root, "watch", str(folder), "--settle", "0.3")
    try:
        asked = subprocess.run([sys.executable, "-c", CLIENT, str(root)], capture_output=True, text=True, timeout=120)
    finally:
        stop_running(watch)
    assert ANSWERED in asked.stderr and "loaded: []" in asked.stderr, asked.stderr
    assert json.loads(asked.stdout)


@pytest.mark.slow
def test_serve_answers_too_and_a_second_server_leaves_the_socket_to_the_first(library) -> None:
    root, folder = library
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve = start_running(root, "serve", "--port", str(port), "--no-token")
    try:
        asked, own = clipdex(root, *QUERIES[0]), in_process(root, *QUERIES[0])
        assert ANSWERED in asked.stderr and asked.stdout == own.stdout
        watch = start_running(root, "watch", str(folder), "--settle", "0.3")
        assert "another clipdex process answers this library's queries" in stop_running(watch)
        assert ANSWERED in clipdex(root, *QUERIES[0]).stderr  # the serve's socket was left alone
    finally:
        stop_running(serve)


def _peer(root: Path, behave) -> tuple[threading.Thread, list]:
    """A listener at the library's socket that is not a clipdex server; `behave(connection)` is what it does."""
    seen = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    descriptor = os.open(root, os.O_RDONLY)
    listener.bind(f"/proc/self/fd/{descriptor}/{config.SOCKET_FILE}")
    os.close(descriptor)
    os.chmod(root / config.SOCKET_FILE, 0o600)
    listener.listen()

    def serve() -> None:
        with listener:
            listener.settimeout(30)
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            seen.append(True)
            with connection:
                behave(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, seen


def _wrong_library(connection: socket.socket) -> None:
    connection.makefile("rb").readline()
    hit = {"id": 1, "kind": "image", "score": 1.0, "path": "/elsewhere/not-yours.jpg"}
    connection.sendall(json.dumps({"library": [0, 0], "result": {"hits": [hit], "notes": []}}).encode() + b"\n")


@pytest.mark.slow
@pytest.mark.parametrize("behave", [
    pytest.param(lambda c: time.sleep(6), id="silent"),
    pytest.param(lambda c: None, id="hangs-up"),
    pytest.param(lambda c: (c.makefile("rb").readline(), c.sendall(b"{not json\n")), id="garbage"),
    pytest.param(lambda c: [c.sendall(b"\n") or time.sleep(0.2) for _ in range(5)], id="beats-then-hangs-up"),
    pytest.param(_wrong_library, id="another-library"),
])
def test_a_server_that_cannot_be_trusted_is_answered_for(library, behave) -> None:
    root, _ = library
    own = in_process(root, *QUERIES[0])
    thread, seen = _peer(root, behave)
    asked = clipdex(root, *QUERIES[0])
    assert seen, "the CLI never asked the listener"
    assert asked.returncode == 0 and ANSWERED not in asked.stderr and asked.stdout == own.stdout, asked.stderr
    thread.join(10)


@pytest.mark.slow
@pytest.mark.parametrize("spoil", ["stale", "group-readable", "link"])
def test_a_socket_file_that_is_not_a_live_private_server_is_not_asked(library, spoil, tmp_path: Path) -> None:
    root, _ = library
    own = in_process(root, *QUERIES[0])
    path = root / config.SOCKET_FILE
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if spoil == "link":  # a live listener elsewhere, reached through a link in the library folder
        listener.bind(str(tmp_path / "elsewhere.sock"))
        os.symlink(tmp_path / "elsewhere.sock", path)
    else:
        descriptor = os.open(root, os.O_RDONLY)
        listener.bind(f"/proc/self/fd/{descriptor}/{config.SOCKET_FILE}")
        os.close(descriptor)
        os.chmod(path, 0o660 if spoil == "group-readable" else 0o600)
    listener.listen()
    listener.setblocking(False)
    if spoil == "stale":
        listener.close()  # its file stays, as a killed server's does
    asked = clipdex(root, *QUERIES[0])
    assert asked.returncode == 0 and ANSWERED not in asked.stderr and asked.stdout == own.stdout
    if spoil != "stale":
        with pytest.raises(BlockingIOError):  # nobody knocked
            listener.accept()
        listener.close()


@pytest.mark.slow
def test_another_librarys_server_reached_through_a_linked_socket_answers_nothing(library, photos, tmp_path) -> None:
    root, folder = library
    other = tmp_path / "other-library"
    assert clipdex(other, "index", str(photos(2, "others")), *TINY).returncode == 0
    watch = start_running(root, "watch", str(folder), "--settle", "0.3")
    try:
        os.link(root / config.SOCKET_FILE, other / config.SOCKET_FILE)
        asked, own = clipdex(other, *QUERIES[0]), in_process(other, *QUERIES[0])
        assert ANSWERED not in asked.stderr and asked.stdout == own.stdout
        assert {Path(h["path"]).parent.name for h in json.loads(asked.stdout)["hits"]} == {"others"}
    finally:
        stop_running(watch)


@pytest.mark.slow
def test_a_killed_or_stopped_watch_leaves_the_cli_answering_and_the_next_watch_takes_over(library) -> None:
    root, folder = library
    own = in_process(root, *QUERIES[0])
    watch = start_running(root, "watch", str(folder), "--settle", "0.3")
    assert ANSWERED in clipdex(root, *QUERIES[0]).stderr
    watch.send_signal(signal.SIGSTOP)  # connects, then hears nothing
    try:
        asked = clipdex(root, *QUERIES[0])
        assert asked.returncode == 0 and ANSWERED not in asked.stderr and asked.stdout == own.stdout
    finally:
        watch.send_signal(signal.SIGKILL)
        watch.wait(timeout=30)
    assert (root / config.SOCKET_FILE).exists()  # left behind, stale
    asked = clipdex(root, *QUERIES[0])
    assert asked.returncode == 0 and ANSWERED not in asked.stderr and asked.stdout == own.stdout
    watch = start_running(root, "watch", str(folder), "--settle", "0.3")
    try:
        asked = clipdex(root, *QUERIES[0])
        assert ANSWERED in asked.stderr and asked.stdout == own.stdout
    finally:
        stop_running(watch)


@pytest.mark.slow
def test_errors_read_the_same_with_a_server_running(library, tmp_path: Path) -> None:
    root, folder = library
    watch = start_running(root, "watch", str(folder), "--settle", "0.3")
    try:
        for args in [("search", str(tmp_path / "missing.jpg"), "+", "a cat"), ("search", "a cat", "--mode", "nope"),
                     ("captions", str(tmp_path)), ("search", "   ")]:
            asked, own = clipdex(root, *args), in_process(root, *args)
            assert asked.returncode == own.returncode == 1, args
            assert asked.stderr.splitlines()[-1] == own.stderr.splitlines()[-1], args
    finally:
        stop_running(watch)
