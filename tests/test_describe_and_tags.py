"""Image → text on a fresh library (the built-in vocabulary) and tags (index --tags): exact --tag filters on
SQLite and PostgreSQL, tags in JSON, `clipdex tags`, resumable tagging, tags that follow the content.

Where the answer must be right, the vocabulary is the sample images' own colours and shapes (the bundled model
knows nothing else); the built-in list is checked for being used, not for quality (real weights: not here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from clipdex.retrieval import config
from clipdex.retrieval.describe.vocabulary import read_concepts
from clipdex.retrieval.errors import ClipdexError
from tests.conftest import SAMPLE_ROWS
from tests.helpers import LOCAL, SAMPLE, json_output, search_hits

ONE_SHAPE = re.compile(r"a (?:large|small) (\w+ \w+) (?:at|on) .*")  # captions naming a single shape


@pytest.fixture
def database_url(both_databases):
    return both_databases


def _caption_of(path: str) -> str:
    return next(r["caption"] for r in SAMPLE_ROWS if Path(r["image"]).name == Path(path).name)


def test_the_built_in_vocabulary_is_a_list_of_photo_concepts() -> None:
    concepts = read_concepts()
    assert len(concepts) >= 1000 and len(set(concepts)) == len(concepts)
    assert {"dog", "beach", "receipt", "sunset", "birthday party", "snow"} <= set(concepts)


@pytest.mark.slow
def test_captions_on_a_fresh_library_come_from_the_built_in_vocabulary(cli, photos) -> None:
    folder = photos(6)
    cli("index", folder, *SAMPLE)
    image = sorted(folder.iterdir())[0]
    described = json_output(cli("captions", image, "-k", "5", "--json"))
    assert len(described) == 5 and {h["source"] for h in described} == {"builtin"}
    assert set(h["caption"] for h in described) <= set(read_concepts())
    table = cli("captions", image, "-k", "3")
    assert table.exit_code == 0 and "builtin" in table.stdout and "no results" not in table.stdout
    refused = cli("captions", image, "--from", "corpus")
    assert refused.exit_code == 1 and "clipdex add-captions" in refused.stderr and "Traceback" not in refused.output
    cli("add-captions", config.SAMPLE_CAPTIONS)
    assert {h["source"] for h in json_output(cli("captions", image, "-k", "3", "--json"))} == {"corpus"}  # auto: corpus
    both = json_output(cli("captions", image, "-k", "40", "--from", "all", "--json"))
    assert {h["source"] for h in both} == {"corpus", "builtin"}
    assert [h["score"] for h in both] == sorted((h["score"] for h in both), reverse=True)
    assert cli("captions", image, "--from", "nowhere").exit_code != 0


@pytest.mark.slow
def test_tags_name_what_is_in_the_photo_and_filter_exactly(cli, photos, shapes: Path) -> None:
    folder = photos(40)
    first = json_output(cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes, "--json"))
    assert first["tags"] == {"tagged": 40, "with_tags": 40}
    hits = search_hits(cli("search", "a shape", "-k", "40", "--mode", "clip", "--json"))
    assert all(isinstance(h["tags"], list) and 1 <= len(h["tags"]) <= config.TAG_MAX_PER_IMAGE for h in hits)
    single = [(h, ONE_SHAPE.fullmatch(_caption_of(h["path"]))) for h in hits]
    single = [(h, m.group(1)) for h, m in single if m]
    assert len(single) >= 8
    assert sum(want in h["tags"] for h, want in single) >= 0.6 * len(single)  # chance: about 5 in 24
    assert sum(h["tags"][0] == want for h, want in single) >= 0.4 * len(single)

    counted = json_output(cli("tags", "--json"))
    assert sum(t["count"] for t in counted) == sum(len(h["tags"]) for h in hits)
    assert [t["count"] for t in counted] == sorted((t["count"] for t in counted), reverse=True)
    tag = counted[0]["tag"]
    holding = {h["path"] for h in hits if tag in h["tags"]}
    filtered = search_hits(cli("search", "a shape", "--tag", tag, "-k", "40", "--json"))
    assert {h["path"] for h in filtered} == holding  # exactly the images with the tag, all of them
    second = next(t["tag"] for t in counted if t["tag"] != tag)
    both = search_hits(cli("search", "a shape", "--tag", tag, "--tag", second, "-k", "40", "--json"))
    assert {h["path"] for h in both} == {h["path"] for h in hits if {tag, second} <= set(h["tags"])}
    folded = search_hits(cli("search", "a shape", "--tag", "  " + tag.upper().replace(" ", "   "), "-k", "40", "--json"))
    assert {h["path"] for h in folded} == holding  # case and spaces fold, as the vocabulary itself reads them
    assert search_hits(cli("search", "a shape", "--tag", tag[:-1], "--json")) == []  # nor a prefix
    assert cli("tags").exit_code == 0 and tag in cli("tags").stdout


def test_a_tag_filter_holds_under_an_approximate_index(cli, photos, shapes: Path, monkeypatch) -> None:
    folder = photos(40)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    exact = search_hits(cli("search", "a red circle", "--tag", "red circle", "-k", "40", "--json"))
    monkeypatch.setattr(config, "IVF_MIN_ITEMS", 10)
    assert json_output(cli("status", "--json"))["index"]["kind"] == "ivf"
    approximate = search_hits(cli("search", "a red circle", "--tag", "red circle", "-k", "40", "--json"))
    assert exact and [h["path"] for h in approximate] == [h["path"] for h in exact]


@pytest.mark.slow
def test_tags_follow_the_content_and_index_tags_fills_in_an_existing_library(cli, photos, shapes: Path) -> None:
    folder = photos(12)
    cli("index", folder, *SAMPLE)
    assert "tags" not in search_hits(cli("search", "a shape", "-k", "1", "--json"))[0]  # not tagged: no key
    assert json_output(cli("tags", "--json")) == [] and "index --tags" in cli("tags").output
    done = json_output(cli("index", "--tags", "--vocabulary", shapes, "--json"))
    assert done["tags"]["tagged"] == 12
    assert json_output(cli("index", "--tags", "--json"))["tags"]["tagged"] == 0  # nothing left: nothing redone
    victim = sorted(folder.iterdir())[0]
    other = Path(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[30]["image"])
    victim.write_bytes(other.read_bytes())  # new content under the same name
    again = json_output(cli("index", folder, "--json"))  # remembered: later runs tag too
    assert again["updated"] == 1 and again["tags"]["tagged"] == 1
    hit = next(h for h in search_hits(cli("search", "a shape", "-k", "12", "--json")) if h["path"] == str(victim))
    after = json_output(cli("captions", victim, "-k", "1", "--from", "builtin", "--json"))[0]["caption"]
    assert hit["tags"] and after in hit["tags"]  # the library's own vocabulary describes, and tags the new photo


def test_tagging_stopped_mid_way_goes_on_where_it_stopped(cli, library_dir: Path, photos, shapes: Path) -> None:
    """A batch per transaction: Ctrl-C (here, from the progress callback) after the second batch keeps both."""
    from clipdex.indexer.tag_pass import tag_images
    from clipdex.retrieval.library import Library

    cli("index", photos(12), *SAMPLE, "--tags", "--vocabulary", shapes)
    library = Library(library_dir)
    library.store.enable_tags(["red circle", "blue square", "green triangle"])  # another list: all to do again
    batches = []

    def progress(description, _total, _unit=""):
        def advance(n=1, note=""):
            if description == "tagging":
                batches.append(n)
                if len(batches) == 2:
                    raise KeyboardInterrupt
        return advance

    stopped = tag_images(library, progress=progress, batch=5)
    assert stopped.interrupted and stopped.tagged == 10
    assert json_output(cli("index", "--tags", "--json"))["tags"]["tagged"] == 2
    assert {t["tag"] for t in json_output(cli("tags", "--json"))} <= {"red circle", "blue square", "green triangle"}


def test_the_web_api_filters_by_tag_lists_tags_and_says_where_captions_come_from(
    cli, library_dir: Path, photos, shapes: Path
) -> None:
    from fastapi.testclient import TestClient

    from clipdex.cli.web import create_app
    from clipdex.retrieval.library import Library

    cli("index", photos(12), *SAMPLE, "--tags", "--vocabulary", shapes)
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    counted = client.get("/api/tags").json()
    assert counted == json_output(cli("tags", "--json"))
    tag = counted[0]["tag"]
    found = client.get("/api/search", params={"q": "a shape", "k": 12, "tag": tag}).json()
    assert found and all(tag in h["tags"] for h in found)
    assert len(found) == counted[0]["count"]
    described = client.get(f"/api/items/{found[0]['id']}/captions", params={"k": 3}).json()
    assert [h["source"] for h in described] == ["vocabulary"] * 3  # the library's own list, not the built-in one
    assert set(h["caption"] for h in described) <= set(read_concepts(shapes))
    assert client.get(f"/api/items/{found[0]['id']}/captions", params={"from": "corpus"}).status_code == 400


def test_a_vocabulary_with_what_no_tag_should_hold_is_refused_by_line(tmp_path: Path) -> None:
    def written(text: str) -> Path:
        path = tmp_path / "v.txt"
        path.write_text(text, encoding="utf-8")
        return path

    for text, reason in (("dog\nbell\x07\n", "line 2: a control"), ("cat\n\x1b[31mred\n", "line 2: a control"),
                         ("a\u202eb\n", "line 1: a control or format"), ("x" * 61 + "\n", "more than 60")):
        with pytest.raises(ClipdexError, match=reason):
            read_concepts(written(text))
    assert read_concepts(written("Red\nred\nRED car\r\nsea\u2028side\n# a comment\n")) == ["Red", "RED car", "sea side"]
    assert read_concepts(written("x" * config.VOCABULARY_MAX_CHARS + "\n")) == ["x" * 60]  # the limit itself is kept
    os.mkfifo(tmp_path / "fifo.txt")
    with pytest.raises(ClipdexError, match="not a file"):
        read_concepts(tmp_path / "fifo.txt")  # refused, not waited on
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as f:
        f.truncate(config.VOCABULARY_MAX_BYTES + 1)  # sparse: refused by its size, before a byte is read
    with pytest.raises(ClipdexError, match="larger than"):
        read_concepts(huge)


def test_a_librarys_own_vocabulary_is_not_called_built_in(cli, photos, shapes: Path) -> None:
    folder = photos(3)
    assert cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes).exit_code == 0
    described = json_output(cli("captions", next(folder.iterdir()), "-k", "3", "--json"))
    assert [h["source"] for h in described] == ["vocabulary"] * 3


def test_usage_errors_of_the_describe_options_exit_2(cli, photos) -> None:
    cli("index", photos(2), *SAMPLE)
    assert cli("captions", config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"], "--from", "bogus").exit_code == 2
    assert cli("index", "--vocabulary", "x.txt").exit_code == 2
    assert cli("search", "a", "--tag", "").exit_code == 2
