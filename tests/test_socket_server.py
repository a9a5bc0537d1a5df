"""The server's side of the library's socket (clipdex/answering.py) and the watch loop it lives in (clipdex/live.py),
each tested from outside, not through the client's own checks: a peer of another user is answered nothing, a raw
request for another library gets no result, a query with other model settings is answered by the CLI itself, a
stopping server never removes a newer server's socket, the model is never dropped while a query runs, and an
index batch interrupted by Ctrl-C ends the watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from clipdex.retrieval import config
from tests.helpers import SAMPLE, clipdex_command, eventually, start_running, stop_running

ANSWERED = "answered by the running clipdex process"
QUERY = ("search", "a red circle", "-k", "3", "--json")
NOBODY = 65534


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, Path]:
    """A library over six sample photos, indexed with the bundled sample model, and their folder."""
    root, folder = tmp_path / "library", tmp_path / "photos"
    folder.mkdir()
    for image in sorted(config.SAMPLE_DATA_DIR.glob("images/*"))[:6]:
        (folder / image.name).write_bytes(image.read_bytes())
    assert subprocess.run(clipdex_command(root, "index", folder, *SAMPLE), capture_output=True).returncode == 0
    return root, folder


def run(library: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(clipdex_command(library, "-v", *args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def request(root: Path, **changes) -> bytes:
    """A search request as the CLI writes it, with `changes` (another library's key, other settings)."""
    from clipdex.retrieval.search.hits import Filters

    found = os.stat(root)
    arguments = {"terms": [["a red circle", False, 1.0]], "k": 3, "filters": asdict(Filters()), "mode": "hybrid",
                 "sort": "score", "device": "auto", "precision": "fp32"}
    arguments.update({k: v for k, v in changes.items() if k in arguments})
    sent = {"protocol": 1, "library": changes.get("library", [found.st_dev, found.st_ino]), "op": "search",
            "arguments": arguments}
    return json.dumps(sent).encode() + b"\n"


RAW_CLIENT = """
import ctypes, json, os, socket, sys
path, line, uid = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
if uid != os.geteuid():
    os.seteuid(uid)  # SO_PEERCRED reports the effective user...
    ctypes.CDLL(None).setfsuid(0)  # ...while connect checks the socket's permissions as the file-system user (root)
with socket.socket(socket.AF_UNIX) as connection:
    connection.settimeout(20)
    connection.connect(path)
    received = b""
    try:
        connection.sendall(line)
        while chunk := connection.recv(65536):
            received += chunk
    except (BrokenPipeError, ConnectionResetError):  # closed with the request unread
        pass
print(json.dumps({"euid": os.geteuid(), "reply": received.decode()}))
"""


def raw(library: Path, line: bytes, uid: int | None = None) -> dict | None:
    """What the server sends back to `line` (beats stripped), from a new process running as `uid`; None for
    nothing at all."""
    uid = os.geteuid() if uid is None else uid
    done = subprocess.run([sys.executable, "-c", RAW_CLIENT, str(library / config.SOCKET_FILE), line.decode(),
                           str(uid)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["euid"] == uid
    reply = seen["reply"].strip()
    return json.loads(reply) if reply else None


@pytest.mark.slow
def test_the_server_answers_nothing_to_another_user_nor_for_another_library_nor_other_settings(library) -> None:
    root, folder = library
    watch = start_running(root, "watch", str(folder), "--settle", "0.3")
    try:
        assert "result" in raw(root, request(root)), "the control: a right request is answered"
        if os.geteuid() == 0:  # a peer of another user (here: root's process made nobody) gets no byte back
            assert raw(root, request(root), NOBODY) is None
        for wrong in [{"library": [0, 0]}, {"library": [os.stat(folder).st_dev, os.stat(folder).st_ino]},
                      {"device": "cpu"}, {"precision": "int8"}]:
            answer = raw(root, request(root, **wrong))
            assert answer is not None and "result" not in answer, wrong
        for settings in [("--device", "cpu"), ("--precision", "int8")]:  # the CLI then answers for itself
            asked = run(root, *QUERY, *settings)
            own = run(root, *QUERY, *settings, env={config.NO_SERVER_ENV: "1"})
            assert asked.returncode == 0 and ANSWERED not in asked.stderr, (settings, asked.stderr)
            assert asked.stdout == own.stdout
        assert ANSWERED in run(root, *QUERY).stderr  # (and with the server's own settings it answers)
    finally:
        stop_running(watch)


@pytest.mark.slow
def test_a_stopping_server_leaves_a_newer_servers_socket_alone(library) -> None:
    """The socket was replaced under a running watch (removed by hand here, as a newer server finding it stale
    would): stopping the old watch must not remove the new one's socket, which goes on answering."""
    root, folder = library
    path = root / config.SOCKET_FILE
    old = start_running(root, "watch", str(folder), "--settle", "0.3")
    try:
        path.unlink()
        new = start_running(root, "watch", str(folder), "--settle", "0.3")
    finally:
        output = stop_running(old)
    try:
        assert "Traceback" not in output
        assert path.exists(), "the old server removed the new one's socket"
        assert ANSWERED in run(root, *QUERY).stderr
    finally:
        stop_running(new)
    assert not path.exists()  # (its own socket, it removes)


@pytest.mark.slow
def test_the_model_is_never_dropped_while_a_query_runs(library, monkeypatch) -> None:
    """A query that takes longer than the keep-alive: the idle drop must wait for it (the server's lock) and then
    find the model just used; it drops the model once the server is really idle."""
    from clipdex import api
    from clipdex.answering import QueryServer
    from clipdex.asking import ask
    from clipdex.retrieval.library import Library
    from clipdex.retrieval.search.hits import Hits

    root, _ = library
    running, drops = [0], []
    search = api.search

    def slow_search(*args, **kwargs):  # a query as slow as one over a large library
        running[0] += 1
        try:
            time.sleep(0.8)
            return search(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(api, "search", slow_search)
    monkeypatch.delenv(config.NO_SERVER_ENV, raising=False)
    served = Library(root, create=False)
    forget = served.forget_model
    served.forget_model = lambda: (drops.append(running[0]), forget())
    server = QueryServer(served, keep_alive=0.2)  # the drop looks every 0.05 s
    assert server.start() is None
    try:
        arguments = json.loads(request(root))["arguments"]
        for _ in range(3):  # each begins just after the last ended, and runs past the keep-alive
            assert ask(root, "search", arguments, Hits.from_wire) is not None
        assert eventually(lambda: drops, 5), "an idle server never dropped its model"
    finally:
        server.close()
    assert drops == [0] * len(drops), f"the model was dropped while a query ran: {drops}"


def big_photos(folder: Path, count: int) -> None:
    """`count` different files of one 4000×4000 photo (a PNG takes a quarter of a second to decode)."""
    from PIL import Image

    first = folder / "big-0.png"
    Image.linear_gradient("L").resize((4000, 4000)).convert("RGB").save(first, compress_level=1)
    data = first.read_bytes()
    for n in range(1, count):
        (folder / f"big-{n}.png").write_bytes(data + bytes(n))  # (bytes after the image's end: another file)


@pytest.mark.slow
def test_ctrl_c_during_a_batch_ends_the_watch(library, tmp_path: Path) -> None:
    """Ctrl-C while watch indexes a batch: the batch stops (what was committed is kept) and so does watch, at once,
    instead of going on watching with the interruption swallowed."""
    root, folder = library
    watch = subprocess.Popen(clipdex_command(root, "watch", folder, "--settle", "0.3"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    for line in watch.stdout:
        lines.append(line)
        if "watching" in line:
            break
    reader = threading.Thread(target=lambda: lines.extend(watch.stdout), daemon=True)
    reader.start()
    arriving = tmp_path / "arriving"
    arriving.mkdir()
    big_photos(arriving, 40)
    os.rename(arriving, folder / "arrived")  # all at once: one batch of 40, about 5 s to decode on two cores

    def batch_running() -> bool:  # its decode workers are the watch's children
        children = Path(f"/proc/{watch.pid}/task/{watch.pid}/children")
        return bool(children.read_text().split()) if children.exists() else False

    assert eventually(batch_running, 30), "".join(lines)
    time.sleep(1)
    watch.send_signal(signal.SIGINT)
    try:
        watch.wait(timeout=20)
    except subprocess.TimeoutExpired:
        watch.kill()
        watch.wait()
        pytest.fail("Ctrl-C during a batch did not end watch:\n" + "".join(lines))
    reader.join(10)
    output = "".join(lines)
    assert watch.returncode == 130 and "stopped" in output and "Traceback" not in output, output
    status = json.loads(run(root, "status", "--json").stdout)
    assert status["counts"]["image"] < 6 + 40, "the batch ended before Ctrl-C: nothing was tested"
