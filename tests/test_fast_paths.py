"""Every fast path gives the answer of the slow one: trimmed text, reduced precision, draft decoding."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from clipdex.indexer.options import IndexOptions
from clipdex.retrieval import config
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.models.openclip.factory import load_encoder
from tests.helpers import search_hits

CAUSAL_CONFIGS = ("clipdex-tiny", "clipdex-small", "ViT-B-32")
TEXTS = ["a dog", "a small red circle left of a large green circle on a dotted background", "word " * 120, ""]


@pytest.mark.parametrize("name", CAUSAL_CONFIGS)
def test_trimmed_text_equals_untrimmed(name: str) -> None:
    encoder = load_encoder(name, None, "cpu")
    assert encoder.trims_text
    trimmed, full = encoder.encode_texts(TEXTS, trim=True), encoder.encode_texts(TEXTS, trim=False)
    assert np.abs(trimmed - full).max() < 1e-4


def test_bf16_embeddings_match_fp32(tiny) -> None:
    encoder = load_encoder("clipdex-small", None, "cpu")
    images = [Image.new("RGB", (80, 60), c) for c in ("red", "navy", "yellow")]
    reference = np.concatenate([encoder.encode_images(images), encoder.encode_texts(TEXTS)])
    encoder.set_precision("bf16")
    assert encoder.precision == "bf16", encoder.notes
    cast = np.concatenate([encoder.encode_images(images), encoder.encode_texts(TEXTS)])
    assert (reference * cast).sum(axis=1).min() >= 0.99


def test_draft_decoded_jpeg_embeds_like_full_decode(tmp_path: Path) -> None:
    """A camera-size JPEG decoded in draft mode gives nearly the embedding of a full decode."""
    encoder = load_encoder("clipdex-small", None, "cpu")
    rng = np.random.default_rng(0)
    big = Image.fromarray(np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((100, 100, 1), dtype=np.uint8)))
    path = tmp_path / "camera.jpg"
    big.save(path, quality=90)
    draft = read_image(path, encoder.image_size)
    full = read_image(path)
    assert draft.image.width < full.image.width / 4  # the draft really decoded at a reduced scale
    assert (draft.width, draft.height) == (full.width, full.height) == (4000, 3000)
    cosine = float((encoder.encode_images([draft.image]) * encoder.encode_images([full.image])).sum())
    assert cosine > 0.99


# ------------------------------------------------------------------- the torch-free text query path

TOKENIZER_TEXTS = [
    "a red circle", "A Dog's  day &amp; night!!", "naïve café — 東京 🐕", "x" * 300, "don't stop", "1234 567.89",
    "<start_of_text> hi", "Ünïcödé ÀÉÎ straße", " ".join(["word"] * 100), "tab\tand\nnewline",
]


from clipdex.retrieval.models.openclip.folder_export import same_ids  # noqa: E402


def _folder_tokenizer():
    """The tokenizer as a model folder holds it: written by the export, read back by `tokenizers`."""
    import tempfile

    from open_clip.tokenizer import default_bpe
    from tokenizers import Tokenizer

    from clipdex.retrieval.models.openclip.tokenizer_json import clip_tokenizer, save_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(clip_tokenizer(Path(default_bpe())), Path(tmp) / "tokenizer.json")
        return Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))


def _ids(tokenizer, text: str) -> list[int]:
    from clipdex.retrieval.models.model_folder import clean_text

    return tokenizer.encode(clean_text(text)).ids


def test_a_folders_tokenizer_gives_open_clips_ids() -> None:
    import open_clip

    tokenizer = _folder_tokenizer()
    tokenizer.enable_truncation(max_length=77)
    reference = open_clip.get_tokenizer("ViT-B-32")(TOKENIZER_TEXTS).numpy()
    for text, expected in zip(TOKENIZER_TEXTS, reference):
        assert same_ids(_ids(tokenizer, text), expected.tolist())
    assert _ids(tokenizer, "!(")[1] == 0  # "!" inside a word is id 0, as open_clip's padding is


@functools.lru_cache(maxsize=1)
def _both_tokenizers():
    import open_clip

    return _folder_tokenizer(), open_clip.get_tokenizer("ViT-B-32")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=40)
       | st.text(alphabet="&;amplt<>#x0123456789 abcdefABCDEF\"'.", max_size=40))
def test_a_folders_tokenizer_agrees_on_any_text(text: str) -> None:
    """Any text, entities included, gets open_clip's ids, except where open_clip would first repair mojibake
    with ftfy (a folder's tokenizer.json does not: neither does Immich's)."""
    import ftfy
    from hypothesis import assume

    assume(ftfy.fix_text(text) == text)
    ours_of, theirs_of = _both_tokenizers()
    assert same_ids(_ids(ours_of, text), theirs_of([text])[0].tolist())


@pytest.mark.slow
@pytest.mark.parametrize("name", ("clipdex-tiny", "ViT-B-32"))
def test_a_prepared_folders_text_tower_matches_torch(name: str, tmp_path: Path, monkeypatch) -> None:
    from clipdex.retrieval.models.prepared import prepare_folder
    from clipdex.retrieval.models.prepared import open_prepared

    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path))
    encoder = load_encoder(name, None, "cpu")
    assert open_prepared(encoder.identity, "fp32") is None
    folder = prepare_folder(encoder, "fp32")
    assert folder.is_relative_to(tmp_path)
    prepared = open_prepared(encoder.identity, "fp32")
    texts = TEXTS[:3] + TOKENIZER_TEXTS
    cosines = (prepared.encode_texts(texts) * encoder.encode_texts(texts)).sum(axis=1)
    assert cosines.min() >= 0.999
    made = (folder / "textual" / "model.onnx").stat().st_mtime_ns
    assert prepare_folder(encoder, "fp32") == folder  # the second library with this model reuses the folder
    assert (folder / "textual" / "model.onnx").stat().st_mtime_ns == made


@pytest.mark.slow
def test_an_int8_text_tower_agrees_with_torch_fp32_and_repeats_are_remembered(tmp_path: Path, monkeypatch) -> None:
    """The reduced-precision fast path: ViT-B-32's text tower with int8 weights, against torch in fp32."""
    import csv

    from clipdex.retrieval import config
    from clipdex.retrieval.models.openclip.folder_export import write_folder
    from clipdex.retrieval.models.model_folder import FolderModel

    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path))
    encoder = load_encoder("ViT-B-32", None, "cpu")
    kept = write_folder(encoder, tmp_path / "folder", text_precision="int8")
    assert "text int8" in kept[0], kept
    exported = FolderModel(tmp_path / "folder", encoder.identity)
    captions = [row["caption"] for row in csv.DictReader(config.SAMPLE_CAPTIONS.open(encoding="utf-8"))]
    texts = TEXTS + TOKENIZER_TEXTS + captions[-50:]  # captions the export's own check did not see
    batch = exported.encode_texts(texts)
    assert (batch * encoder.encode_texts(texts)).sum(axis=1).min() >= config.TEXT_INT8_MIN_COSINE
    one = exported.encode_texts([texts[0]])[0]
    assert float(one @ encoder.encode_texts([texts[0]])[0]) >= config.TEXT_INT8_MIN_COSINE  # alone as in a batch
    again = exported.encode_texts([texts[0]])[0]
    assert np.shares_memory(again, one) and not again.flags.writeable  # remembered, and shared read-only


