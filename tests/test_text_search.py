"""Photos found by the words in them: OCR at index time, full-text search on SQLite and PostgreSQL,
and hybrid ranking with CLIP. Real RapidOCR models, real images with words rendered by Pillow's scalable font."""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from tests.conftest import SAMPLE_ROWS, new_postgres_database
from tests.helpers import LOCAL, clipdex_command, words_image, search_hits

SAMPLE = ("--model", "sample", "--no-export")
# file name → (the words drawn, how they are drawn)
TEXTS = {
    "receipt.jpg": "RECEIPT TOTAL 4711",
    "gate.png": "GATE B22",  # rotated 90°
    "crossing.jpg": "ZEBRA CROSSING",  # upside down
    "settings.jpg": "VPN SETTINGS",  # stored sideways with an EXIF orientation that turns it upright
}


def make_text_photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    words_image(TEXTS["receipt.jpg"]).save(folder / "receipt.jpg", quality=92)
    words_image(TEXTS["gate.png"], font_size=90).rotate(90, expand=True).save(folder / "gate.png")
    words_image(TEXTS["crossing.jpg"]).rotate(180).save(folder / "crossing.jpg", quality=92)
    sideways = words_image(TEXTS["settings.jpg"]).transpose(Image.Transpose.ROTATE_90)  # a viewer turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(folder / "settings.jpg", quality=92, exif=exif.tobytes())
    big = Image.new("RGB", (4000, 3000), (240, 240, 240))  # words far too small to read at OCR size
    ImageDraw.Draw(big).text((1800, 1500), "MICROSCOPIC", fill="black", font=ImageFont.load_default(size=9))
    big.save(folder / "tiny-print.jpg", quality=90)
    for row in SAMPLE_ROWS[:6]:
        shutil.copy2(config.SAMPLE_DATA_DIR / row["image"], folder / Path(row["image"]).name)
    return folder


