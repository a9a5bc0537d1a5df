"""Queries people type: combined +/- terms, exact filters, paths-only output."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.search.terms import parse_terms
from clipdex.retrieval.storage.schema import IMAGE, items_table
from tests.conftest import SAMPLE_ROWS
from tests.helpers import SAMPLE, brute_force, search_hits


def test_parse_terms(tmp_path: Path) -> None:
    image = tmp_path / "night.jpg"
    Image.new("RGB", (8, 8)).save(image)
    assert [(t.value, t.weight) for t in parse_terms(["horse", "+", "stripes"])] == [("horse", 1), ("stripes", 1)]
    assert [(t.value, t.weight) for t in parse_terms(["apple", "-", "fruit"])] == [("apple", 1), ("fruit", -1)]
    assert [(t.value, t.weight) for t in parse_terms(["2:golden retriever", "-", "0.5:snow"])] == [
        ("golden retriever", 2), ("snow", -0.5)
    ]
    assert [t.value for t in parse_terms(["a", "dog", "+", "beach"])] == ["a dog", "beach"]
    terms = parse_terms([str(image), "+", "snow"])
    assert (terms[0].is_image, terms[1].is_image) == (True, False)
    assert parse_terms(["AC/DC concert"])[0].is_image is False
    for tokens, message in [
        (["./missing.jpg", "+", "snow"], "no such image"),
        (["+", "x"], "must stand between"),
        (["x", "-"], "ends with an operator"),
        ([], "empty"),
    ]:
        with pytest.raises(ClipdexError, match=message):
            parse_terms(tokens)


@pytest.fixture
def indexed(cli, photos):
    folder = photos(30)
    assert cli("index", folder, "--model", "clipdex-tiny").exit_code == 0
    return folder


def test_sum_of_terms_equals_search_with_the_normalised_sum(cli, library_dir, indexed, tiny) -> None:
    hits = search_hits(cli("search", "a red circle", "+", "a blue square", "-k", "8", "--json"))
    a, b = tiny.encode_texts(["a red circle", "a blue square"])
    query = (a + b) / np.linalg.norm(a + b)
    assert [h["id"] for h in hits] == brute_force(library_dir, query, 8)
    assert hits[0]["score"] == pytest.approx(float(np.max(_stored_scores(library_dir, query))), abs=1e-5)


def _stored_scores(library_dir: Path, query: np.ndarray) -> np.ndarray:
    library = Library(library_dir)
    return np.concatenate([v @ query for _, v in library.store.vectors(IMAGE, library.require_identity().dim)])


def test_subtracting_a_term_ranks_items_like_it_lower(cli, indexed) -> None:
    like = sorted(indexed.iterdir())[4]

    def rank_and_score(*terms: str) -> tuple[int, float]:
        hits = search_hits(cli("search", *terms, "-k", "30", "--json"))
        position = [h["path"] for h in hits].index(str(like))
        return position, hits[position]["score"]

    alone = rank_and_score("a green triangle")
    minus = rank_and_score("a green triangle", "-", str(like))
    assert minus[0] > alone[0] and minus[1] < alone[1]


@pytest.mark.slow
def test_filters_equal_brute_force_on_stored_rows(cli, library_dir, photos, tiny, tmp_path: Path) -> None:
    root = tmp_path / "album"
    for n, row in enumerate(SAMPLE_ROWS[:24]):
        target = root / ("summer" if n % 2 else "winter") / Path(row["image"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config.SAMPLE_DATA_DIR / row["image"], target)
        stamp = datetime(2020, 1 + n % 12, 1 + n).timestamp()
        os.utime(target, (stamp, stamp))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2019:07:04 12:00:00"
    dated = root / "summer" / "dated.jpg"
    Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[30]["image"]).convert("RGB").save(dated, exif=exif.tobytes())
    assert read_image(dated).taken_at == datetime(2019, 7, 4, 12).timestamp()  # EXIF beats the file's mtime
    assert cli("index", root, "--model", "clipdex-tiny").exit_code == 0

    library = Library(library_dir)
    with library.store.db.connect() as conn:
        rows = conn.execute(items_table.select().where(items_table.c.kind == IMAGE)).mappings().all()
    query = tiny.encode_texts(["a large yellow star"])[0]
    cases = [
        (["--in", root / "summer"], lambda r: r["key"].startswith(str(root / "summer") + os.sep)),
        (["--after", "2020-06-01"], lambda r: (r["taken_at"] or r["mtime"]) >= datetime(2020, 6, 1).timestamp()),
        (["--before", "2020-01-01"], lambda r: (r["taken_at"] or r["mtime"]) < datetime(2020, 1, 1).timestamp()),
        (
            ["--in", root / "winter", "--after", "2020-03-01", "--before", "2020-09-01"],
            lambda r: r["key"].startswith(str(root / "winter") + os.sep)
            and datetime(2020, 3, 1).timestamp() <= (r["taken_at"] or r["mtime"]) < datetime(2020, 9, 1).timestamp(),
        ),
    ]
    for options, allowed in cases:
        matching = [r for r in rows if allowed(r)]
        scores = {r["id"]: float(np.frombuffer(r["vector"], dtype=np.float32) @ query) for r in matching}
        expected = sorted(scores, key=lambda i: -scores[i])[:5]
        hits = search_hits(cli("search", "a large yellow star", *options, "-k", "5", "--json"))
        assert [h["id"] for h in hits] == expected, options
        assert 0 < len(matching) < len(rows), options
    dated_hits = search_hits(cli("search", "x", "--before", "2020-01-01", "-k", "50", "--json"))
    assert [h["path"] for h in dated_hits] == [str(dated)]

    everything = search_hits(cli("search", "a large yellow star", "-k", "50", "--json"))
    cut = everything[7]["score"]
    above = search_hits(cli("search", "a large yellow star", "-k", "50", "--min-score", str(cut), "--json"))
    assert [h["id"] for h in above] == [h["id"] for h in everything if h["score"] >= cut]


def test_sort_by_date_orders_the_same_matches_newest_first(cli, library_dir, tmp_path: Path) -> None:
    folder = tmp_path / "dated"
    folder.mkdir()
    taken = {}
    for n, row in enumerate(SAMPLE_ROWS[:12]):
        when = datetime(2015 + (n * 7) % 10, 1 + n % 12, 1 + n, 9, 30)
        image = Image.open(config.SAMPLE_DATA_DIR / row["image"]).convert("RGB")
        path = folder / f"{n:02d}.jpg"
        if n % 3:  # EXIF DateTimeOriginal on most, the file's mtime on the others
            exif = Image.Exif()
            exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
            image.save(path, exif=exif.tobytes())
        else:
            image.save(path)
            os.utime(path, (when.timestamp(), when.timestamp()))
        taken[str(path)] = when
    assert cli("index", folder, "--model", "clipdex-tiny", "--no-export").exit_code == 0
    by_score = search_hits(cli("search", "a red circle", "-k", "5", "--json"))
    by_date = search_hits(cli("search", "a red circle", "-k", "5", "--sort", "date", "--json"))
    assert sorted(h["id"] for h in by_date) == sorted(h["id"] for h in by_score)  # the top 5, reordered
    assert [taken[h["path"]] for h in by_date] == sorted((taken[h["path"]] for h in by_score), reverse=True)
    for hit in by_date:
        assert datetime.fromisoformat(hit["taken"]).replace(tzinfo=None) == taken[hit["path"]]
        assert (hit["width"], hit["height"]) == Image.open(hit["path"]).size
    cut = by_score[2]["score"] - 1e-5  # JSON scores are rounded to 6 places
    above = search_hits(cli("search", "a red circle", "-k", "50", "--min-score", str(cut), "--sort", "date", "--json"))
    assert sorted(h["id"] for h in above) == sorted(h["id"] for h in by_score[:3])
    assert cli("search", "x", "--sort", "size").exit_code == 1


def test_paths_only_prints_exactly_the_json_paths(cli, indexed) -> None:
    as_json = search_hits(cli("search", "kitten", "-k", "5", "--json"))
    paths_only = cli("search", "-f", "-k", "5", "kitten")
    assert paths_only.exit_code == 0
    assert paths_only.stdout == "".join(h["path"] + "\n" for h in as_json)
    assert search_hits(cli("search", "kitten", "-k", "5", "--json")) == as_json


@pytest.mark.slow
def test_a_quoted_query_reads_as_the_same_query_unquoted(cli, photos) -> None:
    assert cli("index", photos(12), *SAMPLE).exit_code == 0
    quoted = cli("search", "a red circle + a blue square - snow", "--json", "--mode", "clip")
    unquoted = cli("search", "a", "red", "circle", "+", "a blue square", "-", "snow", "--json", "--mode", "clip")
    assert quoted.exit_code == 0 and search_hits(quoted) == search_hits(unquoted)
    one_term = cli("search", "a red circle a blue square snow", "--json", "--mode", "clip")
    assert search_hits(one_term) != search_hits(quoted)
