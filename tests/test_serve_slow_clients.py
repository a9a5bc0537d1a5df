"""Clients that send a request head slowly, or never finish it, cannot stop `clipdex serve` answering others:
each head has a deadline, and the server raises its open-file limit (a real server, real sockets)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from clipdex.retrieval import config
from tests.helpers import clipdex_command, eventually, limited

ROOT = Path(__file__).resolve().parents[1]


def _serve(library: Path, files: int | None = None) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    server = subprocess.Popen(
        limited(clipdex_command(library, "serve", "--port", str(port), "--no-token"), open_files=files),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _answer(port, deadline=time.time() + 60)
    return server, port


def _answer(port: int, deadline: float) -> int:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as response:
                return response.status
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except (socket.timeout, BlockingIOError):
        return False


@pytest.mark.slow
def test_half_sent_heads_are_closed_and_others_are_answered(cli, photos, library_dir: Path) -> None:
    assert cli("index", photos(2), "--model", "sample").exit_code == 0
    server, port = _serve(library_dir)
    try:
        stalled = []
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            stalled.append(sock)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]  # connect, then say nothing
        trickle = socket.create_connection(("127.0.0.1", port))
        started = time.time()
        assert _answer(port, deadline=time.time() + 5) == 200  # a real client meanwhile
        closed_at = None
        for byte in b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
            try:
                trickle.sendall(bytes([byte]))  # a byte every 0.5 s: each read is quick, the head never ends
            except OSError:
                closed_at = time.time()
                break
            if _closed_by_server(trickle):
                closed_at = time.time()
                break
        assert closed_at is not None and closed_at - started < config.WEB_HEAD_SECONDS + 5
        assert all(_closed_by_server(sock) for sock in stalled)
        assert all(_closed_by_server(sock) for sock in silent)  # the deadline runs from the connection on
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_more_slow_clients_than_open_files_only_delay_others(cli, photos, library_dir: Path) -> None:
    """At a 256-file limit the server cannot raise, 300 stalled heads fill every descriptor: a real client is
    answered once their deadline passes, not never."""
    assert cli("index", photos(2), "--model", "sample").exit_code == 0
    server, port = _serve(library_dir, files=256)
    stalled = []
    try:
        for _ in range(300):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"GET / HTTP/1.1\r\n")
                stalled.append(sock)
            except OSError:
                break
        assert _answer(port, deadline=time.time() + config.WEB_HEAD_SECONDS + 20) == 200
    finally:
        for sock in stalled:
            sock.close()
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_past_its_budget_of_open_files_the_server_says_busy_and_keeps_files_for_its_own_work(
        cli, photos, library_dir: Path) -> None:
    """At a 256-file limit, clients holding keep-alive connections: past the budget (the limit less
    WEB_RESERVED_FILES) a request is answered 503 and its connection closed, so the descriptors never run out under
    a request that must open the database or a photo; once they leave, a thumbnail is served."""
    import http.client

    assert cli("index", photos(2), "--model", "sample").exit_code == 0
    server, port = _serve(library_dir, files=256)
    held: list[http.client.HTTPConnection] = []

    def status(url: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        held.append(connection)
        connection.request("GET", url)
        response = connection.getresponse()
        response.read()
        return response.status

    try:
        answers = []
        while len(os.listdir(f"/proc/{server.pid}/fd")) < 256 - 4 and len(held) < 400:
            answers.append(status("/api/status"))  # each connection kept open (keep-alive)
        assert 503 in answers and set(answers) == {200, 503}, sorted(set(answers))
        assert answers.index(503) <= 256 - config.WEB_RESERVED_FILES
        assert status("/api/items/1/thumbnail") == 503  # busy, said as such
        for connection in held:
            connection.close()
        held.clear()
        assert eventually(lambda: status("/api/items/1/thumbnail") == 200, 30)
    finally:
        for connection in held:
            connection.close()
        server.terminate()
        server.wait(timeout=30)