@pytest.fixture(scope="module")
def text_photos(tmp_path_factory) -> Path:
    return make_text_photos(tmp_path_factory.mktemp("text-photos") / "photos")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def indexed(request, tmp_path_factory, text_photos: Path):
    """(run the CLI, library folder, database URL) of one library indexed with --ocr, per database."""
    from typer.testing import CliRunner

    from clipdex.cli.app import app

    database = new_postgres_database(request.getfixturevalue("postgres_server")) if request.param != "sqlite" else None
    library_dir = tmp_path_factory.mktemp(f"text-{request.param}") / "library"
    runner = CliRunner()

    def cli(*args):
        extra = ["--database", database] if database else []
        return runner.invoke(app, ["--library", str(library_dir), *extra, *map(str, args)], catch_exceptions=False)

    result = cli("index", text_photos, *SAMPLE, "--ocr", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ocr"]["with_text"] == 4
    assert json.loads(cli("status", "--json").stdout)["ocr"] == {
        "enabled": True, "unread": 0, "without_text": 7, "with_text": 4
    }
    return cli, library_dir, database


def _search(cli, *args) -> list[dict]:
    result = cli("search", *args, "--json")
    assert result.exit_code == 0, result.output
    return search_hits(result)


def _names(hits: list[dict]) -> list[str]:
    return [Path(hit["path"]).name for hit in hits]


@pytest.mark.slow
def test_ocr_reads_straight_rotated_upside_down_and_exif_turned_text(indexed, text_photos: Path) -> None:
    _, library_dir, database = indexed
    store = Library(library_dir, database).store
    rows = store.items(range(1, 100))
    read = {Path(row["key"]).name: row["ocr_text"] for row in rows.values()}
    for name, words in TEXTS.items():
        assert set(words.split()) <= set(read[name].upper().split()), (name, read[name])
    assert read["tiny-print.jpg"] == ""  # too small to read at the size OCR looks at: skipped
    assert all(read[Path(r["image"]).name] == "" for r in SAMPLE_ROWS[:6])  # no text: none stored, yet read
    assert store.ocr_counts() == {"unread": 0, "without_text": 7, "with_text": 4}


@pytest.mark.parametrize("query, expected", [
    ("4711", "receipt.jpg"), ("the receipt with 4711", "receipt.jpg"), ("gate B22", "gate.png"),
    ("zebra", "crossing.jpg"), ("that screenshot about the VPN", "settings.jpg"),
])
def test_a_word_in_a_photo_finds_it_first(indexed, query: str, expected: str) -> None:
    cli = indexed[0]
    for mode in ("hybrid", "text"):
        hits = _search(cli, query, "--mode", mode, "-k", "5")
        assert _names(hits)[0] == expected, (mode, _names(hits))
        assert hits[0]["ocr"] and any(w.lower() in hits[0]["ocr"].lower() for w in query.split()[-1:])
    paths = cli("search", query, "-f", "-k", "1")
    assert Path(paths.stdout.strip()).name == expected


@pytest.mark.slow
def test_clip_queries_on_photos_without_words_are_unchanged(indexed) -> None:
    cli = indexed[0]
    for row in SAMPLE_ROWS[:6]:
        assert _search(cli, row["caption"], "--mode", "hybrid", "-k", "11") == _search(
            cli, row["caption"], "--mode", "clip", "-k", "11"
        )


def test_filters_and_min_score_keep_working(indexed, text_photos: Path) -> None:
    cli = indexed[0]
    assert _search(cli, "4711", "--min-score", "0.99") and _names(_search(cli, "4711", "--min-score", "0.99")) == [
        "receipt.jpg"
    ]  # the photo holding the words passes whatever its cosine; nothing else does
    assert _search(cli, "4711", "--mode", "text", "--in", text_photos / "nowhere") == []
    assert cli("search", "the a of", "--mode", "text").exit_code == 1  # only common words: a clear error


def test_the_web_api_searches_by_words(indexed) -> None:
    from fastapi.testclient import TestClient

    from clipdex.cli.web import create_app

    _, library_dir, database = indexed
    client = TestClient(create_app(Library(library_dir, database), "cpu"), base_url=LOCAL)
    hits = client.get("/api/search", params={"q": "gate b22", "k": 3}).json()
    assert Path(hits[0]["path"]).name == "gate.png" and "B22" in hits[0]["ocr"]
    assert client.get("/api/search", params={"q": "x", "mode": "nope"}).status_code == 422


def test_a_renamed_file_is_found_by_its_new_name(cli, photos) -> None:
    folder = photos(4)
    assert cli("index", folder, *SAMPLE).exit_code == 0  # no --ocr: names are searchable anyway
    first = sorted(folder.iterdir())[0]
    first.rename(folder / "paris-2023-eiffel.png")
    assert json.loads(cli("index", folder, "--json").stdout)["moved"] == 1
    assert _names(_search(cli, "paris 2023", "--mode", "text")) == ["paris-2023-eiffel.png"]
    assert _names(_search(cli, "eiffel", "-k", "4"))[0] == "paris-2023-eiffel.png"
    assert _search(cli, Path(first).stem, "--mode", "text") == []  # the old name is gone from the index


@pytest.mark.slow
def test_ocr_later_fills_in_an_existing_library_and_changed_photos_are_read_again(cli, library_dir: Path,
                                                                                   tmp_path: Path) -> None:
    folder = make_text_photos(tmp_path / "photos")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    assert json.loads(cli("status", "--json").stdout)["ocr"]["enabled"] is False
    filled = json.loads(cli("index", "--ocr", "--json").stdout)
    assert filled["ocr"] == {"read": 11, "with_text": 4}
    words_image("INVOICE 9031").save(folder / "receipt.jpg", quality=92)  # new content, same name
    again = json.loads(cli("index", folder, "--json").stdout)  # --ocr is remembered
    assert again["updated"] == 1 and again["ocr"] == {"read": 1, "with_text": 1}
    assert _names(_search(cli, "9031", "--mode", "text")) == ["receipt.jpg"]
    assert _search(cli, "4711", "--mode", "text") == []


def _glued(text: str) -> str:
    """OCR may or may not see the space between a word and a number: compare without spaces."""
    return "".join(text.split())


def _ocr_rows(library_dir: Path) -> dict[str, str | None]:
    with sqlite3.connect(library_dir / config.DATABASE_FILE) as db:
        return {Path(k).name: t for k, t in db.execute("SELECT key, ocr_text FROM items")}


@pytest.mark.slow
def test_kill_9_during_an_ocr_pass_loses_nothing(cli, library_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    words = {f"note-{n:02d}.png": f"CODE {1000 + 37 * n}" for n in range(40)}
    for name, text in words.items():
        words_image(text, size=(640, 360), font_size=64).save(folder / name)
    assert cli("index", folder, *SAMPLE).exit_code == 0
    rng = random.Random(19)
    partial = []
    for _ in range(3):
        process = subprocess.Popen(
            clipdex_command(library_dir, "index", "--ocr"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        before = sum(found is not None for found in _ocr_rows(library_dir).values())
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None and before == sum(
            found is not None for found in _ocr_rows(library_dir).values()
        ):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))  # somewhere in the next batch or its commit
        process.send_signal(signal.SIGKILL)
        process.wait()
        for name, found in _ocr_rows(library_dir).items():  # each row: not read yet, or read whole
            assert found is None or _glued(found) == _glued(words[name]), (name, found)
        partial.append(sum(found is not None for found in _ocr_rows(library_dir).values()))
    assert any(0 < n < len(words) for n in partial), partial  # a kill did land in the middle of the pass
    assert cli("index", "--ocr").exit_code == 0
    assert {n: _glued(t) for n, t in _ocr_rows(library_dir).items()} == {n: _glued(t) for n, t in words.items()}
    for name, text in words.items():  # the full-text index agrees with every row
        assert _names(_search(cli, text.split()[1], "--mode", "text")) == [name]


@pytest.mark.slow
def test_the_gate_passes_lines_of_words_not_shapes_and_stripes(monkeypatch) -> None:
    """The gate's rule (config.OCR_GATE_*): the detector finds boxes on about one sample image in six (flat shapes,
    stripes, dots), but few are shaped like a line of words; a rendered line of text still passes."""
    from clipdex.retrieval.media.ocr import TextReader

    gate = TextReader(threads=1)
    images = [Image.open(p).convert("RGB").resize((500, 375)) for p in sorted(config.SAMPLE_DATA_DIR.glob("images/*"))[:120]]
    any_box = sum(bool(gate.boxes(image)) for image in images)
    passed = sum(gate.has_text(image) for image in images)
    assert any_box >= 12 and passed <= any_box // 3, (any_box, passed)
    line = Image.new("RGB", (1600, 1200), (250, 250, 245))
    ImageDraw.Draw(line).text((100, 500), "CORNER BAKERY INVOICE 4711", fill=(10, 10, 10),
                              font=ImageFont.load_default(size=90))
    assert gate.has_text(line)
    shaped = [box.score for box in gate.boxes(line) if box.height >= config.OCR_GATE_MIN_HEIGHT
              and box.width >= config.OCR_GATE_MIN_ASPECT * box.height]
    monkeypatch.setattr(config, "OCR_GATE_MIN_SCORE", max(shaped) + 1e-6)  # the rule's third part: the score
    assert not gate.has_text(line)


def test_text_mode_searches_common_words_rather_than_none(cli, photos) -> None:
    """Most photos named (or reading) "receipt": in --mode text, where words are all there is, "receipt" finds
    them; in hybrid the common word still does not reorder CLIP's ranking."""
    folder = photos(10)
    for i, path in enumerate(sorted(folder.iterdir())):
        path.rename(folder / (f"receipt-{i}.png" if i < 8 else f"invoice-{i}.png"))
    assert cli("index", folder, *SAMPLE).exit_code == 0
    found = search_hits(cli("search", "receipt", "--mode", "text", "-k", "20", "--json"))
    assert sorted(Path(h["path"]).name for h in found) == [f"receipt-{i}.png" for i in range(8)]
    clip = search_hits(cli("search", "receipt", "--mode", "clip", "-k", "10", "--json"))
    hybrid = search_hits(cli("search", "receipt", "-k", "10", "--json"))
    assert [h["id"] for h in hybrid] == [h["id"] for h in clip]


def test_text_matches_are_filtered_before_they_are_cut_to_a_shortlist(cli, tmp_path: Path, monkeypatch) -> None:
    """--mode text with --in: every photo matches the folder's word, and the shortlist (HYBRID_CANDIDATES, 3
    here) held only photos of the other folder; -k asks for more than the shortlist."""
    trip = tmp_path / "trip"
    for n, name in enumerate(("aaa", "bbb")):
        (trip / name).mkdir(parents=True)
        for row in SAMPLE_ROWS[4 * n:4 * n + 4]:
            shutil.copy(config.SAMPLE_DATA_DIR / row["image"], trip / name)
    assert cli("index", trip, "--model", "sample").exit_code == 0
    monkeypatch.setattr(config, "HYBRID_CANDIDATES", 3)
    for folder in ("aaa", "bbb"):
        found = cli("search", "trip", "--mode", "text", "--in", trip / folder, "-k", "10", "-f").stdout.splitlines()
        assert sorted(Path(p).parent.name for p in found) == [folder] * 4, found
    assert len(cli("search", "trip", "--mode", "text", "-k", "8", "-f").stdout.splitlines()) == 8


@pytest.mark.slow
def test_a_subtracted_word_keeps_a_photo_out_of_the_text_matches(cli, tmp_path: Path) -> None:
    folder = tmp_path / "signs"
    folder.mkdir()
    words_image("STOP CROSSWALK").save(folder / "a.png")  # two lines each: OCR keeps the words apart
    words_image("STOP EVERYONE").save(folder / "b.png")
    assert cli("index", folder, "--model", "sample", "--no-export", "--ocr").exit_code == 0
    assert len(search_hits(cli("search", "stop", "--mode", "text", "--json"))) == 2
    hits = search_hits(cli("search", "stop", "-", "crosswalk", "--mode", "text", "--json"))
    assert [Path(h["path"]).name for h in hits] == ["b.png"]