def test_cold_text_query_needs_no_torch_and_gives_the_same_hits(
    cli, library_dir: Path, photos, tmp_path: Path, monkeypatch
) -> None:
    import json
    import subprocess
    import sys

    assert cli("index", photos(12), "--model", "clipdex-tiny").exit_code == 0
    assert json.loads(cli("status", "--json").stdout)["model_folder"]
    probe = (
        "import sys, json\nfrom cli.app import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules)))"
    )
    search = ["-L", str(library_dir), "search", "a red circle", "-k", "5", "--json"]
    done = subprocess.run([sys.executable, "-c", probe, *search], capture_output=True, text=True, check=True)
    hits, imported = done.stdout.rsplit("\n", 2)[:2]
    assert json.loads(imported) == []
    (tmp_path / "a-file").write_text("")  # the same query through torch: a cache folder that cannot be made, so
    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "a-file" / "cache"))  # the model cannot be prepared
    through_torch = search_hits(cli("search", "a red circle", "-k", "5", "--json"))
    assert json.loads(cli("status", "--json").stdout)["model_folder"] is None
    assert [h["id"] for h in json.loads(hits)["hits"]] == [h["id"] for h in through_torch]
    assert np.allclose([h["score"] for h in json.loads(hits)["hits"]], [h["score"] for h in through_torch], atol=1e-4)


