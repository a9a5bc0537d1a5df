"""Fast start-up paths agree with the slow ones: an unchanged library is checked without loading the model, a
weights file's hash is remembered only while the file is unchanged, models built without initialisation hold
exactly the loaded weights, and a pretrained tag names weights only together with its architecture."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from clipdex.retrieval import config
from clipdex.retrieval.digest import file_sha256, weights_sha256
from clipdex.retrieval.models.identity import ModelIdentity
from tests.conftest import SAMPLE_ROWS

ROOT = Path(__file__).resolve().parents[1]

# Runs the real CLI in a new process, then says which heavy modules the command imported.
_RUN_AND_REPORT = """
import sys
from clipdex.cli.app import main
sys.argv = ["clipdex", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
print("IMPORTED", sorted(m for m in ("torch", "open_clip", "torchvision") if m in sys.modules), "EXIT", code,
      "SQLALCHEMY", "sqlalchemy" in sys.modules)
"""


def _clipdex(library: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, "-L", str(library), *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )
    return done.stdout.strip().splitlines()[-1] + done.stderr[-500:]


def _long_running(library: Path, *args: str) -> subprocess.Popen:
    """A command that runs until Ctrl-C (watch, serve), reporting its imports when it ends."""
    return subprocess.Popen(
        [sys.executable, "-u", "-c", _RUN_AND_REPORT, "-L", str(library), *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _interrupted_report(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    return out.strip().splitlines()[-1]


@pytest.mark.slow
def test_everyday_commands_never_import_torch_once_the_model_is_prepared(tmp_path: Path, photos) -> None:
    """Preparing a model (the first index) exports its towers; from then on indexing new photos, watching,
    searching by text or image, captions, duplicates, status and serving run on ONNX Runtime and numpy alone."""
    folder, library = photos(6), tmp_path / "lib"
    first = _clipdex(library, "index", str(folder), "--model", str(config.SAMPLE_MODEL))  # a checkpoint: prepared
    assert "EXIT 0" in first, first
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[10]["image"], folder)
    photo = str(folder / Path(SAMPLE_ROWS[0]["image"]).name)
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\na blue square\n", encoding="utf-8")
    for command in (("index", str(folder)), ("search", "a red circle"), ("search", "--image", photo),
                    ("add-captions", str(captions)), ("captions", photo), ("duplicates",), ("status",)):
        assert _clipdex(library, *command).startswith("IMPORTED [] EXIT 0"), command
    assert _clipdex(library, "search", "a red circle", "--precision", "bf16").startswith("IMPORTED ['open_clip', "
                                                                                          "'torch', 'torchvision']")

    watcher = _long_running(library, "watch", str(folder), "--settle", "0.3")
    for line in watcher.stdout:
        if "watching" in line:
            break
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[11]["image"], folder)  # a batch the watcher embeds
    deadline = time.time() + 60
    while time.time() < deadline and "00011" not in _clipdex(library, "search", "-f", "-k", "50", "a photo"):
        time.sleep(0.5)
    assert _interrupted_report(watcher).startswith("IMPORTED [] EXIT 130")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _long_running(library, "serve", "--port", str(port), "--no-token")
    deadline, answer = time.time() + 60, None
    while time.time() < deadline and answer is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q=a+red+circle", timeout=5) as r:
                answer = json.loads(r.read())
        except OSError:
            time.sleep(0.3)
    assert answer, "the server never answered"
    assert _interrupted_report(server).startswith("IMPORTED [] EXIT")


def test_queries_read_a_sqlite_library_without_importing_sqlalchemy(tmp_path: Path, photos) -> None:
    """Reads go through the standard sqlite3 module (storage/reading.py): importing SQLAlchemy costs a cold query
    0.15 s, and only a command that writes pays it."""
    folder, library = photos(5), tmp_path / "lib"
    assert "EXIT 0" in _clipdex(library, "index", str(folder), "--model", "sample", "--tags")
    photo = str(folder / Path(SAMPLE_ROWS[0]["image"]).name)
    for command in (("search", "a red circle"), ("search", "red", "--mode", "text"), ("search", "--image", photo),
                    ("search", "a circle", "--in", str(folder), "--after", "2000-01-01", "--tag", "circle", "--json"),
                    ("captions", photo), ("duplicates",), ("status", "--json"), ("tags",)):
        report = _clipdex(library, *command)
        assert "EXIT 0 SQLALCHEMY False" in report, (command, report)
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[10]["image"], folder)
    assert "EXIT 0 SQLALCHEMY True" in _clipdex(library, "index", str(folder))  # a write


_ENTRY = """
import atexit, sys
atexit.register(lambda: print("TORN DOWN", flush=True))
from clipdex.cli.app import entry
sys.argv = ["clipdex", *sys.argv[1:]]
entry()
"""


def test_a_command_that_only_read_ends_at_once_and_one_that_wrote_ends_as_usual(tmp_path: Path, photos) -> None:
    """The console script ends a reading command's process once its output is out (no teardown of ONNX Runtime,
    FAISS and every module: 0.05-0.08 s of a query); an index, or a failed command, ends through Python's exit."""
    folder, library = photos(3), tmp_path / "lib"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _ENTRY, "-L", str(library), *args], cwd=ROOT, text=True,
                              capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)

    indexed = run("index", str(folder), "--model", "sample")
    assert indexed.returncode == 0 and indexed.stdout.endswith("TORN DOWN\n"), indexed.stdout + indexed.stderr
    found = run("search", "a red circle", "-f", "-k", "3")
    assert found.returncode == 0 and "TORN DOWN" not in found.stdout, found.stdout + found.stderr
    assert len(found.stdout.splitlines()) == 3 and all(Path(line).is_file() for line in found.stdout.splitlines())
    failed = run("search", "--image", str(tmp_path / "missing.jpg"))
    assert failed.returncode != 0 and "TORN DOWN" in failed.stdout


