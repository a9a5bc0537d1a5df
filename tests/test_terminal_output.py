"""What reaches a terminal: file names, queries and captions printed literally (never as markup, never control
characters), null-separated paths exact for pipes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipdex.retrieval import config
from tests.conftest import SAMPLE_ROWS
from tests.helpers import SAMPLE, TINY, assert_one_line_error, search_hits


def test_newlines_and_c1_controls_in_names_never_reach_the_terminal(cli, photos) -> None:
    folder = photos(1)
    source = next(folder.iterdir())
    shutil.copy(source, folder / "a\nSPOOFED LINE.png")
    shutil.copy(source, folder / "b\x9b31mred.png")
    shutil.copy(source, folder / "c\u202egnp.exe.png")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    for args in (("-k", "5"), ("-k", "5", "--json")):
        out = cli("search", "a red circle", *args).stdout
        assert "\nSPOOFED" not in out and "\x9b" not in out and "\u202e" not in out, args
    error = cli("search", "--image", str(folder / "gone\nFORGED LINE.png")).output  # an error naming the file
    assert "\nFORGED" not in error and "gone\\x0aFORGED LINE.png" in error
    hits = search_hits(cli("search", "a red circle", "-k", "5", "--json"))
    assert {Path(h["path"]).name for h in hits} >= {"a\nSPOOFED LINE.png", "b\x9b31mred.png"}  # data kept exact
    assert "a\nSPOOFED LINE.png" in cli("search", "a red circle", "-k", "5", "-f").stdout  # -f stays exact


def test_control_characters_in_names_never_reach_the_terminal(cli, photos) -> None:
    folder = photos(1)
    shutil.copy(next(folder.iterdir()), folder / "x\x1b[31mred.png")
    assert cli("index", folder, *TINY).exit_code == 0
    table = cli("search", "a red circle", "-k", "2")
    assert "\x1b" not in table.stdout and "x\\x1b[31mred.png" in table.stdout
    raw = cli("search", "a red circle", "-k", "2", "-f")  # for pipes, paths stay exactly as they are
    assert "x\x1b[31mred.png" in raw.stdout


MARKUP_NAMES = ("[red]alarm[/red].png", "x[/i].jpg", "[/].png", "[/b]bold.png", "plain [link=https:x]y.png")


@pytest.mark.slow
def test_markup_in_file_names_and_queries_is_printed_literally(cli, library_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "marked"
    folder.mkdir()
    for n, name in enumerate(MARKUP_NAMES):  # a "/" in a name is a folder: "x[/i].jpg" is x[ / i].jpg
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"], folder / name)
    (folder / MARKUP_NAMES[0]).write_text("not an image: skipped, and its name printed")
    (folder / "broken[").mkdir()
    (folder / "broken[/i].jpg").write_bytes(b"\xff\xd8 truncated")
    indexed = cli("index", folder, *TINY)
    assert indexed.exit_code == 0, indexed.output
    assert f"skipped {folder / MARKUP_NAMES[0]}" in indexed.stderr and "broken[/i].jpg" in indexed.stderr
    table = cli("search", "a red circle", "-k", "10")
    assert table.exit_code == 0, table.output
    flat = table.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    for name in MARKUP_NAMES[1:]:
        assert name.replace(" ", "") in flat  # nothing bracketed dropped or styled away
    for query in ("[/]", "[red]", "[/b] a circle [bold]", "[link=x]y[/link]"):
        result = cli("search", query, "-k", "2")
        assert result.exit_code == 0 and query in result.stdout.replace("\n", "") + result.stderr, result.output
    missing = cli("search", "--image", tmp_path / "[/]nope.jpg")
    assert_one_line_error(missing, "[/]nope.jpg")


def test_null_separated_paths_survive_newlines_in_names(cli, tmp_path: Path) -> None:
    folder = tmp_path / "nl"
    folder.mkdir()
    names = ["two\nlines.png", "plain.png"]
    for n, name in enumerate(names):
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"], folder / name)
    cli("index", folder, *TINY)
    out = cli("search", "-f", "-0", "-k", "5", "a photo").stdout
    assert out.endswith("\0") and sorted(out.split("\0")[:-1]) == sorted(str(folder / n) for n in names)
