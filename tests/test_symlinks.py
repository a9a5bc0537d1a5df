"""Libraries reached through links: ~/Photos is often a link to a disk or another partition.

The rule (docs/architecture.md): a file is known by the path the user reached it through (display, filters,
identity) and by its real path, resolved when it was scanned (what the server opens, checked on the descriptor).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipdex.cli.web import create_app
from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from tests.conftest import SAMPLE_ROWS
from tests.helpers import LOCAL, SAMPLE, clipdex_command, start_running, stop_running, write_video, search_hits


def _hits(cli, *args: str) -> list[dict]:
    result = cli("search", "a photo", "-k", "50", "--mode", "clip", "--json", *args)
    assert result.exit_code == 0, result.output
    return search_hits(result)


@pytest.fixture
def linked(tmp_path: Path, photos):
    """real/ with three photos and a video, link -> real, and real/album reached through a link of its own."""
    real = photos(3, "real")
    from PIL import Image

    frame = Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[5]["image"]).convert("RGB")
    write_video(real / "clip.mp4", [(frame, 2.0)])
    album = tmp_path / "elsewhere" / "album"
    album.mkdir(parents=True)
    shutil.copy2(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[7]["image"], album / "far.png")
    (real / "album").symlink_to(album, target_is_directory=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    return real, link, album


@pytest.mark.slow
def test_a_library_indexed_through_links_is_searched_and_served(cli, library_dir: Path, linked) -> None:
    real, link, album = linked
    result = cli("index", link, *SAMPLE)
    assert result.exit_code == 0, result.output
    hits = _hits(cli)
    assert {h["path"] for h in hits} == {str(link / p.name) for p in real.iterdir() if p.is_file()} | {
        str(link / "album" / "far.png")}
    assert len(_hits(cli, "--in", str(link))) == 5  # --in through either spelling: the path as indexed, or
    assert len(_hits(cli, "--in", str(real))) == 4  # where the files really are (the album lives elsewhere)
    assert [Path(h["path"]).name for h in _hits(cli, "--in", str(album))] == ["far.png"]
    assert [Path(h["path"]).name for h in _hits(cli, "--in", str(link / "album"))] == ["far.png"]
    assert _hits(cli, "--in", str(link).upper()) == []  # exact, case included

    library = Library(library_dir)
    client = TestClient(create_app(library, "cpu"), base_url=LOCAL)
    for hit in hits:
        real_file = Path(os.path.realpath(hit["path"]))
        image = client.get(f"/api/items/{hit['id']}/image", headers={"range": "bytes=0-99"})
        assert image.status_code == 206 and image.content == real_file.read_bytes()[:100], hit["path"]
        assert client.get(f"/api/items/{hit['id']}/thumbnail").status_code == 200, hit["path"]


def test_a_link_swapped_in_after_indexing_is_refused(cli, library_dir: Path, linked, tmp_path: Path) -> None:
    real, link, album = linked
    assert cli("index", link, *SAMPLE).exit_code == 0
    library = Library(library_dir)
    client = TestClient(create_app(library, "cpu"), base_url=LOCAL)
    far = next(h for h in _hits(cli) if h["path"].endswith("far.png"))
    photo = next(h for h in _hits(cli) if h["path"].endswith(".png") and "album" not in h["path"])
    assert client.get(f"/api/items/{far['id']}/image").status_code == 200

    target = Path(os.path.realpath(photo["path"]))
    stat = target.stat()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"x" * stat.st_size)  # the same size and times: only the link itself gives it away
    os.utime(secret, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    target.unlink()
    target.symlink_to(secret)  # a file replaced by a link
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns), follow_symlinks=False)
    assert client.get(f"/api/items/{photo['id']}/image").status_code == 404
    copy = tmp_path / "copy-of-album"
    shutil.copytree(album, copy)  # same names, sizes and mtimes
    shutil.rmtree(album)
    album.symlink_to(copy, target_is_directory=True)  # a folder replaced by a link
    assert client.get(f"/api/items/{far['id']}/image").status_code == 404


def test_a_re_pointed_link_is_a_move_with_vectors_kept(cli, library_dir: Path, linked, tmp_path: Path) -> None:
    real, link, _ = linked
    assert cli("index", link, *SAMPLE).exit_code == 0
    before = {h["path"]: (h["id"], h["score"]) for h in _hits(cli)}
    moved = tmp_path / "new-disk"
    shutil.copytree(real, moved, symlinks=True)  # the disk mounted elsewhere: same files, new times
    shutil.rmtree(real)
    link.unlink()
    link.symlink_to(moved, target_is_directory=True)
    result = cli("index", link, "--json")
    report = json.loads(result.stdout)
    assert report["added"] == 0 and report["removed"] == 0 and report["updated"] == 0, report
    after = {h["path"]: (h["id"], h["score"]) for h in _hits(cli)}
    assert after == before  # same ids, same vectors
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    for item_id, _ in after.values():
        assert client.get(f"/api/items/{item_id}/image").status_code == 200


@pytest.mark.slow
def test_a_library_from_before_real_paths_migrates(cli, library_dir: Path, linked) -> None:
    """A schema-3 library (no real paths): its rows are served at their own paths until the next index run fills
    the real paths in; ids go on past every id ever given."""
    import sqlite3

    real, link, _ = linked
    assert cli("index", real, *SAMPLE).exit_code == 0
    newest = max(_hits(cli), key=lambda h: h["id"])
    Path(newest["path"]).unlink()  # the newest file goes before the migration: its id must not come back
    assert cli("index", real).exit_code == 0
    database = sqlite3.connect(library_dir / config.DATABASE_FILE)
    database.execute("ALTER TABLE items DROP COLUMN real_path")
    database.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    highest = newest["id"]
    assert database.execute("SELECT max(id) FROM items").fetchone()[0] < highest
    database.execute("DELETE FROM sqlite_sequence")
    database.commit()
    database.close()
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    assert client.get("/api/items/1/image").status_code == 200
    assert cli("index", real).exit_code == 0
    rows = sqlite3.connect(library_dir / config.DATABASE_FILE).execute("SELECT key, real_path FROM items").fetchall()
    assert rows and all(real_path == os.path.realpath(key) for key, real_path in rows)
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[20]["image"], real / "new.png")
    assert cli("index", real).exit_code == 0
    new = next(h for h in _hits(cli) if h["path"].endswith("new.png"))
    assert new["id"] > highest


@pytest.mark.slow
def test_ids_are_never_reused(cli, library_dir: Path, photos) -> None:
    folder = photos(3)
    assert cli("index", folder, *SAMPLE).exit_code == 0
    last = max(_hits(cli), key=lambda h: h["id"])
    Path(last["path"]).unlink()
    assert cli("index", folder).exit_code == 0
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[30]["image"], folder / "another.png")
    assert cli("index", folder).exit_code == 0
    added = next(h for h in _hits(cli) if h["path"].endswith("another.png"))
    assert added["id"] > last["id"]


@pytest.mark.slow
def test_watching_a_linked_folder(library_dir: Path, linked) -> None:
    real, link, album = linked
    process = start_running(library_dir, "watch", link, *SAMPLE, "--settle", "0.3")
    try:
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[40]["image"], album / "arrived.png")
        deadline, found = time.time() + 60, []
        while time.time() < deadline and not found:
            time.sleep(0.5)
            out = subprocess.run(clipdex_command(library_dir, "search", "-f", "-k", "50", "a photo"),
                                 capture_output=True, text=True).stdout
            found = [p for p in out.splitlines() if p.endswith("arrived.png")]
        assert found == [str(link / "album" / "arrived.png")]
    finally:
        stop_running(process)


def test_links_to_the_whole_machine_are_not_followed(cli, photos, tmp_path: Path) -> None:
    """`ln -s / photos/root` would index every image on the machine, other users' included; a link up to a
    folder holding the root would take in everything around it; /proc holds every process's files."""
    folder = photos(2)
    (folder / "root").symlink_to("/", target_is_directory=True)
    (folder / "up").symlink_to(tmp_path, target_is_directory=True)
    (folder / "processes").symlink_to("/proc", target_is_directory=True)
    report = json.loads(cli("index", folder, *SAMPLE, "--json").stdout)
    assert report["added"] == 2
    assert sorted(Path(f["path"]).name for f in report["failed"]) == ["processes", "root", "up"]
    assert all("not followed" in f["error"] for f in report["failed"])


