"""Models as self-describing folders (Immich's layout) run with no torch: the bundled sample, a folder exported
elsewhere with a fixed batch and int32 ids, one with a multilingual tokenizer, one from the Hugging Face cache;
a library stays bound to the files of its folder; a model that needs torch says so in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clipdex.retrieval import config
from tests.conftest import SAMPLE_ROWS
from tests.helpers import without_torch, search_hits

def _copy_sample(target: Path) -> Path:
    shutil.copytree(config.SAMPLE_MODEL_FOLDER, target)
    return target


def _immich_folder(target: Path) -> Path:
    """The sample model as Immich publishes models: its config.json without clipdex's section, an image tower
    with a fixed batch of 1, a text tower taking exactly the context's int32 ids, padded with the end token."""
    import onnx

    folder = _copy_sample(target)
    values = json.loads((folder / "config.json").read_text())
    values.pop("clipdex")
    (folder / "config.json").write_text(json.dumps(values))
    for tower, fixed in (("visual", [1]), ("textual", [1, values["text_cfg"]["context_length"]])):
        model = onnx.load(str(folder / tower / "model.onnx"))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for dim, size in zip(dims, fixed):
            dim.ClearField("dim_param")
            dim.dim_value = size
        onnx.save(model, str(folder / tower / "model.onnx"))
    (folder / "textual" / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<end_of_text>"}))
    return folder


def _multilingual_folder(target: Path) -> Path:
    """The sample model's towers with an XLM-RoBERTa-style tokenizer (unigram pieces, <s> … </s>, <pad> = 1)
    trained here on captions in three languages."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder = _copy_sample(target)
    sentences = [row["caption"] for row in SAMPLE_ROWS] + [
        "ein roter Kreis auf weißem Grund", "zwei blaue Quadrate", "un triangle jaune", "赤い丸", "青い四角形",
    ] * 3
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(sentences, trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    assert tokenizer.token_to_id("<pad>") == 1
    tokenizer.save(str(folder / "textual" / "tokenizer.json"))
    (folder / "textual" / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    return folder


@pytest.mark.slow
def test_the_demo_runs_without_torch_and_agrees_with_torch(tmp_path: Path) -> None:
    from clipdex.retrieval.training.evaluate import evaluate_pairs
    from clipdex.retrieval.models.openclip.factory import load_encoder
    from clipdex.retrieval.describe.pairs import read_pairs
    from clipdex.sample_data.synth import HELDOUT_SEED, heldout_scenes, write_set

    done = without_torch("demo", "--out", tmp_path / "demo", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    light = json.loads(done.stdout)["heldout_recall"]
    pairs = read_pairs(write_set(tmp_path / "heldout", heldout_scenes(), HELDOUT_SEED))
    reference = evaluate_pairs(load_encoder("sample", None, "cpu"), pairs)
    for direction in ("text_to_image", "image_to_text"):
        for k in ("R@1", "R@5", "R@10"):
            assert abs(light[direction][k] - reference[direction][k]) <= 0.01


@pytest.mark.slow
def test_an_immich_layout_folder_gives_the_prepared_models_vectors(tmp_path: Path, photos) -> None:
    from clipdex.retrieval.media.images import open_image
    from clipdex.retrieval.models.loading import load_model

    folder = _immich_folder(tmp_path / "ViT-sample__immich")
    library = tmp_path / "library"
    pictures = photos(6)
    done = without_torch("-L", library, "index", pictures, "--model", folder)
    assert done.returncode == 0 and "added 6" in done.stderr, done.stdout + done.stderr[-2000:]
    query = SAMPLE_ROWS[2]["caption"]
    found = search_hits(without_torch("-L", library, "search", query, "--json", "--mode", "clip"))
    assert Path(found[0]["path"]).name == Path(SAMPLE_ROWS[2]["image"]).name
    described = without_torch("-L", library, "captions", pictures / Path(SAMPLE_ROWS[0]["image"]).name, "--json")
    assert described.returncode == 0 and json.loads(described.stdout)

    immich = load_model(str(folder), None, "cpu")
    prepared = load_model(str(config.SAMPLE_MODEL), None, "cpu")  # made from the weights with torch
    assert immich.image.fixed_batch == 1 and immich.text.fixed_length and immich.text.dtype == np.int32
    images = [open_image(pictures / Path(row["image"]).name, immich.image_size) for row in SAMPLE_ROWS[:6]]
    assert (immich.encode_images(images) * prepared.encode_images(images)).sum(axis=1).min() >= 0.999
    texts = [row["caption"] for row in SAMPLE_ROWS[:8]] + ["snow", " ".join(["a long query"] * 40)]
    assert (immich.encode_texts(texts) * prepared.encode_texts(texts)).sum(axis=1).min() >= 0.999


def test_a_multilingual_tokenizer_goes_through_the_same_path(tmp_path: Path, photos) -> None:
    from tokenizers import Tokenizer

    from clipdex import api
    from clipdex.retrieval.models.loading import load_model

    folder = _multilingual_folder(tmp_path / "xlm-style")
    library = tmp_path / "library"
    assert without_torch("-L", library, "index", photos(5), "--model", folder).returncode == 0
    done = without_torch("-L", library, "search", "ein roter Kreis", "--json", "--mode", "clip")
    assert done.returncode == 0, done.stderr[-2000:]
    hits = search_hits(done)

    model = load_model(str(folder), None, "cpu")
    queries = ["ein roter Kreis", "赤い丸 und zwei blaue Quadrate"]
    reference = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json"))
    ids = model.text.ids(queries)
    for row, query in zip(ids, queries):
        expected = reference.encode(query).ids
        assert expected[0] == 0 and expected[-1] == 2  # <s> … </s>, as the folder's tokenizer says
        assert row.tolist() == expected + [1] * (ids.shape[1] - len(expected))  # padded with <pad>
    session = model.text.session
    raw = session.run(None, {"text": ids})[0]
    assert np.allclose(model.encode_texts(queries), raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    vectors = api.search(api.open_library(library), "ein roter Kreis", 5, mode="clip")
    assert [h.score for h in vectors] == pytest.approx([h["score"] for h in hits], abs=1e-4)


@pytest.mark.slow
def test_a_hub_name_runs_from_the_local_cache_and_a_missing_one_fails_fast(tmp_path: Path, photos) -> None:
    hub = tmp_path / "hf-cache"
    repo = hub / "models--someone--clip-sample"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    _copy_sample(repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567")
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    library = tmp_path / "library"
    done = without_torch("-L", library, "index", photos(3), "--model", "someone/clip-sample", env=env)
    assert done.returncode == 0 and "added 3" in done.stderr, done.stderr[-2000:]
    status = json.loads(without_torch("-L", library, "status", "--json", env=env).stdout)
    assert status["model"] == "someone/clip-sample (at 0123456789ab)" and status["prepared"]

    started = time.perf_counter()
    missing = without_torch("-L", tmp_path / "other", "index", photos(1, "more"), "--model", "nobody/missing",
                            env={"HF_HUB_CACHE": str(hub)})
    assert time.perf_counter() - started < 15  # the process's own start-up included; the hub probe is ≤ 1.5 s
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "nobody/missing is not in the local Hugging Face cache" in missing.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_a_library_is_bound_to_its_folders_files(tmp_path: Path, photos) -> None:
    folder = _copy_sample(tmp_path / "model")
    library = tmp_path / "library"
    pictures = photos(3)
    assert without_torch("-L", library, "index", pictures, "--model", folder).returncode == 0
    other = _immich_folder(tmp_path / "another-export")
    refused = without_torch("-L", library, "index", pictures, "--model", other)
    assert refused.returncode == 1 and "this library was built with" in refused.stderr
    preprocess = folder / "visual" / "preprocess_cfg.json"
    preprocess.write_text(preprocess.read_text() + " ")  # the same model? its files say otherwise
    changed = without_torch("-L", library, "search", "a red circle")
    assert changed.returncode == 1 and "changed since this library was built" in changed.stderr


def test_a_model_that_needs_torch_says_what_to_do_and_writes_nothing(tmp_path: Path, photos) -> None:
    library = tmp_path / "library"
    started = time.perf_counter()
    done = without_torch("-L", library, "index", photos(2), "--model", "clipdex-tiny",
                         env={config.CACHE_ENV: str(tmp_path / "cache")})  # not prepared here
    assert time.perf_counter() - started < 15
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("LOADED")]
    assert len(message) == 1 and "pip install 'clipdex[torch]'" in message[0] and "--model PATH" in message[0]
    assert not library.exists()


@pytest.mark.slow
def test_a_damaged_prepared_folder_is_prepared_again(tmp_path: Path, photos, monkeypatch) -> None:
    from clipdex.retrieval.models.identity import ModelIdentity
    from clipdex.retrieval.models.loading import load_model
    from clipdex.retrieval.models.prepared import open_prepared, prepared_path

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    model = load_model("clipdex-tiny", None, "cpu")
    identity = model.identity
    tower = prepared_path(identity, "fp32") / "visual" / "model.onnx"
    data = bytearray(tower.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)  # weights damaged, the file still parses
    tower.write_bytes(bytes(data))
    assert open_prepared(identity, "fp32") is None
    again = load_model("clipdex-tiny", None, "cpu")
    assert open_prepared(ModelIdentity(identity.name, None, identity.fingerprint, 0), "fp32") is not None
    assert np.isfinite(again.encode_texts(["a red circle"])).all()


def test_a_tower_that_gives_nan_stores_nothing(tmp_path: Path, photos) -> None:
    """Damaged weights that still parse give NaN: the index run stops with one line and the library holds no
    vector (a NaN vector would match nothing, for good); the store refuses such vectors from any encoder."""
    import onnx
    from onnx import numpy_helper

    from clipdex.retrieval.storage.store import IMAGE, NewItem, Store

    folder = _copy_sample(tmp_path / "damaged")
    model = onnx.load(str(folder / "visual" / "model.onnx"))
    largest = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    values = numpy_helper.to_array(largest)
    largest.CopyFrom(numpy_helper.from_array(np.full_like(values, np.nan), largest.name))
    onnx.save(model, str(folder / "visual" / "model.onnx"))
    library = tmp_path / "library"
    done = without_torch("-L", library, "index", photos(3), "--model", folder)
    assert done.returncode == 1 and "non-finite" in done.stderr and "Traceback" not in done.stderr

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(Exception, match="non-finite"):
        store.write(inserts=[NewItem(IMAGE, "/p/a.jpg", np.array([np.nan, 1.0], dtype=np.float32))])
    assert store.counts()["image"] == 0


@pytest.mark.slow
def test_prepared_folders_are_private_and_leftovers_of_killed_runs_go(tmp_path: Path, monkeypatch) -> None:
    from clipdex.retrieval.models.loading import load_model
    from clipdex.retrieval.models.prepared import prepared_path

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = models / f".clipdex-{gone.stdout.strip()}-abc123"  # a run killed with -9 while preparing
    (leftover / "model" / "visual").mkdir(parents=True)
    (leftover / "model" / "visual" / "x.tmp.onnx").write_bytes(b"\0" * 1024)
    model = load_model("clipdex-tiny", None, "cpu")
    assert not leftover.exists()
    folder = prepared_path(model.identity, "fp32")
    for path in [folder, *folder.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.slow
def test_the_built_in_vocabulary_describes_without_torch(tmp_path: Path, photos) -> None:
    library = tmp_path / "library"
    pictures = photos(2)
    assert without_torch("-L", library, "index", pictures, "--model", "sample").returncode == 0
    done = without_torch("-L", library, "captions", next(pictures.iterdir()), "--from", "builtin", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {h["source"] for h in json.loads(done.stdout)} == {"builtin"}


@pytest.mark.slow
@pytest.mark.parametrize("setting", ("IMAGE_EXPORT_MIN_COSINE", "TEXT_EXPORT_MIN_COSINE"))
def test_an_export_that_disagrees_with_torch_is_not_kept(tmp_path: Path, monkeypatch, setting: str) -> None:
    """No export matches torch to a cosine above 1: with that as the bar, preparing must refuse, and the model
    runs through torch with the reason as a note."""
    from clipdex.retrieval.models.openclip.factory import load_encoder
    from clipdex.retrieval.models.prepared import open_prepared, prepare

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(config, setting, 1.5)
    encoder = load_encoder("clipdex-tiny", None, "cpu")
    prepared, notes = prepare(encoder, "fp32")
    assert prepared is None and open_prepared(encoder.identity, "fp32") is None
    assert len(notes) == 1 and "matched torch only to cosine" in notes[0], notes


@pytest.mark.slow
def test_a_prepared_folder_others_may_change_is_not_trusted(tmp_path: Path, monkeypatch) -> None:
    from clipdex.retrieval.models.loading import load_model
    from clipdex.retrieval.models.prepared import open_prepared, prepared_path

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    identity = load_model("clipdex-tiny", None, "cpu").identity
    folder = prepared_path(identity, "fp32")
    assert open_prepared(identity, "fp32") is not None
    (folder / "visual").chmod(0o777)  # anyone could swap its tower
    assert open_prepared(identity, "fp32") is None
    load_model("clipdex-tiny", None, "cpu")  # prepared again, private
    assert open_prepared(identity, "fp32") is not None and (folder / "visual").stat().st_mode & 0o077 == 0


def test_cache_files_others_may_write_are_not_trusted(tmp_path: Path, monkeypatch) -> None:
    """A remembered weights hash in a file others may write could name other weights: it is ignored (and
    replaced by a private one), as is a vocabulary cache others may write."""
    from clipdex.retrieval.digest import file_sha256, weights_sha256

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    assert weights_sha256(weights) == file_sha256(weights)
    memory = tmp_path / "cache" / config.FINGERPRINTS_FILE
    assert memory.stat().st_mode & 0o077 == 0
    lie = json.loads(memory.read_text())
    lie[str(weights.resolve())]["value"] = "0" * 64
    memory.write_text(json.dumps(lie))
    memory.chmod(0o666)  # anyone could have written that
    assert weights_sha256(weights) == file_sha256(weights)
    memory.chmod(0o600)
    memory.write_text(json.dumps(lie))
    assert weights_sha256(weights) == "0" * 64  # (its own private memory is believed: that is what it is for)
