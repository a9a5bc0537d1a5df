"""What the page asks of the files through `clipdex serve`: a photo's camera, lens and exposure from its EXIF in
its details; an uploaded image's query kept under an id (so the page's URL can ask it again); chosen files moved
into a named folder with an undo list written there, never replacing anything, and only from this server's page."""

from __future__ import annotations

import subprocess

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipdex.cli.web import create_app
from clipdex.retrieval.library import Library
from tests.helpers import LOCAL


@pytest.fixture
def served(cli, photos, library_dir):
    folder = photos(4)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    inner = exif.get_ifd(0x8769)
    inner[0x829A], inner[0x829D], inner[0x8827], inner[0x920A], inner[0xA434] = 0.004, 2.8, 100, 50.0, "EF50mm f/1.8"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 30.24), "W", (2.0, 17.0, 40.2)
    Image.new("RGB", (64, 48), "red").save(folder / "camera.jpg", exif=exif)
    cli("index", folder, "--model", "clipdex-tiny")
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    items = {item["path"].rsplit("/", 1)[1]: item for item in client.get("/api/items").json()["items"]}
    return client, folder, items


def test_the_details_name_the_camera_lens_and_exposure(served) -> None:
    client, _, items = served
    found = client.get(f"/api/items/{items['camera.jpg']['id']}").json()
    assert found["camera"] == "Canon EOS 5D" and found["lens"] == "EF50mm f/1.8"
    assert found["exposure"] == "1/250 s · f/2.8 · ISO 100 · 50 mm"
    assert found["place"] == "48.85840, -2.29450"
    plain = client.get(f"/api/items/{items['00000.png']['id']}").json()
    assert "camera" not in plain and plain["open_folder"] is False  # (a test client is no browser on this machine)


def test_an_uploaded_query_is_kept_under_an_id(served) -> None:
    client, folder, _ = served
    answer = client.post("/api/search/image", files={"file": ("x.png", (folder / "00000.png").read_bytes())})
    upload = answer.headers["x-upload-id"]
    again = client.get(f"/api/uploads/{upload}/similar")
    assert again.status_code == 200 and again.json() == answer.json()
    assert client.get(f"/api/uploads/{'0' * 32}/similar").status_code == 404
    assert client.get("/api/uploads/..%2F..%2Fetc/similar").status_code == 404


def test_chosen_files_move_into_a_folder_with_an_undo_list(served, tmp_path) -> None:
    client, folder, items = served
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "00002.png").write_bytes(b"already here")
    ids = [items[name]["id"] for name in ("00000.png", "00001.png", "00002.png")]
    body = {"ids": ids, "folder": str(tmp_path / "kept")}
    assert client.post("/api/move", json=body, headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/move", json={**body, "folder": "kept"}).status_code == 400
    report = client.post("/api/move", json=body, headers={"origin": LOCAL}).json()
    assert [m["to"].rsplit("/", 1)[1] for m in report["moved"]] == ["00000.png", "00001.png"]
    assert "already in" in report["failed"][0]["error"] and (folder / "00002.png").is_file()  # nothing replaced
    assert (tmp_path / "kept" / "00002.png").read_bytes() == b"already here"
    assert not (folder / "00000.png").exists() and (tmp_path / "kept" / "00000.png").is_file()
    subprocess.run(["sh", report["undo"]], check=True)  # the undo list puts them back
    assert (folder / "00000.png").is_file() and (folder / "00001.png").is_file()
    assert not (tmp_path / "kept" / "00000.png").exists()
    again = client.post("/api/move", json=body).json()  # (the library still lists them where they are again)
    assert len(again["moved"]) == 2


def test_open_folder_shows_the_folder_to_a_browser_on_this_machine_only(served, monkeypatch, tmp_path) -> None:
    from clipdex.cli import web_files

    client, folder, items = served
    item = items["00000.png"]["id"]
    assert client.post(f"/api/items/{item}/open-folder").status_code == 409  # not a browser on this machine
    opened = tmp_path / "opened"
    script = tmp_path / "file-manager"
    script.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    script.chmod(0o755)
    monkeypatch.setattr(web_files, "_opener", lambda: [str(script)])
    local = TestClient(client.app, base_url=LOCAL, client=("127.0.0.1", 40000))
    assert local.get(f"/api/items/{item}").json()["open_folder"] is True
    assert local.post(f"/api/items/{item}/open-folder", headers={"origin": "http://evil.example"}).status_code == 403
    assert local.post(f"/api/items/{item}/open-folder").json() == {"opened": str(folder)}
    from tests.helpers import eventually

    assert eventually(lambda: opened.is_file() and opened.read_text().strip() == str(folder), 10)
    remote = TestClient(client.app, base_url=LOCAL, client=("192.0.2.7", 40000))
    assert remote.post(f"/api/items/{item}/open-folder").status_code == 409
