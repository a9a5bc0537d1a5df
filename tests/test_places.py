"""One search box: positions and cameras read from photos (EXIF GPS, an XMP sidecar), named offline, listed by
`clipdex places`, and read out of a sentence as exact filters ("a red circle in Lisbon in 2024"); phrases that
are no place, date or camera stay in the sentence."""

from __future__ import annotations

import json
from datetime import date, timedelta
import shutil
from pathlib import Path

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from clipdex.retrieval import config
from tests.helpers import SAMPLE

IMAGES = sorted((config.SAMPLE_DATA_DIR / "images").iterdir())


@pytest.fixture
def database_url(both_databases):
    """Every test here on SQLite and on the real PostgreSQL server."""
    return both_databases


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    degrees, minutes = int(value), int((value - int(value)) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return IFDRational(degrees), IFDRational(minutes), IFDRational(round(seconds * 1000), 1000)


def _photo(source: Path, out: Path, where: tuple[float, float] | None, camera: tuple[str, str] | None,
           taken: str) -> Path:
    """A JPEG of a sample picture with the EXIF a phone or camera writes: GPS, make and model, date taken."""
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = camera
    if where:
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if where[0] >= 0 else "S"), _dms(where[0])
        gps[3], gps[4] = ("E" if where[1] >= 0 else "W"), _dms(where[1])
    exif.get_ifd(0x8769)[0x9003] = taken
    Image.open(source).convert("RGB").save(out, exif=exif)
    return out