@pytest.mark.slow
def test_the_prepared_model_embeds_as_torch_does(tmp_path: Path) -> None:
    """The ONNX towers against the torch model they were exported from, on photos and sentences; the numpy
    preprocessing against open_clip's own transform, on shapes a camera and a screenshot give."""
    from PIL import Image

    from clipdex.retrieval.models.openclip.factory import load_encoder
    from clipdex.retrieval.media.images import open_image
    from clipdex.retrieval.models.loading import load_model
    from clipdex.retrieval.models.model_folder import FolderModel

    encoder = load_encoder("sample", None, "cpu")
    prepared = load_model(str(config.SAMPLE_MODEL), None, "cpu")  # from the checkpoint, with torch, once
    assert isinstance(prepared, FolderModel) and prepared.identity == encoder.identity
    bundled = load_model("sample", None, "cpu")  # the folder in sample_data/, as it ships
    assert isinstance(bundled, FolderModel) and bundled.identity.fingerprint.startswith("files:")
    rng = np.random.default_rng(7)
    images = [open_image(config.SAMPLE_DATA_DIR / row["image"]) for row in SAMPLE_ROWS[:12]]
    images += [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
               ((3000, 4000), (1000, 333), (64, 64), (17, 900), (500, 499))]
    for image in images:
        ours, theirs = prepared.preprocess(image), encoder.transform(image).numpy()
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-4
    cosines = (prepared.encode_images(images) * encoder.encode_images(images)).sum(axis=1)
    assert cosines.min() >= config.IMAGE_EXPORT_MIN_COSINE
    texts = [row["caption"] for row in SAMPLE_ROWS[:20]]
    assert (prepared.encode_texts(texts) * encoder.encode_texts(texts)).sum(axis=1).min() >= 0.999
    assert (bundled.encode_images(images) * encoder.encode_images(images)).sum(axis=1).min() >= 0.999
    assert (bundled.encode_texts(texts) * encoder.encode_texts(texts)).sum(axis=1).min() >= 0.999


