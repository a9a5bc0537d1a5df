"""The bundled sample model: the demo runs offline and makes sense, and near-duplicates group correctly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from clipdex.retrieval import config
from tests.conftest import SAMPLE_ROWS

CAPTION_OF = {str(config.SAMPLE_DATA_DIR / row["image"]): row["caption"] for row in SAMPLE_ROWS}


@pytest.mark.slow
def test_demo_runs_offline_and_its_answers_make_sense(cli, tmp_path: Path) -> None:
    result = cli("demo", "--out", tmp_path / "demo", "--json")
    assert result.exit_code == 0, result.output
    demo = json.loads(result.stdout)
    assert demo["indexed"]["added"] == len(SAMPLE_ROWS) and demo["indexed"]["failed"] == []
    red = next(s for s in demo["searches"] if s["query"] == "a red circle")
    captions = [CAPTION_OF[hit["path"]] for hit in red["results"]]
    assert all(" red " in caption for caption in captions), captions
    # shape is the sample model's weaker point (sample_data/README.md): the best hits, not all three, are circles
    assert "red circle" in captions[0] and sum("red circle" in caption for caption in captions) >= 2, captions
    described = demo["captions"]
    assert described["results"][0]["caption"] == described["true_caption"]
    heldout = demo["heldout_recall"]
    assert heldout["texts"] == 200
    assert heldout["text_to_image"]["R@1"] >= 0.8 and heldout["image_to_text"]["R@1"] >= 0.8
    again = cli("demo", "--out", tmp_path / "demo", "--json")  # a second run starts afresh
    assert again.exit_code == 0 and json.loads(again.stdout)["indexed"]["added"] == len(SAMPLE_ROWS)


def test_demo_refuses_a_folder_that_is_not_its_own(cli, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    result = cli("demo", "--out", tmp_path / "mine")
    assert result.exit_code == 1 and "holds files the demo did not write" in result.stderr
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"
    (tmp_path / "theirs").mkdir()  # names that only look like clipdex's, in a folder the demo never made
    for name in ("library.db-backup", "index.lock.txt", "old.faiss"):
        (tmp_path / "theirs" / name).write_text("precious")
    assert cli("demo", "--out", tmp_path / "theirs").exit_code == 1
    assert sorted(p.name for p in (tmp_path / "theirs").iterdir()) == ["index.lock.txt", "library.db-backup", "old.faiss"]


def test_planted_copies_join_their_originals_group(cli, tmp_path: Path) -> None:
    folder = tmp_path / "album"
    folder.mkdir()
    for row in SAMPLE_ROWS[:40]:
        shutil.copy(config.SAMPLE_DATA_DIR / row["image"], folder / Path(row["image"]).name)
    originals = [folder / Path(SAMPLE_ROWS[i]["image"]).name for i in (1, 7, 12)]
    planted: dict[Path, set[Path]] = {}
    for original in originals:
        image = Image.open(original).convert("RGB")
        w, h = image.size
        copies = {
            folder / f"{original.stem}-reencoded.jpg": image,
            folder / f"{original.stem}-resized.png": image.resize((int(w * 0.6), int(h * 0.6))),
            folder / f"{original.stem}-cropped.png": image.crop((int(w * 0.03), int(h * 0.03), int(w * 0.97), int(h * 0.97))),
        }
        for path, picture in copies.items():
            picture.save(path, quality=60) if path.suffix == ".jpg" else picture.save(path)
        planted[original] = set(copies)
    assert cli("index", folder, "--model", "sample").exit_code == 0
    result = cli("duplicates", "--json")
    assert result.exit_code == 0, result.output
    groups = [{Path(m["path"]) for m in group} for group in json.loads(result.stdout)]
    for original, copies in planted.items():
        group = next(g for g in groups if original in g)
        assert copies <= group, (original.name, sorted(p.name for p in group))
        assert group == copies | {original}, sorted(p.name for p in group)  # nothing unrelated
    assert all({"path", "size", "width", "height", "id"} <= set(m) for m in json.loads(result.stdout)[0])
    for group in json.loads(result.stdout):  # the suggested copy: the most pixels, then bytes (never a smaller one)
        keep, *others = group
        assert keep["keep"] and keep["reason"] and not keep["path"].endswith(("-resized.png", "-cropped.png")), group
        assert all((m["width"] * m["height"], m["size"]) <= (keep["width"] * keep["height"], keep["size"]) for m in others)
        assert not any(m["keep"] for m in others)
        assert all(m["similarity"] is None or 0.95 <= m["similarity"] <= 1.0 for m in others), others
        assert any(m["similarity"] is not None for m in others)


def test_short_colour_and_shape_queries_find_that_shape() -> None:
    """Full-caption recall can be high with shape ignored (an earlier sample model scored 0.25, chance, here)."""
    from clipdex.sample_data.short_queries import short_query_precision

    both, colour = short_query_precision("sample")
    assert colour == 1.0 and both >= 0.6