def test_memory_mapped_index_answers_like_the_loaded_one_and_still_tops_up(tmp_path: Path, tiny) -> None:
    from clipdex.retrieval.library import Library
    from clipdex.retrieval.storage.store import IMAGE, NewItem
    from clipdex.retrieval.storage.vector_index import VectorIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((60, tiny.identity.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = Library(tmp_path / "lib", create=True)
    writer.use_encoder(tiny)
    writer.store.write(inserts=[NewItem(IMAGE, f"/p/{i}.jpg", v) for i, v in enumerate(vectors[:50])])
    writer.save_index(IMAGE)

    reader = Library(tmp_path / "lib")
    mapped = reader.vector_index(IMAGE)
    assert mapped.mapped
    saved = json.loads(reader.indexes.state_path(IMAGE).read_text())["file"]
    loaded = VectorIndex.load(tmp_path / "lib" / saved, tiny.identity.dim)
    for got, expected in zip(mapped.search(vectors[:5], 7), loaded.search(vectors[:5], 7)):
        assert np.array_equal(got, expected)

    first_id = int(mapped.search(vectors[:1], 1)[1][0, 0])
    writer.store.write(inserts=[NewItem(IMAGE, f"/p/{i}.jpg", v) for i, v in enumerate(vectors[50:], 50)],
                       deletes=[first_id])
    topped = reader.vector_index(IMAGE)  # the store moved on: read into memory, then topped up
    assert not topped.mapped and topped.count == 59
    assert topped.search(vectors[55:56], 1)[0][0, 0] > 0.999  # a vector added after the mapped load
    assert first_id not in topped.search(vectors[:1], 59)[1][0]


@pytest.mark.slow
def test_a_damaged_export_falls_back_to_torch(cli, library_dir: Path, photos, tmp_path: Path, monkeypatch) -> None:
    from clipdex.retrieval.library import Library
    from clipdex.retrieval.models.prepared import prepared_path

    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "cache"))
    assert cli("index", photos(6), "--model", "clipdex-tiny").exit_code == 0
    expected = search_hits(cli("search", "a blue star", "-k", "3", "--json"))
    tower = prepared_path(Library(library_dir).require_identity(), "fp32") / "textual" / "model.onnx"
    tower.write_bytes(b"not an onnx model")
    result = cli("search", "a blue star", "-k", "3", "--json")
    assert result.exit_code == 0 and [h["id"] for h in search_hits(result)] == [h["id"] for h in expected]


@pytest.mark.slow
def test_a_folder_of_another_model_is_never_used(tmp_path: Path, monkeypatch, tiny) -> None:
    """A prepared folder says in its config which model it came from: one in the wrong place is not trusted."""
    import shutil

    from clipdex.retrieval import config
    from clipdex.retrieval.models.prepared import prepare_folder
    from clipdex.retrieval.models.prepared import open_prepared, prepared_path

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    small = load_encoder("clipdex-small", None, "cpu")
    shutil.copytree(prepare_folder(small, "fp32"), prepared_path(tiny.identity, "fp32"))  # tiny's slot: small's
    assert open_prepared(tiny.identity, "fp32") is None
    prepare_folder(tiny, "fp32")  # made again, for the right model
    assert open_prepared(tiny.identity, "fp32").identity.same_model(tiny.identity)


@pytest.mark.slow
def test_the_int8_image_tower_agrees_with_fp32(tmp_path: Path, monkeypatch, photos) -> None:
    """--precision int8 (the image tower through ONNX Runtime with int8 weights) against torch fp32 on photos, and
    a library indexed with it answers as an fp32 one does."""
    from clipdex import api
    from clipdex.retrieval.media.images import open_image

    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "cache"))
    encoder = load_encoder("sample", None, "cpu")
    folder = photos(24)
    pixels = np.stack([encoder.preprocess(open_image(p)) for p in sorted(folder.iterdir())])
    reference = encoder.encode_pixels(pixels)
    encoder.set_precision("int8")
    assert encoder.precision == "int8" and encoder.image_tower is not None, encoder.notes
    assert (encoder.encode_pixels(pixels) * reference).sum(axis=1).min() >= 0.99
    assert list((tmp_path / "cache" / "models").glob("*/visual/model.onnx"))  # made once, kept for the next run

    hits = {}
    for precision in ("fp32", "int8"):
        library = api.open_library(tmp_path / precision, create=True)
        api.index(library, [folder], IndexOptions(model=str(config.SAMPLE_MODEL), precision=precision, workers=0))
        hits[precision] = [h.path for h in api.search(library, "a red circle", 5, mode="clip")]
    assert hits["int8"][0] == hits["fp32"][0] and len(set(hits["int8"]) & set(hits["fp32"])) >= 4


@pytest.mark.slow
def test_an_export_of_the_other_tower_is_never_used_and_an_unwritable_cache_is_only_a_note(
    tmp_path: Path, monkeypatch, photos
) -> None:
    from clipdex import api
    from clipdex.retrieval.models.prepared import prepare_folder

    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "cache"))
    encoder = load_encoder("sample", None, "cpu")
    folder = prepare_folder(encoder, "int8")
    shutil.copy(folder / "textual" / "model.onnx", folder / "visual" / "model.onnx")  # the text tower, misplaced
    encoder.set_precision("int8")
    assert encoder.precision == "int8", encoder.notes  # not trusted: made anew, for the right tower
    assert encoder.encode_images([Image.new("RGB", (64, 64), "red")]).shape == (1, encoder.identity.dim)

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be created
    library = api.open_library(tmp_path / "lib", create=True)
    report = api.index(library, [photos(3)], IndexOptions(model=str(config.SAMPLE_MODEL), workers=0))  # to be prepared
    assert report.added == 3 and any("export failed" in note for note in report.notes), report.notes
    fresh = load_encoder("sample", None, "cpu")
    fresh.set_precision("int8")
    assert fresh.precision == "fp32" and any("int8" in note for note in fresh.notes), fresh.notes
