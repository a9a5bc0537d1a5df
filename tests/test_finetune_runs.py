"""Fine-tuning runs people can watch and trust: per-epoch validation, the best epoch kept, early stopping,
a metrics log, exact weight mixing, an HTML report that opens in a real browser, Ctrl-C then --resume, kill -9.

The bundled sample model and sample pairs throughout; the planted bad run trains on captions rotated among the
training images (the held-out pairs stay true), so each epoch makes held-out recall worse than the one before.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from clipdex.retrieval.describe.pairs import Pair, read_pairs
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.checkpoint import load_optimizer_state, load_weights, optimizer_path, read_checkpoint_info
from clipdex.retrieval.models.openclip.factory import load_encoder
from clipdex.retrieval.training.data import split_pairs
from clipdex.retrieval.training.evaluate import evaluate_pairs
from clipdex.retrieval.training.finetune import mean_r1, resume_path
from clipdex.retrieval.training.metrics_log import metrics_path, read_metrics
from clipdex.retrieval.training.mixing import mix_weights
from tests.helpers import LOCAL, QUICK, SAMPLE, clipdex_command, sample_pairs, write_pairs


@pytest.fixture
def misleading_pairs(tmp_path: Path) -> Path:
    """120 sample pairs whose training captions are rotated by 7 (wrong), held-out ones (seed 0, 25%) true."""
    pairs = sample_pairs(120)
    train, val = split_pairs(pairs, 0.25, seed=0)
    captions = [p.caption for p in train]
    wrong = [Pair(p.image, c) for p, c in zip(train, captions[7:] + captions[:7])]
    return write_pairs(tmp_path / "misleading.csv", wrong + val)


def _held_out_recall(checkpoint: Path, pairs_file: Path) -> float:
    _, val = split_pairs(read_pairs(pairs_file), 0.25, seed=0)
    return mean_r1(evaluate_pairs(load_encoder(str(checkpoint), None, "cpu"), val))


@pytest.mark.slow
def test_each_epoch_is_validated_and_logged_and_the_best_one_is_kept(cli, misleading_pairs, tmp_path: Path) -> None:
    best_out, last_out = tmp_path / "best.safetensors", tmp_path / "last.safetensors"
    run = cli("finetune", misleading_pairs, *SAMPLE, *QUICK, "--epochs", "3", "--lr", "1e-3", "-o", best_out, "--json")
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    scores = [epoch["mean_r1"] for epoch in result["epochs"]]
    assert [epoch["epoch"] for epoch in result["epochs"]] == [1, 2, 3]
    assert scores[0] > scores[-1] + 0.1, scores  # the plant: training on wrong captions makes every epoch worse
    assert result["best_epoch"] == 1 + scores.index(max(scores)) == 1
    assert _held_out_recall(best_out, misleading_pairs) == pytest.approx(max(scores), abs=1e-6)
    log = read_metrics(metrics_path(best_out))
    steps = [r for r in log if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, result["steps"] + 1))
    assert all({"loss", "lr", "logit_scale", "seconds", "images_per_s", "epoch"} <= r.keys() for r in steps)
    assert [r["mean_r1"] for r in log if r["event"] == "epoch"] == scores

    last = cli("finetune", misleading_pairs, *SAMPLE, *QUICK, "--epochs", "3", "--lr", "1e-3", "--keep", "last",
               "-o", last_out, "--json")
    assert last.exit_code == 0, last.output
    assert _held_out_recall(last_out, misleading_pairs) == pytest.approx(scores[-1], abs=1e-6)


@pytest.mark.slow
def test_patience_stops_a_run_that_stopped_improving(cli, misleading_pairs, tmp_path: Path) -> None:
    out = tmp_path / "patient.safetensors"
    run = cli("finetune", misleading_pairs, *SAMPLE, *QUICK, "--epochs", "5", "--lr", "1e-3", "--patience", "1",
              "-o", out, "--json")
    result = json.loads(run.stdout)
    assert result["stopped_early"] and [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert result["steps"] == 2 * result["epochs"][0]["step"] and result["best_epoch"] == 1


@pytest.mark.slow
def test_every_n_steps_evaluation(cli, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", sample_pairs(80))
    out = tmp_path / "often.safetensors"
    assert cli("finetune", pairs, *SAMPLE, *QUICK, "--max-steps", "6", "--eval-every", "2", "-o", out).exit_code == 0
    evaluated = [r["step"] for r in read_metrics(metrics_path(out)) if r["event"] in ("eval", "epoch")]
    assert evaluated == [2, 3, 4, 6]  # every 2 steps, and at each epoch's end (3 steps an epoch)


def test_mixing_arithmetic_is_exact() -> None:
    generator = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(64, 32, generator=generator), "n": torch.tensor([3])}
    tuned = {"w": torch.randn(64, 32, generator=generator), "n": torch.tensor([3])}
    assert torch.equal(mix_weights(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(mix_weights(start, tuned, 1.0)["w"], tuned["w"])
    assert torch.equal(mix_weights(start, tuned, 0.5)["w"], 0.5 * start["w"] + 0.5 * tuned["w"])
    assert torch.equal(mix_weights(start, tuned, 0.25)["w"], 0.75 * start["w"] + 0.25 * tuned["w"])
    assert torch.equal(mix_weights(start, tuned, 0.5)["n"], start["n"])
    with pytest.raises(ClipdexError, match="between 0 and 1"):
        mix_weights(start, tuned, 1.5)


@pytest.mark.slow
def test_mix_writes_the_start_the_fine_tuned_or_their_mean(cli, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", sample_pairs(64))
    keep = write_pairs(tmp_path / "keep.csv", sample_pairs(200)[150:])
    common = (*SAMPLE, *QUICK, "--max-steps", "3", "--lr", "1e-3", "--seed", "3")
    written = {}
    for mix in ("0", "0.5", "1"):
        out = tmp_path / f"mix-{mix}.safetensors"
        run = cli("finetune", pairs, *common, "--mix", mix, "--keep-pairs", keep, "-o", out, "--json")
        assert run.exit_code == 0, run.output
        written[mix] = load_weights(out)
        table = json.loads(run.stdout)["mix_table"]
        assert [row["alpha"] for row in table] == [0, 0.25, 0.5, 0.75, 1]
        assert all(row["keep"]["texts"] == 50 and row["held_out"] for row in table)
    start = load_encoder("sample", None, "cpu").model.state_dict()
    tuned = written["1"]
    assert any(not torch.equal(start[k], tuned[k]) for k in tuned)  # training did move the weights
    for name, value in tuned.items():
        assert torch.equal(written["0"][name], start[name]), name
        if value.is_floating_point():
            assert torch.equal(written["0.5"][name], 0.5 * start[name] + 0.5 * value), name
    assert optimizer_path(tmp_path / "mix-0.5.safetensors").exists() is False  # mixed weights: no optimizer state
    evaluated = cli("eval", pairs, "--model", tmp_path / "mix-0.5.safetensors", "--json")
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["texts"] == 64


@pytest.mark.slow
def test_the_report_shows_curves_recall_and_examples_in_chromium(cli, misleading_pairs, browser, tmp_path: Path) -> None:
    report = tmp_path / "report <b>.html"
    run = cli("finetune", misleading_pairs, *SAMPLE, *QUICK, "--epochs", "2", "--lr", "1e-3",
              "-o", tmp_path / "ft.safetensors", "--report", report)
    assert run.exit_code == 0, run.output
    assert f"report: {report.resolve().as_uri()}" in run.output
    text = report.read_text()
    assert "<script" not in text and text.count("data:image/svg+xml") == 2 and "Retrieval examples" in text
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(report.resolve().as_uri())
    images = page.locator("img")
    assert images.count() >= 2 + 2 * 8 * 5 // 2  # two plots, then thumbnails before and after
    assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator(".row .true").count() >= 1  # the true image is marked
    assert "rank" in page.locator(".caption").first.inner_text()
    assert problems == []


def _finetune_process(*args) -> subprocess.Popen:
    return subprocess.Popen(clipdex_command(None, "finetune", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _steps_logged(out: Path) -> int:
    path = metrics_path(out)
    return sum(1 for r in read_metrics(path) if r["event"] == "step") if path.is_file() else 0


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_that_resumes_to_the_same_step_count(cli, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", sample_pairs(160))
    common = (*SAMPLE, *QUICK, "--epochs", "3", "--lr", "1e-4", "--workers", "0")
    whole = cli("finetune", pairs, *common, "-o", tmp_path / "whole.safetensors", "--json")
    total = json.loads(whole.stdout)["steps"]
    out = tmp_path / "cut.safetensors"
    process = _finetune_process(pairs, *common, "-o", out)
    deadline = time.time() + 120
    while _steps_logged(out) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and f"--resume {resume_path(out)}" in stderr
    done = read_checkpoint_info(resume_path(out)).training["step"]
    assert 3 <= done < total and load_optimizer_state(resume_path(out))["step"] == done
    resumed = cli("finetune", pairs, *common, "-o", out, "--resume", resume_path(out), "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["steps"] == total
    assert [r["step"] for r in read_metrics(metrics_path(out)) if r["event"] == "step"] == list(range(1, total + 1))
    assert not resume_path(out).exists()  # finished: nothing left to resume


@pytest.mark.slow
def test_kill_9_during_finetune_leaves_the_old_or_a_whole_new_checkpoint(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", sample_pairs(96))
    out = tmp_path / "ft.safetensors"
    common = (*SAMPLE, *QUICK, "--epochs", "2", "--lr", "1e-4", "--workers", "0", "-o", out)
    first = _finetune_process(pairs, *common)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    rng = random.Random(18)
    for round_ in range(4):
        process = _finetune_process(pairs, *common, "--seed", round_ + 1)
        time.sleep(rng.uniform(2.0, 7.0))  # imports, training, evaluation or the saves
        process.send_signal(signal.SIGKILL)
        process.wait()
        info = read_checkpoint_info(out)  # whole: its metadata reads and its weights load
        load_encoder(str(out), None, "cpu")
        try:
            assert load_optimizer_state(out)["step"] == info.training["step"]  # tied to exactly these weights
        except ClipdexError as exc:
            assert "belongs to another save" in str(exc)  # or refused, never mistaken for this save's


@pytest.mark.slow
def test_serve_lists_the_reports_of_the_library_s_models(cli, photos, library_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from clipdex.cli.web import create_app
    from clipdex.retrieval.library import Library

    assert cli("index", photos(4), *SAMPLE, "--no-export").exit_code == 0
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    assert client.get("/api/reports").json() == []  # the bundled model was not made with a report
    pairs = write_pairs(tmp_path / "pairs.csv", sample_pairs(64))
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    common = (*QUICK, "--max-steps", "2", "--lr", "1e-5")
    assert cli("finetune", pairs, *SAMPLE, *common, "-o", first, "--report", tmp_path / "first.html").exit_code == 0
    assert cli("finetune", pairs, "--model", first, *common, "-o", second, "--report",
               tmp_path / "second.html").exit_code == 0
    assert cli("index", "--reembed", "--model", second, "--no-export").exit_code == 0
    listed = client.get("/api/reports").json()
    assert [r["name"] for r in listed] == ["second.html", "first.html"]  # this model's, then its start's
    page = client.get(listed[1]["url"])
    assert page.status_code == 200 and "Fine-tuning report: first.safetensors" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/reports/2").status_code == 404 and client.get("/reports/-1").status_code == 422
