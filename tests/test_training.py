"""Fine-tuning, Recall@K and re-embedding, on the tiny model and real sample images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipdex.retrieval import config
from clipdex.retrieval.describe.pairs import Pair, read_pairs
from clipdex.retrieval.media.images import open_image
from clipdex.retrieval.models.checkpoint import read_checkpoint_info
from clipdex.retrieval.models.openclip.factory import load_encoder
from clipdex.retrieval.training.data import epoch_batches, split_pairs
from clipdex.retrieval.training.evaluate import evaluate_pairs, recall_at_k
from clipdex.retrieval.training.finetune import finetune
from clipdex.retrieval.training.options import FinetuneOptions
from tests.conftest import SAMPLE_ROWS
from tests.helpers import brute_force, search_hits


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_recall_matches_a_hand_computed_case_with_several_captions_per_image() -> None:
    images = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # captions 0 and 1 describe image 0, caption 2 image 1, caption 3 image 2
    texts = _unit([[0.9, 0.1, 0], [0.1, 0.9, 0], [0, 0.2, 0.98], [0, 0, 1]])
    result = recall_at_k(images, texts, [0, 0, 1, 2], ks=(1, 2))
    # text→image ranks of the own image: 0, 1, 1, 0
    assert result["text_to_image"] == {"R@1": 0.5, "R@2": 1.0}
    # image→text: image 0 finds caption 0 first; image 1's caption 2 is behind caption 1; image 2 finds caption 3
    assert result["image_to_text"] == {"R@1": pytest.approx(2 / 3), "R@2": 1.0}


def _pairs_file(folder: Path, rows: list[dict], extra: dict[int, str] | None = None) -> Path:
    """A pairs CSV pointing into sample_data; `extra` adds a second caption to some rows."""
    path = folder / "pairs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "caption"))
        for n, row in enumerate(rows):
            image = config.SAMPLE_DATA_DIR / row["image"]
            writer.writerow((str(image), row["caption"]))
            if extra and n in extra:
                writer.writerow((str(image), extra[n]))
    return path


def test_eval_command_reports_recall_of_the_model(cli, tmp_path: Path, tiny) -> None:
    pairs_path = _pairs_file(tmp_path, SAMPLE_ROWS[:12], extra={0: "a picture", 5: "shapes"})
    result = cli("eval", pairs_path, "--model", "clipdex-tiny", "--json")
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)
    assert (reported["images"], reported["texts"]) == (12, 14)
    expected = evaluate_pairs(tiny, read_pairs(pairs_path))
    assert reported["text_to_image"] == expected["text_to_image"]
    assert reported["image_to_text"] == expected["image_to_text"]


def test_grouped_pairs_train_in_one_batch_and_are_held_out_together(tmp_path: Path) -> None:
    path = tmp_path / "grouped.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "caption", "group"))
        for n, row in enumerate(SAMPLE_ROWS[:30]):  # groups of three, and six pairs with no group
            writer.writerow((str(config.SAMPLE_DATA_DIR / row["image"]), row["caption"], n // 3 if n < 24 else ""))
    pairs = read_pairs(path)
    assert pairs[0].group == "0" and pairs[29].group is None
    keys = [p.batch_key for p in pairs]
    for epoch in range(3):
        batches = epoch_batches(keys, 8, seed=1, epoch=epoch)
        assert all(2 <= len(b) <= 8 for b in batches) and len(batches) >= 3
        where = {i: n for n, batch in enumerate(batches) for i in batch}
        for group in range(8):
            members = [i for i in range(group * 3, group * 3 + 3) if i in where]
            assert len({where[i] for i in members}) <= 1
            assert len(members) in (0, 3)  # a group is used whole or (last, partial batch) not at all
    train, val = split_pairs(pairs, 0.3, seed=0)
    assert not {p.batch_key for p in train} & {p.batch_key for p in val} and val


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_and_raise_train_recall(tmp_path: Path) -> None:
    import open_clip

    pairs = [Pair(config.SAMPLE_DATA_DIR / r["image"], r["caption"]) for r in SAMPLE_ROWS[:16]]
    before_model = load_encoder("clipdex-tiny", None, "cpu")
    loss_fn = open_clip.ClipLoss()

    def train_loss(encoder) -> float:
        with torch.no_grad():
            images = torch.stack([encoder.transform(open_image(p.image)) for p in pairs])
            text = encoder.tokenizer([p.caption for p in pairs])
            return loss_fn(
                encoder.model.encode_image(images, normalize=True),
                encoder.model.encode_text(text, normalize=True),
                encoder.model.logit_scale.exp(),
            ).item()

    before = evaluate_pairs(before_model, pairs)
    options = FinetuneOptions(
        model="clipdex-tiny", pretrained=None, out=tmp_path / "ft.safetensors", max_steps=40, batch_size=16,
        lr=2e-3, warmup=4, weight_decay=0.0, val_fraction=0.0, seed=0, workers=0, device="cpu",
    )
    result = finetune(pairs, options)
    after_model = load_encoder(str(options.out), None, "cpu")
    after = evaluate_pairs(after_model, pairs)
    assert result.steps == 40
    assert train_loss(after_model) < train_loss(before_model) * 0.7
    assert after["text_to_image"]["R@1"] > before["text_to_image"]["R@1"]
    assert after["image_to_text"]["R@1"] > before["image_to_text"]["R@1"]
    assert read_checkpoint_info(options.out).training["step"] == 40


def test_resume_continues_the_step_count(tmp_path: Path) -> None:
    pairs = [Pair(config.SAMPLE_DATA_DIR / r["image"], r["caption"]) for r in SAMPLE_ROWS[:12]]
    first = FinetuneOptions(
        model="clipdex-tiny", pretrained=None, out=tmp_path / "a.safetensors", max_steps=3, batch_size=4,
        val_fraction=0.0, workers=0, device="cpu", lr=1e-3,
    )
    assert finetune(pairs, first).steps == 3
    second = FinetuneOptions(
        model="clipdex-tiny", pretrained=None, out=tmp_path / "b.safetensors", max_steps=5, batch_size=4,
        val_fraction=0.0, workers=0, device="cpu", lr=1e-3, resume=first.out,
    )
    taken: list[int] = []
    assert finetune(pairs, second, on_event=lambda e: taken.append(e["step"]) if e["event"] == "step" else None).steps == 5
    assert taken == [4, 5]  # only the two missing steps ran, on the resumed schedule
    assert read_checkpoint_info(second.out).training["step"] == 5


def test_finetune_cli_prints_held_out_recall_and_warns_when_worse(cli, tmp_path: Path) -> None:
    pairs_path = _pairs_file(tmp_path, SAMPLE_ROWS[:20])
    out = tmp_path / "cli.safetensors"
    result = cli(
        "finetune", pairs_path, "--model", "clipdex-tiny", "--max-steps", "2", "--batch-size", "8",
        "--val-fraction", "0.25", "--out", out, "--json",
    )
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout)
    assert reported["steps"] == 2 and reported["val_pairs"] == 5 and reported["train_pairs"] == 15
    assert set(reported["before"]) >= {"text_to_image", "image_to_text"}
    worse = reported["after"]["text_to_image"]["R@1"] < reported["before"]["text_to_image"]["R@1"]
    assert any("WORSE" in w for w in reported["warnings"]) == (
        worse or reported["after"]["image_to_text"]["R@1"] < reported["before"]["image_to_text"]["R@1"]
    )
    assert out.is_file()


@pytest.mark.slow
def test_reembed_switches_the_library_to_the_new_model(cli, library_dir: Path, photos, tmp_path: Path) -> None:
    folder = photos(6)
    cli("index", folder, "--model", "clipdex-tiny")
    corpus = tmp_path / "c.txt"
    corpus.write_text("a red circle\na blue square\n")
    cli("add-captions", corpus)
    ckpt = tmp_path / "ft.safetensors"
    finetune(
        [Pair(config.SAMPLE_DATA_DIR / r["image"], r["caption"]) for r in SAMPLE_ROWS[:8]],
        FinetuneOptions(model="clipdex-tiny", pretrained=None, out=ckpt, max_steps=3, batch_size=4,
                        val_fraction=0.0, workers=0, device="cpu", lr=1e-2),
    )
    assert cli("search", "x", "--json").exit_code == 0  # until re-embedded, the old model still answers
    result = cli("index", "--model", ckpt, "--reembed", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reembedded"] == {"images": 6, "captions": 2}
    status = json.loads(cli("status", "--json").stdout)
    assert status["model"] == str(ckpt) and status["counts"]["image"] == 6
    new_model = load_encoder(str(ckpt), None, "cpu")
    image = sorted(folder.iterdir())[0]
    hit = search_hits(cli("search", "--image", image, "-k", "1", "--json"))[0]
    assert hit["path"] == str(image) and hit["score"] == pytest.approx(1.0, abs=1e-4)
    text_hits = search_hits(cli("search", "a red circle", "-k", "6", "--json"))
    query = new_model.encode_texts(["a red circle"])[0]

    assert [h["id"] for h in text_hits] == brute_force(library_dir, query, 6)


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
