"""The HTTP API through an in-process client: same answers as the CLI, files only by id, clear 4xx errors."""

from __future__ import annotations

import io
import os
import socket
import json
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipdex.cli.web import create_app, MAX_UPLOAD_BYTES
from clipdex.retrieval.library import Library
from tests.helpers import LOCAL, live_server, response_head, search_hits


@pytest.fixture
def served(cli, library_dir: Path, photos, tmp_path: Path):
    folder = photos(12)
    cli("index", folder, "--model", "clipdex-tiny")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a red circle\na blue square\nthree green stars\n")
    cli("add-captions", corpus)
    return TestClient(create_app(Library(library_dir, create=False), "cpu"), base_url=LOCAL), folder


def test_search_matches_the_cli(served, cli) -> None:
    client, _ = served
    response = client.get("/api/search", params={"q": "a red circle + a blue square", "k": 5})
    assert response.status_code == 200
    assert response.json() == search_hits(cli("search", "a red circle", "+", "a blue square", "-k", "5", "--json"))


def test_search_says_what_it_read_and_leaves_unread_what_it_is_told(served) -> None:
    """The reading is in x-understood (the page's chips); unread=date searches the date words as words."""
    client, _ = served
    year = str(date.today().year)
    read = client.get("/api/search", params={"q": "a red circle this year", "k": 20})
    assert json.loads(read.headers["x-understood"]) == {"text": "a red circle", "place": None,
                                                        "after": f"{year}-01-01", "before": f"{int(year) + 1}-01-01",
                                                        "camera": None}
    whole = client.get("/api/search", params={"q": "a red circle this year", "k": 20, "unread": "date"})
    assert json.loads(whole.headers["x-understood"])["text"] == "a red circle this year"
    assert len(read.json()) == len(whole.json()) == 12  # (every photo was written this year)
    assert client.get("/api/search", params={"q": "x", "unread": "everything"}).status_code == 422


def test_image_upload_similar_captions_and_status(served) -> None:
    client, folder = served
    image = sorted(folder.iterdir())[2]
    found = client.post("/api/search/image", files={"file": (image.name, image.read_bytes())}, params={"k": 3})
    assert found.status_code == 200
    top = found.json()[0]
    assert top["path"] == str(image) and top["score"] == pytest.approx(1.0, abs=1e-4)

    similar = client.get(f"/api/items/{top['id']}/similar", params={"k": 3}).json()
    assert similar[0]["id"] == top["id"]
    captions = client.get(f"/api/items/{top['id']}/captions").json()
    assert {c["caption"] for c in captions} == {"a red circle", "a blue square", "three green stars"}
    assert client.get("/api/status").json()["counts"] == {"image": 12, "video": 0, "frame": 0, "caption": 3, "failed": 0}
    assert "/api/search" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text


