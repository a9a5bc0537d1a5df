"""One end-to-end run in a real headless Chromium: type a query, see thumbnails, click one, see its captions."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_ROWS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "e2e-browser-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(cli, library_dir: Path, photos, tmp_path: Path):
    import uvicorn

    from clipdex.cli.web import create_app
    from clipdex.cli.web_security import sign_in_url
    from clipdex.retrieval.library import Library

    cli("index", photos(24), "--model", "clipdex-tiny")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(row["caption"] for row in SAMPLE_ROWS[:24]) + "\n")
    cli("add-captions", corpus)
    port = _free_port()
    app = create_app(Library(library_dir), "cpu", token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield sign_in_url(f"http://127.0.0.1:{port}", TOKEN)  # what `clipdex serve` prints
    server.should_exit = True
    thread.join(timeout=10)


def test_search_click_and_captions_in_chromium(server: str) -> None:
    if CHROMIUM is None:
        if os.environ.get("CLIPDEX_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (CLIPDEX_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server)
        page.fill("#q", "a red circle")
        page.press("#q", "Enter")
        page.wait_for_selector("#grid .thumb img", timeout=15_000)
        assert page.locator("#grid .thumb").count() == 24
        page.wait_for_function(
            "() => [...document.querySelectorAll('#grid .thumb img')].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)",
            timeout=15_000,
        )
        page.screenshot(path=str(ARTIFACTS / "web-results.png"))
        page.locator("#grid .thumb").first.click()
        page.wait_for_selector("#captions li", timeout=15_000)
        assert page.locator("#captions li").count() == 5
        assert page.locator("#similar .thumb").count() >= 1
        page.wait_for_function("() => document.querySelector('#large').naturalWidth > 0", timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "web-detail.png"))
        browser.close()
    assert (ARTIFACTS / "web-detail.png").stat().st_size > 10_000
