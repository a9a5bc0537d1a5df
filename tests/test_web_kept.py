"""What `clipdex serve` keeps between starts and through a sign-in: the library's own token (a 0600 file in the
library folder, rotated by --new-token, overridden by --token and CLIPDEX_TOKEN), so a browser signed in stays
signed in; and the link a browser came for, which the sign-in opens after it (only ever a path of this server)."""

from __future__ import annotations

import re
import stat
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from clipdex.retrieval import config

BROWSER = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def serve(cli, photos, monkeypatch):
    """`clipdex serve ARGS` through the real CLI up to where uvicorn would listen: the app and what it printed."""
    import uvicorn

    cli("index", photos(3), "--model", "clipdex-tiny")
    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))

    def run(*args: str):
        result = cli("serve", *args)
        assert result.exit_code == 0, result.output
        return started["app"], result.stderr

    return run


def _token(printed: str) -> str:
    found = re.search(r"/login\?token=(\S+)", printed)
    assert found, printed
    return found.group(1)


def _client(app, cookies=None) -> TestClient:
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    for name, value in (cookies or {}).items():
        client.cookies.set(name, value)
    return client


def test_the_token_is_kept_with_the_library_so_a_browser_stays_signed_in(serve, library_dir, monkeypatch) -> None:
    app, printed = serve()
    token = _token(printed)
    kept = library_dir / "web-token"
    assert kept.read_text().strip() == token and stat.S_IMODE(kept.stat().st_mode) == 0o600
    browser = TestClient(app, base_url="http://127.0.0.1:8765")
    assert browser.get(f"/login?token={token}", follow_redirects=False).status_code == 303
    assert browser.get("/api/status").status_code == 200

    again, printed = serve()  # a restart: the same token, and yesterday's cookie still signs in
    assert _token(printed) == token
    assert _client(again, browser.cookies).get("/api/status").status_code == 200

    rotated, printed = serve("--new-token")  # every browser signs in again
    assert _token(printed) != token and kept.read_text().strip() == _token(printed)
    assert _client(rotated, browser.cookies).get("/api/status").status_code == 401

    _, printed = serve("--token", "a-token-given-on-the-command-line-0123")  # given: used, the kept one untouched
    assert _token(printed) == "a-token-given-on-the-command-line-0123" and kept.read_text().strip() != _token(printed)
    monkeypatch.setenv(config.WEB_TOKEN_ENV, "a-token-from-the-environment-0123")
    _, printed = serve()
    assert _token(printed) == "a-token-from-the-environment-0123"


def test_the_sign_in_opens_the_link_it_interrupted(serve) -> None:
    app, printed = serve()
    token = _token(printed)
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    page = client.get("/?q=a+red+circle&photo=2", headers=BROWSER)  # a deep link, not signed in
    assert page.status_code == 401
    assert '<input type="hidden" name="next" value="/?q=a+red+circle&amp;photo=2">' in page.text
    wrong = client.get("/login", params={"token": "wrong-token-of-enough-length", "next": "/?q=x"}, headers=BROWSER)
    assert wrong.status_code == 401 and 'name="next" value="/?q=x"' in wrong.text  # a typo keeps it too
    signed = client.get("/login", params={"token": token, "next": "/?q=a+red+circle&photo=2"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/?q=a+red+circle&photo=2"
    for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/\t/evil.example", "/login?token=x"):
        away = client.get("/login", params={"token": token, "next": elsewhere}, follow_redirects=False)
        assert away.headers["location"] == "/", elsewhere  # never another site
        assert urlsplit(away.headers["location"]).netloc == ""
    hostile = client.get('/"><script>alert(1)</script>', headers={**BROWSER, "cookie": ""})
    assert "<script>alert" not in hostile.text  # the link is written into the form escaped


def test_a_link_in_place_of_the_kept_token_is_not_read(serve, library_dir, tmp_path) -> None:
    _, printed = serve()
    elsewhere = tmp_path / "someone-elses"
    elsewhere.write_text("a-token-someone-else-chose-0123456789\n")
    (library_dir / "web-token").unlink()
    (library_dir / "web-token").symlink_to(elsewhere)
    _, printed = serve()
    assert _token(printed) != "a-token-someone-else-chose-0123456789"
    assert not (library_dir / "web-token").is_symlink() and elsewhere.read_text().startswith("a-token-someone")
