"""Results that explain themselves (issue 44): each hit says why it is there and the score shown follows the
order; duplicates are confirmed on the pixels and keep the original over its upscale, sizes in kB/MB; and the
papercuts: status lists failed files, a tag no photo has is said with a hint, --sort date shows dates, the demo
prints no escape, export-xmp tells created sidecars from updated ones."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from bench.duplicates_quality import document
from tests.helpers import clipdex_command, json_output, search_hits


def _wide(library_dir: Path, *args) -> str:
    """The real CLI's table on a terminal wide enough for every column."""
    import os
    import subprocess

    done = subprocess.run(clipdex_command(library_dir, *args), capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "CLIPDEX_NO_SERVER": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_hit_says_why_and_the_shown_score_follows_the_order(cli, photos, library_dir: Path) -> None:
    folder = photos(12)
    sorted(folder.iterdir())[5].rename(folder / "screenshot.png")
    cli("index", folder, "--model", "sample")
    hits = search_hits(cli("search", "screenshot", "-k", "12", "--json"))
    named = next(h for h in hits if h["path"].endswith("/screenshot.png"))
    assert hits[0] is named and "file name" in named["why"]
    assert all(h["why"] == ["picture"] for h in hits[1:])
    ranks = [h["rank_score"] for h in hits]
    assert ranks == sorted(ranks, reverse=True) and all(0 < r <= 1 for r in ranks)
    table = _wide(library_dir, "search", "screenshot", "-k", "3")
    assert "why" in table and "picture score" in table and "file name" in table
    shown = [float(line.split("│")[2]) for line in table.splitlines() if line.count("│") > 4]
    assert shown == sorted(shown, reverse=True) and len(shown) == 3  # the score column never rises down the list
    clip_only = search_hits(cli("search", "screenshot", "--mode", "clip", "--json"))
    assert all(h["why"] == ["picture"] and "rank_score" not in h for h in clip_only)


def test_different_documents_never_group_and_an_upscale_is_not_kept(cli, tmp_path: Path) -> None:
    import random

    folder = tmp_path / "docs"
    folder.mkdir()
    rng = random.Random(5)
    for n in range(4):  # four invoices on one layout, different text: CLIP embeds them alike
        document(rng, "invoice").save(folder / f"invoice{n}.png")
    original = document(rng, "boarding pass")
    original.save(folder / "pass.png")
    original.resize((original.width * 3, original.height * 3), Image.Resampling.BICUBIC).save(folder / "pass-3x.png")
    original.save(folder / "pass-copy.jpg", quality=70)
    cli("index", folder, "--model", "sample")
    groups = json_output(cli("duplicates", "--threshold", "0.8", "--json"))
    names = [{Path(m["path"]).name for m in group} for group in groups]
    assert names == [{"pass.png", "pass-3x.png", "pass-copy.jpg"}]
    keep = groups[0][0]
    assert Path(keep["path"]).name != "pass-3x.png" and "upscale" in keep["reason"]  # not the most pixels
    shown = cli("duplicates", "--threshold", "0.8")
    assert " kB" in shown.stdout and str(keep["size"]) not in shown.stdout


def test_status_lists_failed_files_and_has_no_empty_header(cli, photos) -> None:
    folder = photos(3)
    (folder / "broken.png").write_bytes(b"not a picture")
    cli("index", folder, "--model", "sample")
    listed = cli("status", "--failed")
    assert listed.exit_code == 0 and "broken.png" in listed.stdout and "cannot" in listed.stdout
    assert [f["path"] for f in json_output(cli("status", "--failed", "--json"))["failed"]] == [str(folder / "broken.png")]
    table = cli("status").stdout
    assert "status --failed" in table and "┃" not in table  # no header row of empty column names


def test_a_tag_no_photo_has_is_an_error_naming_what_to_do(cli, photos) -> None:
    cli("index", photos(3), "--model", "sample")
    result = cli("search", "red", "--tag", "red")
    assert result.exit_code == 1 and "no photo has the tag 'red'" in result.stderr and "--tags" in result.stderr
    assert "\n" not in result.stderr.strip()


def test_sort_by_date_shows_the_dates(cli, photos) -> None:
    cli("index", photos(3), "--model", "sample")
    table = cli("search", "a red circle", "--sort", "date", "-k", "3").stdout
    assert "date" in table and table.count("20") >= 3


def test_the_demo_prints_no_escape(cli, tmp_path: Path) -> None:
    result = cli("demo", "--out", tmp_path / "demo")
    assert result.exit_code == 0 and "\\x0a" not in result.stderr and "\\x0a" not in result.stdout


def test_export_xmp_says_created_apart_from_updated(cli, photos) -> None:
    folder = photos(3)
    cli("index", folder, "--model", "sample", "--tags")
    first = cli("export-xmp")
    assert first.exit_code == 0 and "created 3 sidecars, updated 0" in first.stderr, first.stderr
    assert json.loads(cli("export-xmp", "--json").stdout)["unchanged"] == 3
