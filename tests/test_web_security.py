"""`clipdex serve` against hostile input and hostile pages: the real tiny model, real SQLite, real HTTP.

Memory is measured as this process's peak resident size (/proc), since TestClient runs the app in-process.
"""

from __future__ import annotations

import gc
import json
import os
import re
import select
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, HealthCheck, settings, strategies as st
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from clipdex.cli.web import create_app
from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from tests.conftest import SAMPLE_ROWS
from tests.helpers import LOCAL, SAMPLE, TINY, clipdex_command, live_server, response_head

EVIL = "http://evil.example"


# ------------------------------------------------------------------------------------------------ helpers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, mode: tuple[int, int] = (8, 0)) -> bytes:
    """The start of a PNG declaring width × height (bit depth, colour type = `mode`), with no pixel data: enough
    for Pillow to open it (and read its size) but not to decode it."""
    header = struct.pack(">II", width, height) + bytes(mode) + b"\0\0\0"
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"")


@lru_cache(maxsize=None)
def png_declaring(width: int, height: int) -> bytes:
    """A valid all-black grayscale PNG of width × height, compressed row by row: a few hundred KB that decode
    to width × height bytes (and three times that as RGB). Never decoded here."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


class PeakRss:
    """This process's peak resident memory during the block, above what it was at its start: the kernel's
    high-water mark (VmHWM, reset on entry through clear_refs), and samples of VmRSS where that cannot be reset."""

    def __enter__(self) -> "PeakRss":
        if not os.path.exists("/proc/self/status"):
            pytest.skip("needs /proc to read resident memory")
        gc.collect()
        self.start = self.peak = _status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.high_water = True
        except OSError:
            self.high_water = False
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _status_kb("VmRSS"))

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._sampler.join()
        if self.high_water:
            self.peak = max(self.peak, _status_kb("VmHWM"))

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1024


def _burst(client: TestClient, uploads: list[bytes]) -> list:
    """All uploads at once, one thread each."""

    def post(data: bytes):
        return client.post("/api/search/image", files={"file": ("burst.png", data)}, params={"k": 1})

    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        return list(pool.map(post, uploads))


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Library:
    """One indexed library (6 photos, 3 captions) and one loaded model for the module's read-mostly tests."""
    from clipdex.cli.app import app

    root = tmp_path_factory.mktemp("web-security")
    photos = root / "photos"
    photos.mkdir()
    for row in SAMPLE_ROWS[:6]:
        shutil.copy2(config.SAMPLE_DATA_DIR / row["image"], photos / Path(row["image"]).name)
    corpus = root / "corpus.txt"
    corpus.write_text("a red circle\na blue square\nthree green stars\n")
    runner = CliRunner()
    for args in (["index", str(photos), "--model", "clipdex-tiny"], ["add-captions", str(corpus)]):
        result = runner.invoke(app, ["--library", str(root / "library"), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return Library(root / "library", create=False)


@pytest.fixture(scope="module")
def client(library: Library) -> TestClient:
    """A loopback client that sees server errors as responses (a 500 is what the tests look for)."""
    return TestClient(create_app(library, "cpu"), base_url=LOCAL, raise_server_exceptions=False)


@pytest.fixture
def own_library(cli, photos, library_dir: Path) -> tuple[Library, Path]:
    """A library of 3 photos this test may change on disk."""
    folder = photos(3)
    cli("index", folder, "--model", "clipdex-tiny")
    return Library(library_dir, create=False), folder


# ------------------------------------------------------------------------------------------------ 1. decoding


@pytest.mark.slow
def test_burst_of_uploads_declaring_huge_canvases_is_refused_from_the_header(library: Library) -> None:
    """20 concurrent ~150 KB PNGs declaring 12000×12000 (under the indexer's 178 MP cap, over the server's 40 MP):
    each is refused with a clear 413 before decoding, and the server's memory barely moves (decoding just one
    takes over 500 MB)."""
    upload = png_declaring(12_000, 12_000)
    assert len(upload) < 300_000
    with TestClient(create_app(library, "cpu"), base_url=LOCAL) as client:
        client.get("/api/search", params={"q": "warm up"})  # the model is loaded before measuring
        with PeakRss() as rss:
            responses = _burst(client, [upload] * 20)
    assert [r.status_code for r in responses] == [413] * 20
    assert responses[0].json() == {
        "detail": "the upload declares 12000×12000 pixels, over this server's limit of 40,000,000"
    }
    assert rss.growth_mb < 500, rss.growth_mb


@pytest.mark.slow
def test_concurrent_decodes_are_bounded(library: Library) -> None:
    """20 concurrent uploads of a 25 MP PNG, each allowed: ~125 MB each while decoded and encoded, so 20 at once
    take over 2 GB. The server decodes two at a time, on two threads of its own (decoding in each request's
    thread, two at a time, still grew it by 2 GB: the memory stayed with each thread's malloc arena)."""
    upload = png_declaring(5_000, 5_000)
    with TestClient(create_app(library, "cpu"), base_url=LOCAL) as client:
        client.get("/api/search", params={"q": "warm up"})
        with PeakRss() as rss:
            responses = _burst(client, [upload] * 20)
    assert [r.status_code for r in responses] == [200] * 20
    assert rss.growth_mb < 500, rss.growth_mb


def test_the_pixel_cap_is_configurable(library: Library) -> None:
    client = TestClient(create_app(library, "cpu", max_upload_pixels=100 * 100), base_url=LOCAL)
    assert client.post("/api/search/image", files={"file": ("s.png", png_declaring(100, 100))}).status_code == 200
    refused = client.post("/api/search/image", files={"file": ("s.png", png_declaring(101, 100))})
    assert refused.status_code == 413 and "101×100 pixels, over this server's limit of 10,000" in refused.text
    beyond_pillow = client.post("/api/search/image", files={"file": ("b.png", png_header(2**20, 2**20))})
    assert beyond_pillow.json() == {"detail": "the upload declares more pixels than this server's limit of 10,000"}
    assert beyond_pillow.status_code == 413


# ------------------------------------------------------------------------------------------------ 2. body size


def test_a_half_sent_body_is_refused_after_the_time_limit(library: Library) -> None:
    """A client that declares 1,000 bytes and sends 80 must not hold the connection (and a worker) for ever."""
    app = create_app(library, "cpu", body_seconds=1)
    with live_server(app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(20)  # far past the server's limit: a hang fails here
        sock.sendall(b"POST /api/captions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 1000\r\n\r\n"
                     b'--x\r\nContent-Disposition: form-data; name="file"; filename="c.txt"\r\n\r\na caption')
        answer = response_head(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in answer, answer[:300]


@pytest.mark.slow
def test_one_request_adds_at_most_the_caption_limit(own_library) -> None:
    library, _ = own_library
    client = TestClient(create_app(library, "cpu"), base_url=LOCAL, raise_server_exceptions=False)
    over = "".join(f"caption {i}\n" for i in range(config.WEB_MAX_CAPTIONS + 1)).encode()
    refused = client.post("/api/captions", files={"file": ("c.txt", over)})
    assert refused.status_code == 413 and "at most 5,000" in refused.json()["detail"]
    at_limit = "".join(f"caption {i}\n" for i in range(config.WEB_MAX_CAPTIONS)).encode()
    assert client.post("/api/captions", files={"file": ("c.txt", at_limit)}).json()["added"] == config.WEB_MAX_CAPTIONS


def test_a_trickled_body_is_refused_when_its_whole_time_is_up(library: Library) -> None:
    """Each read quick, the whole never done: 6 bytes every 0.6 s against a 1 s limit is refused in about 1 s
    (a deadline per read would wait for ever)."""
    app = create_app(library, "cpu", body_seconds=1)
    with live_server(app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/captions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 1000\r\n\r\n--x\r\n")
        started = time.time()
        sock.settimeout(0.6)
        answer = b""
        while time.time() - started < 20 and not answer:
            try:
                sock.sendall(b"aaaaaa")
                answer = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 408") and time.time() - started < 5, answer[:200]


def test_chunked_body_is_cut_off_once_over_the_limit(library: Library) -> None:
    """A chunked upload (no Content-Length) to a real server with a 1 MB limit: the server answers 413 after
    about 1 MB, while the client still has most of its 64 MB to send; it never reads (or spools) the rest."""
    limit, total, piece = 1024 * 1024, 64 * 1024 * 1024, 64 * 1024
    app = create_app(library, "cpu", max_body_bytes=limit)
    with live_server(app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(30)  # a guard against hanging, not a timing assertion
        sock.sendall(
            b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        sent, answer = 0, b""
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:  # until the server answers
                data = (part + bytes(piece))[:piece] if sent == 0 else bytes(piece)
                sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                sent += len(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: the rest of the body was refused
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # it closed with our unread data still arriving; what it answered was received first
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"request body larger than 1 MB" in answer
    assert sent < total // 4, sent


def test_malformed_content_length_is_a_clear_400(client: TestClient) -> None:
    response = client.post("/api/captions", content=b"x", headers={"content-length": "12abc"})
    assert response.status_code == 400 and response.json() == {"detail": "malformed Content-Length header"}


# ------------------------------------------------------------------------------------------------ 3. who may ask


def test_foreign_host_names_are_refused(client: TestClient) -> None:
    """DNS rebinding: a page on attacker.example resolving its name to 127.0.0.1 sends Host: attacker.example."""
    for host in ("attacker.example", "attacker.example:8765", "127.0.0.1.attacker.example", "evil"):
        for url in ("/", "/api/status", "/api/search?q=x", "/api/items/1/image"):
            response = client.get(url, headers={"host": host})
            assert response.status_code == 403, (host, url)
            assert response.json()["detail"] == f"this server does not answer to the host name {host.split(':')[0]!r}"
    for host in ("127.0.0.1", "127.0.0.1:1", "localhost:8765", "LOCALHOST", "[::1]:8765", "[::1]"):
        assert client.get("/api/status", headers={"host": host}).status_code == 200, host
    for host in ("127.0.0.1:http", "[::1", ":8765"):
        assert client.get("/api/status", headers={"host": host}).status_code == 400, host


def test_a_host_name_that_is_no_name_is_malformed_not_repeated(client: TestClient) -> None:
    """A refusal names the host it refused, so the name must be one: markup or 3,000 characters are not."""
    for host in ("<script>alert(1)</script>", "a" * 300, "exa mple.org", "[<b>]:80", "x'y.example"):
        response = client.get("/api/status", headers={"host": host})
        assert response.status_code == 400 and response.json() == {"detail": "malformed Host header"}, host


def test_folders_must_be_absolute_and_any_iso_date_is_read(client: TestClient) -> None:
    """A relative folder would be read from wherever the server started; 0001-01-01 is before this zone's
    calendar but still a date."""
    for url, query in (("/api/items", {}), ("/api/months", {}), ("/api/search", {"q": "a red circle"})):
        for folder in ("photos", "./photos", "~/photos"):
            answer = client.get(url, params={**query, "folder": folder})
            assert answer.status_code == 400 and answer.json() == {"detail": "folder: an absolute path"}, url
    everything = client.get("/api/items").json()
    assert client.get("/api/items", params={"after": "0001-01-01"}).json() == everything
    assert client.get("/api/items", params={"before": "0001-01-01"}).json()["items"] == []


def test_cross_site_writes_are_refused(library: Library, client: TestClient) -> None:
    """A page on evil.example POSTing to the local server: its browser sends Origin (or at least Referer)."""

    def add(caption: bytes, **headers: str):
        return client.post("/api/captions", files={"file": ("c.txt", caption)}, headers=headers)

    before = library.store.counts()["caption"]
    for headers in (
        {"origin": EVIL},
        {"origin": "null"},  # sandboxed frames, file:// pages
        {"origin": "http://127.0.0.1:9999"},  # another local server is another origin
        {"referer": f"{EVIL}/page.html"},
        {"origin": EVIL, "referer": f"{LOCAL}/"},  # Origin decides when both are sent
    ):
        refused = add(b"an evil caption\n", **headers)
        assert refused.status_code == 403, headers
        assert "cross-site request refused" in refused.json()["detail"]
    assert library.store.counts()["caption"] == before
    assert add(b"a caption from the page\n", origin=LOCAL).json() == {"added": 1, "already_present": 0, "skipped": []}
    assert add(b"a caption from the page\n", referer=f"{LOCAL}/").json()["already_present"] == 1
    assert add(b"a caption from a script\n").status_code == 200  # curl: neither header


def test_status_keeps_paths_to_itself_unless_asked(library: Library, client: TestClient) -> None:
    plain = client.get("/api/status")
    assert plain.status_code == 200 and plain.json()["counts"]["image"] == 6
    assert str(library.root) not in plain.text and "library.db" not in plain.text
    assert not {"library", "database", "model_folder"} & plain.json().keys()
    full = client.get("/api/status", params={"paths": "true"}).json()
    assert full["library"] == str(library.root)


TOKEN = "correct-horse-battery-staple"


def test_the_page_has_an_icon(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").text


def test_dates_in_query_strings_are_iso_8601_only(client: TestClient) -> None:
    for url in ("/api/items", "/api/search?q=a+circle"):
        joiner = "&" if "?" in url else "?"
        for bad in ("99999999999", "1700000000", "yesterday", "2024-13-01", "99999-01-01"):
            refused = client.get(f"{url}{joiner}after={bad}")
            assert refused.status_code == 400 and "ISO 8601" in refused.json()["detail"], (url, bad)
        assert client.get(f"{url}{joiner}after=2001-01-01&before=2100-01-01T00:00").status_code == 200


def test_the_printed_sign_in_link_of_a_non_ascii_token_signs_in(library: Library) -> None:
    from urllib.parse import urlsplit

    from clipdex.cli.web_security import sign_in_url

    token = "tökén-秘密-ünïcode-0123456789"
    client = TestClient(create_app(library, "cpu", token=token), base_url=LOCAL)
    link = urlsplit(sign_in_url(LOCAL, token))
    signed_in = client.get(f"{link.path}?{link.query}", follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    assert client.get("/api/status").status_code == 200


def test_a_token_guards_every_request_when_set(library: Library) -> None:
    app = create_app(library, "cpu", allowed_hosts=["photos.lan"], token=TOKEN)
    client = TestClient(app, base_url="http://photos.lan:8765")
    for url in ("/", "/api/status", "/api/search?q=x", "/api/items/1/thumbnail", "/openapi.json"):
        refused = client.get(url)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", url
        assert "sign in first" in refused.json()["detail"]
    assert client.get("/api/status", headers={"authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    assert client.get("/api/status", headers={"authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/api/status", headers={"authorization": "Bearer ünïcode".encode()}).status_code == 401
    assert client.get("/api/status", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/api/status", headers={"host": "attacker.example", "authorization": f"Bearer {TOKEN}"}).status_code == 403

    assert client.get("/login", params={"token": "wrong"}, follow_redirects=False).status_code == 401
    assert client.get("/login", follow_redirects=False).status_code == 401
    assert not client.cookies
    signed_in = client.get("/login", params={"token": TOKEN}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    page = client.get("/")  # the cookie from the sign-in link now opens everything
    assert page.status_code == 200 and 'id="q"' in page.text
    assert client.get("/api/search", params={"q": "a red circle"}).status_code == 200
    assert "Max-Age=" in cookie and cookie.startswith(f"{config.WEB_TOKEN_COOKIE}_8765=")  # one per port
    issued, mac = cookie.split(";")[0].split("=", 1)[1].split(".")
    other_port = TestClient(app, base_url="http://photos.lan:9999", cookies=client.cookies)
    assert other_port.get("/api/status").status_code == 401  # a sign-in on one port is not one on another
    from clipdex.cli.web_security import _session_value

    expired = _session_value(TOKEN, int(time.time()) - config.WEB_SESSION_SECONDS - 60)  # signed right, too old
    for value in ("0" * 64, f"{issued}.{'0' * 64}", f"{int(issued) - config.WEB_SESSION_SECONDS - 1}.{mac}", expired):
        forged = TestClient(app, base_url="http://photos.lan:8765", cookies={f"{config.WEB_TOKEN_COOKIE}_8765": value})
        assert forged.get("/api/status").status_code == 401, value  # forged, or expired (checked here)
    recent = _session_value(TOKEN, int(time.time()) - config.WEB_SESSION_SECONDS + 60)
    assert TestClient(app, base_url="http://photos.lan:8765", cookies={f"{config.WEB_TOKEN_COOKIE}_8765": recent}
                      ).get("/api/status").status_code == 200  # the same, a minute younger than the limit

    with pytest.raises(Exception, match="at least 16 characters"):
        create_app(library, "cpu", token="short")


def test_a_browser_without_the_token_gets_a_sign_in_page_and_api_clients_json(library: Library) -> None:
    client = TestClient(create_app(library, "cpu", token=TOKEN), base_url="http://127.0.0.1:8765")
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = client.get("/", headers=browser)
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert '<form method="get" action="/login">' in page.text and 'name="token"' in page.text
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert "not this server" not in page.text
    wrong = client.get("/login", params={"token": "not-the-token-at-all"}, headers=browser, follow_redirects=False)
    assert wrong.status_code == 401 and "not this server" in wrong.text and not client.cookies
    for url, headers in (("/api/status", browser), ("/", {}), ("/", {"accept": "application/json"})):
        refused = client.get(url, headers=headers)  # the API, and clients that do not ask for a page: JSON
        assert refused.status_code == 401 and "sign in first" in refused.json()["detail"], url
    assert client.get("/favicon.ico", headers=browser).status_code == 200  # the page's icon, before signing in
    signed_in = client.get("/login", params={"token": TOKEN}, headers=browser)  # the form's request
    assert signed_in.status_code == 200 and 'id="q"' in signed_in.text


@pytest.fixture
def serve(cli, photos, monkeypatch):
    """`clipdex serve ARGS` through the real CLI, up to the point where uvicorn would listen: returns the app it
    built, where it would listen, and what it printed."""
    import uvicorn

    cli("index", photos(3), "--model", "clipdex-tiny")
    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))

    def run(*args: str, env: dict[str, str] | None = None):
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        result = cli("serve", *args)
        assert result.exit_code == 0, result.output
        return started["app"], started["host"], result.stderr

    return run


def test_serving_beyond_loopback_needs_the_printed_token(serve) -> None:
    app, host, printed = serve("--host", "192.0.2.7", "--port", "9000")
    assert host == "192.0.2.7"
    link = re.search(r"http://192\.0\.2\.7:9000/login\?token=(\S+)", printed)
    assert link, printed
    token = link.group(1)
    assert len(token) >= 32
    client = TestClient(app, base_url="http://192.0.2.7:9000")
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/status", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert client.get(link.group(0), follow_redirects=False).status_code == 303
    assert client.get("/api/status").status_code == 200
    assert client.get("/api/status", headers={"host": "attacker.example"}).status_code == 403

    app, _, printed = serve("--host", "192.0.2.7", env={config.WEB_TOKEN_ENV: TOKEN})
    assert f"/login?token={TOKEN}" in printed
    assert TestClient(app, base_url="http://192.0.2.7:8765").get(
        "/api/status", headers={"authorization": f"Bearer {TOKEN}"}
    ).status_code == 200


@pytest.mark.slow
def test_serving_on_loopback_needs_the_printed_token_too(serve) -> None:
    """Every local user can reach 127.0.0.1, while the photos are the owner's alone: a token by default, as
    Jupyter does; `--no-token` is an explicit, warned choice, and only on loopback."""
    app, host, printed = serve("--max-upload-pixels", "10000")
    link = re.search(r"http://127\.0\.0\.1:8765/login\?token=(\S+)", printed)
    assert host == "127.0.0.1" and link, printed
    client = TestClient(app, base_url=LOCAL)
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/items/1/image").status_code == 401
    assert client.get(link.group(0), follow_redirects=False).status_code == 303
    assert client.get("/api/status").status_code == 200
    refused = client.post("/api/search/image", files={"file": ("s.png", png_declaring(200, 200))})
    assert refused.status_code == 413 and "limit of 10,000" in refused.text

    app, _, printed = serve("--no-token")
    assert "every local user" in printed and "token=" not in printed
    assert TestClient(app, base_url=LOCAL).get("/api/status").status_code == 200


def test_no_token_is_refused_beyond_loopback(cli, photos) -> None:
    cli("index", photos(2), "--model", "clipdex-tiny")
    result = cli("serve", "--host", "192.0.2.7", "--no-token")
    assert result.exit_code == 1 and "loopback only" in result.output


# ------------------------------------------------------------------------------------------------ 4. files


def _replace_with_link_to_text(path: Path) -> None:
    """A link to another file of the very same size and times: only the link itself gives it away."""
    secret = path.parent.parent / "secret.txt"
    was = path.stat()
    secret.write_bytes((b"not a photo: a private key, say\n" * (was.st_size // 32 + 1))[: was.st_size])
    os.utime(secret, ns=(was.st_atime_ns, was.st_mtime_ns))
    path.unlink()
    path.symlink_to(secret)


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _rewrite(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"appended")


def _rewrite_same_size(path: Path) -> None:
    """Written again in place with as many bytes (an editor saving over it): only the mtime tells."""
    was = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(was.st_atime_ns, was.st_mtime_ns + 60 * 10**9))


GONE = "the file is gone or changed since it was indexed; `clipdex index` brings the library up to date"


@pytest.mark.slow
def test_a_fifo_where_a_photo_was_is_not_waited_on(own_library) -> None:
    """Served by a real server in a child process: a regression that blocks on the FIFO fails this test at its
    deadline (a blocked worker thread in this process would outlive any per-test timeout)."""
    import subprocess
    import urllib.error
    import urllib.request

    library, _ = own_library
    _replace_with_fifo(Path(library.store.items([1])[1]["key"]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(clipdex_command(library.root, "serve", "--port", str(port), "--no-token"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5).close()
                break
            except OSError:
                assert time.time() < deadline, "the server never answered"
                time.sleep(0.2)
        for url in ("/api/items/1/image", "/api/items/1/thumbnail"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=10)
            assert refused.value.code == 404, url
    finally:
        server.kill()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("change", [_replace_with_link_to_text, _rewrite, _rewrite_same_size])
def test_a_file_changed_since_indexing_is_not_served(own_library, cli, change) -> None:
    library, folder = own_library
    client = TestClient(create_app(library, "cpu"), base_url=LOCAL)
    row = library.store.items([1])[1]
    path = Path(row["key"])
    change(path)
    for url in ("/api/items/1/image", "/api/items/1/thumbnail"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json() == {"detail": GONE} and b"private key" not in response.content
    assert client.get("/api/items/2/image").status_code == 200  # the others are untouched
    if change is not _replace_with_link_to_text:  # the next index sees the size/mtime change: served again
        cli("index", folder)
        client = TestClient(create_app(Library(library.root, create=False), "cpu"), base_url=LOCAL)
        served = client.get("/api/items/1/image")
        assert served.status_code == 200 and served.content == path.read_bytes()


def test_a_link_swapped_in_for_a_folder_is_not_followed(own_library, tmp_path: Path) -> None:
    """The photos' folder replaced by a link to another folder holding files of the same names, sizes and
    mtimes: every check on the file alone passes; only its real path shows it is not the indexed file."""
    library, folder = own_library
    client = TestClient(create_app(library, "cpu"), base_url=LOCAL)
    assert client.get("/api/items/1/image").status_code == 200
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder, elsewhere)  # copy2: same sizes and mtimes
    shutil.rmtree(folder)
    folder.symlink_to(elsewhere, target_is_directory=True)
    for url in ("/api/items/1/image", "/api/items/1/thumbnail"):
        assert client.get(url).status_code == 404, url


def test_files_are_served_with_their_type_and_no_sniffing(client: TestClient, library: Library) -> None:
    row = library.store.items([1])[1]
    response = client.get("/api/items/1/image")
    assert response.status_code == 200 and response.content == Path(row["key"]).read_bytes()
    assert response.headers["content-type"].startswith(("image/jpeg", "image/png"))
    assert response.headers["x-content-type-options"] == "nosniff"


# ------------------------------------------------------------------------------------------------ 5. queries


@pytest.mark.parametrize(
    "query, message",
    [
        ("a" * 5_000, "the query is 5,000 characters long: at most 1,000 are allowed"),
        (" + ".join(["cat"] * 17), "the query has 17 terms: at most 16 are allowed"),
        (" + ".join(["cat"] * 1_386)[:999], "terms: at most 16 are allowed"),
        ("9" * 400 + ":cat", "term weight 99999999999999999999… is too large: use at most 100"),
        ("101:cat + dog", "term weight 101 is too large: use at most 100"),
    ],
)
def test_query_limits_over_http(client: TestClient, query: str, message: str) -> None:
    response = client.get("/api/search", params={"q": query})
    assert response.status_code == 400 and message in response.json()["detail"]


def test_queries_within_the_limits_still_work(client: TestClient) -> None:
    assert client.get("/api/search", params={"q": " + ".join(["cat"] * 16), "k": 2}).status_code == 200
    assert client.get("/api/search", params={"q": "100:cat - 0.5:dog", "k": 2}).status_code == 200
    assert client.get("/api/search", params={"q": "a" * 1_000, "k": 2}).status_code == 200


@pytest.mark.parametrize("terms, message", [
    (["9" * 400 + ":cat"], "is too large: use at most 100"),
    (" + ".join(["cat"] * 17).split(" "), "at most 16 are allowed"),
    (["a" * 1_001], "at most 1,000 are allowed"),
])
def test_query_limits_in_the_cli(cli, terms: list[str], message: str) -> None:
    result = cli("search", *terms)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output


def test_item_ids_out_of_range_are_not_server_errors(client: TestClient) -> None:
    for item_id in (10**23, 2**63, -1, 0):
        for what in ("image", "thumbnail", "similar", "captions"):
            response = client.get(f"/api/items/{item_id}/{what}")
            assert response.status_code == 422, (item_id, what)
    assert client.get(f"/api/items/{2**63 - 1}/image").status_code == 404


def _no_server_error(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert b"Traceback" not in response.content
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@FUZZ
@given(q=st.one_of(TEXT, st.from_regex(r"\A(\d{1,40}(\.\d{0,3})?:)?\w{0,10}( [+-] (\d{1,5}:)?\w{0,10}){0,20}\Z")),
       k=st.one_of(st.integers(-10, 2000), st.integers(), TEXT))
def test_fuzz_search(client: TestClient, q: str, k) -> None:
    _no_server_error(client.get("/api/search", params={"q": q, "k": k}))


@FUZZ
@given(item_id=st.one_of(st.integers(), TEXT.filter(lambda s: "/" not in s and s not in (".", ".."))),
       what=st.sampled_from(["image", "thumbnail", "similar", "captions"]),
       k=st.one_of(st.integers(), TEXT))
def test_fuzz_item_ids(client: TestClient, item_id, what: str, k) -> None:
    from urllib.parse import quote

    response = client.get(f"/api/items/{quote(str(item_id), safe='')}/{what}", params={"k": k})
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code != 200:
        _no_server_error(response)


@st.composite
def image_like(draw) -> bytes:
    """Random bytes, or a PNG whose header declares any size, followed by garbage or nothing."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    width, height = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
    mode = draw(st.sampled_from([(8, 0), (8, 2), (1, 0), (16, 6), (8, 3)]))
    return png_header(width, height, mode) + draw(st.binary(max_size=512))


@pytest.mark.slow
@FUZZ
@given(data=image_like(), k=st.one_of(st.integers(-5, 50), TEXT))
def test_fuzz_uploads(client: TestClient, data: bytes, k) -> None:
    _no_server_error(client.post("/api/search/image", files={"file": ("x.png", data)}, params={"k": k}))


def test_timeline_cursors_and_folders_a_database_cannot_take_are_400(library: Library, client: TestClient) -> None:
    for params in ({"cursor": "1:99999999999999999999999"}, {"cursor": "1:-5"}, {"cursor": "nan:1"},
                   {"cursor": "inf:1"}, {"cursor": "-inf:1"}, {"folder": "\0"}):
        response = client.get("/api/items", params=params)
        assert response.status_code == 400, (params, response.text)
    assert client.get("/api/search", params={"q": "red", "folder": "\0"}).status_code == 400


@pytest.mark.slow
def test_the_status_a_browser_gets_names_no_absolute_path(cli, tmp_path: Path, photos) -> None:
    from tests.helpers import QUICK, sample_pairs, write_pairs

    pairs = write_pairs(tmp_path / "pairs.csv", sample_pairs(32))
    checkpoint = tmp_path / "private-folder" / "mine.safetensors"
    assert cli("finetune", pairs, *SAMPLE, *QUICK, "--epochs", "1", "-o", checkpoint).exit_code == 0
    assert cli("index", photos(3), "--model", checkpoint).exit_code == 0
    client = TestClient(create_app(Library(tmp_path / "library"), "cpu"), base_url=LOCAL)
    status = client.get("/api/status")
    assert status.status_code == 200 and str(tmp_path) not in status.text
    assert status.json()["model"] == "mine.safetensors"
    assert client.get("/api/status", params={"paths": "true"}).json()["model"] == str(checkpoint)


def test_serve_never_shows_a_file_a_crafted_checkpoint_calls_its_report(cli, photos, library_dir: Path,
                                                                        tmp_path: Path, tiny) -> None:
    from safetensors import safe_open

    from clipdex.retrieval.models.checkpoint import CheckpointInfo, save_checkpoint
    import open_clip

    honest = tmp_path / "honest.safetensors"
    save_checkpoint(honest, tiny.model, CheckpointInfo("clipdex-tiny", open_clip.get_model_config("clipdex-tiny")))
    secret = tmp_path / "secret.html"
    secret.write_text("<html>not a report: private</html>")
    with safe_open(str(honest), framework="pt") as f:
        metadata = dict(f.metadata())
    info = json.loads(metadata["clipdex"])
    info["training"]["report"] = str(secret)
    crafted = tmp_path / "crafted.safetensors"
    save_file(load_file(str(honest)), str(crafted), metadata={**metadata, "clipdex": json.dumps(info)})
    assert cli("index", photos(2), "--model", crafted, "--no-export").exit_code == 0
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    assert client.get("/api/reports").json() == []
    assert client.get("/reports/0").status_code == 404


def test_range_headers_outside_the_grammar_get_the_whole_file(cli, photos, library_dir: Path) -> None:
    folder = photos(1)
    assert cli("index", folder, *TINY).exit_code == 0
    data = next(folder.iterdir()).read_bytes()
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    for header in ("bytes=5-2", "bytes=1_0-2_0", "bytes=+1-+5", "bytes=--5", "bytes=0-1,4-5", "items=0-1"):
        response = client.get("/api/items/1/image", headers={"range": header})
        assert response.status_code == 200 and response.content == data, header
    assert client.get("/api/items/1/image", headers={"range": "bytes=-999999999"}).content == data