def test_add_captions_reports_skipped_entries_on_the_terminal(cli, photos, tmp_path: Path) -> None:
    assert cli("index", photos(1), *SAMPLE).exit_code == 0
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"caption": 5}\n{"caption": "a dog"}\n', encoding="utf-8")
    result = cli("add-captions", corpus)
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.stderr and "entry 1: the caption is int, not text" in result.stderr


CHECKPOINT = ("--model", str(config.SAMPLE_MODEL))  # not a folder: prepared into the cache


@pytest.mark.slow
def test_a_damaged_prepared_tower_is_prepared_again(cli, photos, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    assert cli("index", photos(2), *CHECKPOINT).exit_code == 0
    towers = sorted((tmp_path / "cache" / "models").glob("*/*/model.onnx"))
    assert len(towers) == 2
    for tower in towers:
        tower.write_bytes(tower.read_bytes()[:1000])  # truncated: its stamp changes
    result = cli("search", "a red circle", "--json")
    assert result.exit_code == 0 and search_hits(result), result.output
    assert all(t.stat().st_size > 1000 for t in towers)


@pytest.mark.slow
def test_another_model_is_refused_before_it_is_prepared(cli, photos, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    folder = photos(2)
    assert cli("index", folder, *CHECKPOINT).exit_code == 0
    before = sorted((tmp_path / "cache").rglob("*.onnx"))
    refused = cli("index", folder, "--model", "clipdex-tiny")
    assert refused.exit_code == 1 and "was built with" in refused.output
    assert sorted((tmp_path / "cache").rglob("*.onnx")) == before  # nothing prepared for a model it refuses


def test_export_xmp_follows_links_and_never_tags_another_file(cli, library_dir: Path, linked, tmp_path: Path) -> None:
    real, link, _ = linked
    shapes = tmp_path / "shapes.txt"
    shapes.write_text("circle\nsquare\ntriangle\nstar\n", encoding="utf-8")
    assert cli("index", link, *SAMPLE, "--tags", "--vocabulary", shapes).exit_code == 0
    through_real = json.loads(cli("export-xmp", real, "--dry-run", "--json").stdout)  # the real spelling matches
    everything = json.loads(cli("export-xmp", "--dry-run", "--json").stdout)
    assert len(everything["changed"]) == 5  # three photos, the video, and album/far.png (on another disk)
    assert {c["image"] for c in through_real["changed"]} == {c["image"] for c in everything["changed"]
                                                            if "/album/" not in c["image"]}, through_real

    other = tmp_path / "other-disk"
    other.mkdir()
    for i, photo in enumerate(sorted(p for p in real.iterdir() if p.suffix in (".png", ".jpg", ".webp"))):
        shutil.copy2(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[20 + i]["image"], other / photo.name)
    link.unlink()
    link.symlink_to(other, target_is_directory=True)  # same names, other photos, not indexed yet
    result = cli("export-xmp", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and not [p for p in other.iterdir() if p.suffix == ".xmp"], report
    assert all("re-pointed" in f["error"] or "gone" in f["error"] for f in report["failed"]), report