@pytest.mark.slow
def test_an_unchanged_library_is_checked_without_loading_the_model(tmp_path: Path, photos) -> None:
    folder, library = photos(6), tmp_path / "lib"
    assert "EXIT 0" in _clipdex(library, "index", str(folder), "--model", "sample")
    noop = _clipdex(library, "index", str(folder), "--model", "sample", "--json")
    assert noop.startswith("IMPORTED [] EXIT 0"), noop
    assert _clipdex(library, "index", str(folder), "--json").startswith("IMPORTED [] EXIT 0")

    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[10]["image"], folder)  # now one file needs the (prepared) model
    assert "IMPORTED [] EXIT 0" in _clipdex(library, "index", str(folder), "--json")
    other = _clipdex(library, "index", str(folder), "--model", "clipdex-tiny")  # another model is still refused
    assert "EXIT 1" in other and "was built with" in other


def test_a_weights_hash_is_remembered_only_while_the_file_is_unchanged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a" * 1000)
    assert weights_sha256(weights) == file_sha256(weights)
    memory = tmp_path / "cache" / config.FINGERPRINTS_FILE
    assert str(weights.resolve()) in json.loads(memory.read_text())

    stat = weights.stat()  # same size, same mtime restored (as cp -p or rsync would): still noticed
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights_sha256(weights) == file_sha256(weights)

    memory.write_text("{not json")  # a damaged memory is ignored, then rewritten
    assert weights_sha256(weights) == file_sha256(weights)
    assert str(weights.resolve()) in json.loads(memory.read_text())


def test_a_model_built_without_init_holds_exactly_the_checkpoint_and_seeded_init_is_unchanged() -> None:
    from safetensors.torch import load_file

    from clipdex.retrieval.models.openclip.factory import load_encoder

    seeded = {k: v.clone() for k, v in load_encoder("clipdex-tiny", None, "cpu").model.state_dict().items()}
    loaded = load_encoder("sample", None, "cpu").model.state_dict()
    saved = load_file(str(config.SAMPLE_MODEL))
    assert saved.keys() <= loaded.keys()
    assert all(torch.equal(loaded[k], saved[k].float()) for k in saved)
    again = load_encoder("clipdex-tiny", None, "cpu").model.state_dict()  # init works again after a skipped one
    assert all(torch.equal(again[k], seeded[k]) for k in seeded)
    assert not all(np.allclose(again[k].numpy(), 0) for k in again if again[k].is_floating_point())


def test_a_pretrained_tag_names_weights_only_with_its_architecture() -> None:
    b32 = ModelIdentity("ViT-B-32", "openai", "tag:openai", 512)
    assert not b32.same_model(ModelIdentity("ViT-B-16", "openai", "tag:openai", 512))
    assert not b32.same_model(ModelIdentity("ViT-B-32", "openai", "init:0", 512))
    assert b32.same_model(ModelIdentity("ViT-B-32", "openai", "tag:openai", 512))
    moved = ModelIdentity("/a/ft.safetensors", None, "sha256:ab", 512)  # a checkpoint is its content, wherever it is
    assert moved.same_model(ModelIdentity("/b/ft.safetensors", None, "sha256:ab", 512))


@pytest.mark.slow
def test_weights_changed_in_place_are_named_as_such(tmp_path: Path, photos) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights, library = tmp_path / "m.safetensors", tmp_path / "lib"
    shutil.copy(config.SAMPLE_MODEL, weights)
    folder = photos(4)
    assert "EXIT 0" in _clipdex(library, "index", str(folder), "--model", str(weights))
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    save_file({k: -v for k, v in load_file(str(weights)).items()}, str(weights), metadata=metadata)  # same size
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[10]["image"], folder)
    changed = _clipdex(library, "index", str(folder), "--model", str(weights))
    assert "EXIT 1" in changed and "changed since this library was built" in changed, changed