@pytest.fixture
def placed(tmp_path: Path) -> Path:
    """Photos of the sample's pictures 0-4 taken in Lisbon (2024, a Fuji), Lisbon (2019), Paris (2024, an iPhone),
    Kyoto (2024), and one with no position whose sidecar says Munich; one with nothing at all."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(IMAGES[0], folder / "lisbon-2024.jpg", (38.7223, -9.1393), ("FUJIFILM", "X-T4"), "2024:05:03 10:00:00")
    _photo(IMAGES[1], folder / "lisbon-2019.jpg", (38.7130, -9.1390), ("Canon", "Canon EOS R5"), "2019:07:14 12:00:00")
    _photo(IMAGES[2], folder / "paris.jpg", (48.8566, 2.3522), ("Apple", "iPhone 13"), "2024:08:01 09:00:00")
    _photo(IMAGES[3], folder / "kyoto.jpg", (35.0116, 135.7681), None, "2024:04:01 09:00:00")
    _photo(IMAGES[4], folder / "munich.jpg", None, None, "2024:04:01 09:00:00")
    (folder / "munich.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,8.6N" '
        'exif:GPSLongitude="11,34.5E"/></rdf:RDF></x:xmpmeta>', encoding="utf-8")
    shutil.copy(IMAGES[5], folder / "nowhere.png")
    return folder


def _paths(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return sorted(Path(hit["path"]).name for hit in json.loads(result.stdout)["hits"])


def test_places_are_read_named_and_listed(cli, placed: Path) -> None:
    done = cli("index", placed, *SAMPLE, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["facts"] == {"read": 6, "placed": 5}
    listed = json.loads(cli("places", "--json").stdout)
    assert [(p["country"], p["city"], p["count"]) for p in listed] == [
        ("France", "Paris", 1), ("Germany", "Munich", 1), ("Japan", "Kyoto", 1), ("Portugal", "Lisbon", 2)]


def test_a_sentence_names_place_date_and_camera_as_filters(cli, placed: Path) -> None:
    assert cli("index", placed, *SAMPLE).exit_code == 0
    found = cli("search", "a red circle in Lisbon in 2024", "--json")
    assert _paths(found) == ["lisbon-2024.jpg"]
    assert "read as: a red circle · in Lisbon, Portugal · 2024" in found.stderr
    assert _paths(cli("search", "a photo in Lisboa", "--json")) == ["lisbon-2019.jpg", "lisbon-2024.jpg"]
    assert _paths(cli("search", "a photo from Japan", "--json")) == ["kyoto.jpg"]
    assert _paths(cli("search", "a photo from July 2019", "--json")) == ["lisbon-2019.jpg"]
    assert _paths(cli("search", "a photo taken with a Fuji", "--json")) == ["lisbon-2024.jpg"]
    assert _paths(cli("search", "a photo on my iPhone", "--json")) == ["paris.jpg"]
    assert _paths(cli("search", "in Munich", "--json")) == ["munich.jpg"]


@pytest.mark.parametrize("query", ["a jersey in red", "nice shoes", "a photo in Berlin", "a bus in May",
                                   "a photo of 1999 things", "taken with a Nikon"])
def test_words_that_are_no_place_date_or_camera_here_do_not_filter(cli, placed: Path, query: str) -> None:
    """Berlin is a place, but none of these photos was taken there; a Nikon took none of them."""
    assert cli("index", placed, *SAMPLE).exit_code == 0
    found = cli("search", query, "--json", "-k", "10")
    assert len(_paths(found)) == 6 and "read as" not in found.stderr


def test_literal_keeps_the_sentence_whole_and_options_win(cli, placed: Path) -> None:
    assert cli("index", placed, *SAMPLE).exit_code == 0
    found = cli("search", "a photo in Lisbon", "--literal", "--json")
    assert len(_paths(found)) == 6 and "read as" not in found.stderr
    assert _paths(cli("search", "a photo in Lisbon", "--after", "2024-01-01", "--json")) == ["lisbon-2024.jpg"]


def test_a_library_from_before_gains_its_places_without_re_embedding(cli, library_dir: Path, placed: Path,
                                                                     database_url: str | None) -> None:
    from sqlalchemy import create_engine, text

    assert cli("index", placed, *SAMPLE).exit_code == 0
    engine = create_engine(database_url or f"sqlite:///{library_dir / config.DATABASE_FILE}")
    with engine.begin() as conn:  # as clipdex 0.1 of schema 5 left it
        for column in ("latitude", "longitude", "camera", "lens", "exposure", "city", "region", "country",
                       "facts_key"):
            conn.execute(text(f"ALTER TABLE items DROP COLUMN {column}"))
        conn.execute(text("UPDATE meta SET value = '5' WHERE key = 'schema_version'"))
    engine.dispose()
    done = json.loads(cli("index", placed, "--json").stdout)
    assert done["added"] == 0 and done["updated"] == 0 and done["facts"] == {"read": 6, "placed": 5}
    assert len(json.loads(cli("places", "--json").stdout)) == 4
    assert json.loads(cli("index", placed, "--json").stdout)["facts"] == {"read": 0, "placed": 0}


def test_relative_dates_count_from_today(cli, tmp_path: Path) -> None:
    """"yesterday", "last week" and "last summer" are read against this machine's date: photos taken then are
    found, one taken the day before yesterday is not."""
    today = date.today()
    summer = next(date(y, 7, 15) for y in (today.year, today.year - 1) if date(y, 9, 23) <= today)
    folder = tmp_path / "dated"
    folder.mkdir()
    for name, day, n in (("yesterday", today - timedelta(days=1), 0), ("earlier", today - timedelta(days=2), 1),
                         ("summer", summer, 2)):
        _photo(IMAGES[n], folder / f"{name}.jpg", None, None, f"{day:%Y:%m:%d} 12:00:00")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    found = cli("search", "a photo from yesterday", "--json")
    assert _paths(found) == ["yesterday.jpg"]
    understood = json.loads(found.stdout)["understood"]
    yesterday = today - timedelta(days=1)
    assert understood == {"text": "a photo", "place": None, "after": yesterday.isoformat(),
                          "before": today.isoformat(), "camera": None}
    assert _paths(cli("search", "a photo last summer", "--json")) == ["summer.jpg"]
    assert f"21 Jun – 22 Sep {summer.year}" in cli("search", "a photo last summer").stderr
    both = cli("search", "a photo from yesterday + a photo last summer", "--json")  # one date: the first sentence's
    assert _paths(both) == ["yesterday.jpg"] and both.stderr.count("read as") == 1
    assert json.loads(both.stdout)["understood"]["text"] == "a photo + a photo last summer"


def test_near_a_place_is_a_distance(cli, placed: Path) -> None:
    """"near Kyoto" and --near are within a distance of the place's centre; a place no table knows is one line."""
    assert cli("index", placed, *SAMPLE).exit_code == 0
    found = cli("search", "a photo near Kyoto", "--json")
    assert _paths(found) == ["kyoto.jpg"]
    assert json.loads(found.stdout)["understood"]["place"] == "near Kyoto, Japan"
    assert _paths(cli("search", "a photo", "--near", "Lisboa", "--json")) == ["lisbon-2019.jpg", "lisbon-2024.jpg"]
    assert _paths(cli("search", "a photo", "--near", "38.7223,-9.1393", "--km", "0.5", "--json")) == [
        "lisbon-2024.jpg"]  # the other is 1 km south
    assert _paths(cli("search", "a photo", "--near", "Paris, France", "--km", "1000", "--json")) == [
        "munich.jpg", "paris.jpg"]
    missing = cli("search", "a photo", "--near", "Atlantis [bold]x[/bold]")
    assert missing.exit_code == 2 and "no place called 'Atlantis [bold]x[/bold]'" in missing.output
    assert "Traceback" not in missing.output


def test_what_was_understood_is_in_json_and_literal_reads_nothing(cli, placed: Path) -> None:
    assert cli("index", placed, *SAMPLE).exit_code == 0
    read = json.loads(cli("search", "a red circle in Lisbon in 2024 taken with a Fuji", "--json").stdout)
    assert read["understood"] == {"text": "a red circle", "place": "in Lisbon, Portugal", "after": "2024-01-01",
                                  "before": "2025-01-01", "camera": "FUJIFILM X-T4"}
    whole = json.loads(cli("search", "a red circle in Lisbon", "--literal", "--json").stdout)["understood"]
    assert whole == {"text": "a red circle in Lisbon", "place": None, "after": None, "before": None, "camera": None}
