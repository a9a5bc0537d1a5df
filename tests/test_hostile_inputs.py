"""What probing the new features as a hostile or careless user found (session 4), each pinned by a test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load_file, save_file

from clipdex.cli.web import create_app
from clipdex.retrieval import config
from clipdex.retrieval.training.evaluate import recall_at_k
from clipdex.retrieval.library import Library
from tests.conftest import SAMPLE_ROWS
from tests.test_text_search import _words_image
from tests.test_web import LOCAL

TINY = ("--model", "clipdex-tiny", "--no-export")


def test_serve_never_shows_a_file_a_crafted_checkpoint_calls_its_report(cli, photos, library_dir: Path,
                                                                        tmp_path: Path, tiny) -> None:
    from safetensors import safe_open

    from clipdex.retrieval.models.checkpoint import CheckpointInfo, save_checkpoint
    import open_clip

    honest = tmp_path / "honest.safetensors"
    save_checkpoint(honest, tiny.model, CheckpointInfo("clipdex-tiny", open_clip.get_model_config("clipdex-tiny")))
    secret = tmp_path / "secret.html"
    secret.write_text("<html>not a report: private</html>")
    with safe_open(str(honest), framework="pt") as f:
        metadata = dict(f.metadata())
    info = json.loads(metadata["clipdex"])
    info["training"]["report"] = str(secret)
    crafted = tmp_path / "crafted.safetensors"
    save_file(load_file(str(honest)), str(crafted), metadata={**metadata, "clipdex": json.dumps(info)})
    assert cli("index", photos(2), "--model", crafted, "--no-export").exit_code == 0
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    assert client.get("/api/reports").json() == []
    assert client.get("/reports/0").status_code == 404


def test_finetune_refuses_options_that_can_only_diverge(cli, tmp_path: Path) -> None:
    pairs = config.SAMPLE_CAPTIONS
    for option, value in (("--weight-decay", "inf"), ("--lr", "nan"), ("--lr", "-1"), ("--lr", "0")):
        result = cli("finetune", pairs, "--model", "sample", "--max-steps", "1", option, value,
                     "-o", tmp_path / "x.safetensors")
        assert result.exit_code == 1 and "must be a finite number above 0" in result.stderr, (option, value)
    result = cli("finetune", pairs, "--model", "sample", "--max-steps", "1", "--report", tmp_path,
                 "-o", tmp_path / "x.safetensors")
    assert result.exit_code == 1 and "--report takes a file name ending in .html" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()  # refused before training


def test_a_diverged_model_is_never_a_perfect_recall() -> None:
    broken = np.full((4, 8), np.nan, dtype=np.float32)
    result = recall_at_k(broken, broken, [0, 1, 2, 3])
    assert all(v == 0.0 for direction in result.values() for v in direction.values())


def test_usage_errors_are_usage_errors(cli) -> None:
    for args in (["search", "--bogus"], ["search", "x", "-k", "abc"], ["search", "x", "-k", "0"],
                 ["finetune", "x", "--mix", "1.5"], ["watch", "x", "--settle", "inf"]):
        result = cli(*args)
        assert result.exit_code == 2 and "unexpected" not in result.output, args
    result = cli("search", "x", "--min-score", "nan")
    assert result.exit_code == 1 and "--min-score must be a finite number" in result.stderr


def test_control_characters_in_names_never_reach_the_terminal(cli, photos) -> None:
    folder = photos(1)
    shutil.copy(next(folder.iterdir()), folder / "x\x1b[31mred.png")
    assert cli("index", folder, *TINY).exit_code == 0
    table = cli("search", "a red circle", "-k", "2")
    assert "\x1b" not in table.stdout and "x\\x1b[31mred.png" in table.stdout
    raw = cli("search", "a red circle", "-k", "2", "-f")  # for pipes, paths stay exactly as they are
    assert "x\x1b[31mred.png" in raw.stdout


def test_an_ordinary_image_under_a_raw_name_is_read_as_what_it_is(cli, tmp_path: Path) -> None:
    folder = tmp_path / "camera"
    folder.mkdir()
    Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"]).convert("RGB").save(folder / "renamed.dng", "JPEG")
    report = json.loads(cli("index", folder, *TINY, "--json").stdout)
    assert (report["added"], report["failed"]) == (1, [])


def test_range_headers_outside_the_grammar_get_the_whole_file(cli, photos, library_dir: Path) -> None:
    folder = photos(1)
    assert cli("index", folder, *TINY).exit_code == 0
    data = next(folder.iterdir()).read_bytes()
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    for header in ("bytes=5-2", "bytes=1_0-2_0", "bytes=+1-+5", "bytes=--5", "bytes=0-1,4-5", "items=0-1"):
        response = client.get("/api/items/1/image", headers={"range": header})
        assert response.status_code == 200 and response.content == data, header
    assert client.get("/api/items/1/image", headers={"range": "bytes=-999999999"}).content == data


def test_a_subtracted_word_keeps_a_photo_out_of_the_text_matches(cli, tmp_path: Path) -> None:
    folder = tmp_path / "signs"
    folder.mkdir()
    _words_image("STOP CROSSWALK").save(folder / "a.png")  # two lines each: OCR keeps the words apart
    _words_image("STOP EVERYONE").save(folder / "b.png")
    assert cli("index", folder, "--model", "sample", "--no-export", "--ocr").exit_code == 0
    assert len(json.loads(cli("search", "stop", "--mode", "text", "--json").stdout)) == 2
    hits = json.loads(cli("search", "stop", "-", "crosswalk", "--mode", "text", "--json").stdout)
    assert [Path(h["path"]).name for h in hits] == ["b.png"]