def test_images_and_thumbnails_are_served_by_id(served, library_dir: Path) -> None:
    client, folder = served
    hit = client.get("/api/search", params={"q": "x", "k": 1}).json()[0]
    original = client.get(f"/api/items/{hit['id']}/image")
    assert original.status_code == 200 and original.content == Path(hit["path"]).read_bytes()
    thumb = client.get(f"/api/items/{hit['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert len(list((library_dir / "thumbnails").iterdir())) == 1
    assert client.get(f"/api/items/{hit['id']}/thumbnail").content == thumb.content  # from the cache


def test_path_traversal_gets_nothing(served) -> None:
    """Sent byte for byte through a socket: an HTTP client would normalise the `..` segments away itself."""
    client, _ = served
    caption_id = client.get("/api/items/1/captions").json()[0]["id"]
    with live_server(client.app) as port:
        for url in (
            "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/image",
            "/api/items/../../../etc/passwd",
            "/api/items/1/../../../../etc/passwd",
            "/api/items/%2Fetc%2Fpasswd/thumbnail",
            "/api/items/999999/image",
            f"/api/items/{caption_id}/image",  # a caption is not a file
            "/static/../../retrieval/config.py",
            "/static/..%2F..%2Fretrieval%2Fconfig.py",
            "/static/%2e%2e/%2e%2e/retrieval/config.py",
            "/..%2F..%2Fretrieval%2Fconfig.py",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
                answer = response_head(sock)
            status = int(answer.split(b" ", 2)[1])
            assert status in (400, 404, 422), (url, answer[:200])
            assert b"root:" not in answer and b"IVF_MIN_ITEMS" not in answer, url
    # a path-like query term is read as words, never opened
    assert client.get("/api/search", params={"q": "/etc/passwd.jpg + x"}).status_code == 200


def test_bad_requests_are_clear_4xx(served) -> None:
    client, _ = served
    assert client.get("/api/search", params={"q": "x", "k": 0}).status_code == 422
    assert client.get("/api/search").status_code == 422
    empty = client.get("/api/search", params={"q": "   "})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    not_image = client.post("/api/search/image", files={"file": ("x.jpg", b"not an image")})
    assert not_image.status_code == 400 and "not a readable image" in not_image.json()["detail"]


def test_upload_over_the_limit_is_refused_before_its_body_is_sent(served) -> None:
    """A real server, a raw socket: the request announces a body ten times the limit and sends none of it. The
    413 must come back anyway, so the server decided from the header alone, never reading or spooling a byte."""
    client, _ = served
    with live_server(client.app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(30)  # only so that a server waiting for the body fails the test instead of hanging it
        sock.sendall(
            b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            + f"Content-Length: {10 * MAX_UPLOAD_BYTES}\r\n\r\n".encode()
        )
        try:
            answer = response_head(sock)
        except TimeoutError:
            pytest.fail("no answer without the body: the server was waiting to read it")
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"request body larger than 20 MB" in answer


def test_captions_upload(served) -> None:
    client, _ = served
    response = client.post("/api/captions", files={"file": ("more.txt", b"a yellow star\na red circle\n")})
    assert response.json() == {"added": 1, "already_present": 1, "skipped": []}
    bad = client.post("/api/captions", files={"file": ("c.csv", b"text\nno caption column\n")})
    assert bad.status_code == 400


@pytest.mark.slow
def test_thumbnails_at_two_sizes_months_and_more_like_several(served, cli, library_dir: Path) -> None:
    client, folder = served
    big = folder / "big.jpg"
    Image.new("RGB", (1600, 1200), (200, 40, 40)).save(big)
    os.utime(big, (1_600_000_000, 1_600_000_000))  # September 2020: a month of its own
    cli("index", folder)
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    big_id = next(h["id"] for h in client.get("/api/items", params={"limit": 500}).json()["items"]
                  if h["path"] == str(big))
    sizes = {}
    for side in (320, 640):  # what a tile needs on a normal and on a 2× screen
        answer = client.get(f"/api/items/{big_id}/thumbnail", params={"side": side})
        with Image.open(io.BytesIO(answer.content)) as thumb:
            sizes[side] = thumb.size
    assert sizes == {320: (320, 240), 640: (640, 480)}
    assert client.get(f"/api/items/{big_id}/thumbnail", params={"side": 10000}).status_code == 400  # no size on demand

    months = client.get("/api/months").json()
    assert sum(m["count"] for m in months) == 13 and months[-1]["month"] == "2020-09" and months[-1]["count"] == 1
    page = client.get("/api/items", params={"cursor": months[-1]["cursor"]}).json()
    assert [item["path"] for item in page["items"]] == [str(big)]  # the timeline starts at that month
    assert client.get("/api/months", params={"before": "2021-01-01"}).json() == [months[-1]]

    ids = [h["id"] for h in client.get("/api/items").json()["items"][:3]]
    alike = client.get("/api/similar", params={"id": ids, "k": 5}).json()
    assert len(alike) == 5 and not {h["id"] for h in alike} & set(ids)  # like them, not them
    assert client.get("/api/similar", params={"id": [2**64]}).status_code == 422
    assert client.get("/api/similar", params={"id": [999_999]}).status_code == 404
    refused = client.post("/api/xmp", json={"ids": ids}, headers={"origin": LOCAL})
    assert refused.status_code == 400 and "index --tags" in refused.json()["detail"]  # nothing to write, said why
    assert client.post("/api/xmp", json={"ids": ids}, headers={"origin": "http://evil.example"}).status_code == 403


def test_sidecars_of_chosen_photos_exactly_and_no_values_echoed(cli, photos, library_dir: Path, shapes: Path) -> None:
    folder = photos(6)
    cli("index", folder, "--model", "sample", "--tags", "--vocabulary", shapes)
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    ids = {Path(h["path"]).name: h["id"] for h in client.get("/api/items").json()["items"]}
    names = sorted(ids)
    linked, gone, changed, kept = names[:4]
    (folder / linked).unlink()
    (folder / linked).symlink_to(folder)  # a photo replaced by a link to its own folder
    (folder / gone).unlink()
    (folder / changed).write_bytes((folder / names[5]).read_bytes())  # other pixels under the same name
    origin = {"origin": LOCAL}
    report = client.post("/api/xmp", json={"ids": [ids[n] for n in (linked, gone, changed, kept)]}, headers=origin)
    assert report.status_code == 200, report.text
    written = {Path(c["image"]).name for c in report.json()["changed"]}
    failed = {Path(f["path"]).name: f["error"] for f in report.json()["failed"]}
    assert written == {kept} and set(failed) == {linked, gone, changed}, (written, failed)
    assert "changed since it was indexed" in failed[changed] and "gone" in failed[gone]
    assert sorted(p.name for p in folder.glob("*.xmp")) == [kept + ".xmp"]  # nothing else under the folder

    for body in ('{"ids": [NaN]}', '{"ids": [1e400]}', '{"ids": [true]}', '{"ids": ["1"]}'):
        refused = client.post("/api/xmp", content=body, headers={**origin, "content-type": "application/json"})
        assert refused.status_code == 422 and "input" not in refused.text, (body, refused.text)

    (library_dir / "thumbnails").write_text("not a folder")  # the cache cannot be written: made for each request
    thumb = client.get(f"/api/items/{ids[kept]}/thumbnail")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"


def test_far_dates_have_no_calendar_and_every_month_adds_up() -> None:
    import numpy as np

    from clipdex.retrieval.search.hits import iso_date
    from clipdex.retrieval.storage.selection import by_month

    assert iso_date(1e13) is None and iso_date(0.0) is not None
    last = 253_402_214_400.0 - 86_400 * 2  # late December 9999 (UTC)
    months = by_month(np.array([last, 1_600_000_000.0, 1_600_000_001.0]))
    assert sum(count for _, count, _ in months) == 3 and months[-1][1] == 2
