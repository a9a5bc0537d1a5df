"""Nothing lost, no tracebacks: bad files, strange images, hostile checkpoints, crashes and concurrent use."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.openclip.factory import load_encoder
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import IMAGE
from tests.conftest import SAMPLE_ROWS, default_sigint
from tests.test_core import _json

TINY = ("--model", "clipdex-tiny")


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: enough for Pillow's bomb check, which must refuse it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _upright_marker() -> Image.Image:
    """An image whose every rotation and mirror differs: red top-left block, blue right band."""
    image = Image.new("RGB", (96, 64), (240, 240, 240))
    image.paste((220, 30, 30), (0, 0, 32, 24))
    image.paste((30, 30, 220), (80, 0, 96, 64))
    return image


# What a viewer applies for each EXIF orientation; the file stores the inverse so it displays upright.
_VIEWER = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}
_INVERSE = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def _save_oriented(path: Path, orientation: int) -> None:
    stored = _upright_marker()
    for step in _VIEWER.get(_INVERSE.get(orientation, 1), []):
        stored = stored.transpose(step)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    _save_oriented(path, orientation)
    decoded = read_image(path)
    assert decoded.image.size == (96, 64) and (decoded.width, decoded.height) == (96, 64)
    difference = np.abs(np.asarray(decoded.image, dtype=int) - np.asarray(_upright_marker(), dtype=int)).mean()
    assert difference < 6, orientation


def _bad_and_strange_folder(root: Path) -> tuple[set[str], set[str]]:
    """Files that must be skipped (with a reason) and odd-but-valid images that must be indexed."""
    root.mkdir()
    real_jpeg = (config.SAMPLE_DATA_DIR / next(r["image"] for r in SAMPLE_ROWS if r["image"].endswith(".jpg"))).read_bytes()
    real_png = (config.SAMPLE_DATA_DIR / next(r["image"] for r in SAMPLE_ROWS if r["image"].endswith(".png"))).read_bytes()
    bad = {
        "zero.jpg": b"",
        "text.png": b"hello, I am not a picture\n" * 10,
        "binary.webp": bytes(random.Random(0).randrange(256) for _ in range(4096)),
        "truncated.jpg": real_jpeg[: len(real_jpeg) // 2],
        "truncated.png": real_png[: len(real_png) // 2],
        "bomb.png": _png_claiming(30_000, 30_000),
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    os.symlink(root / "missing.jpg", root / "broken-link.jpg")
    os.symlink(root / "loop-b.jpg", root / "loop-a.jpg")
    os.symlink(root / "loop-a.jpg", root / "loop-b.jpg")
    os.close(os.open(os.fsencode(root) + b"/caf\xe9.png", os.O_CREAT | os.O_WRONLY))

    base = Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"]).convert("RGB")
    base.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(root / "sixteen-bit.png")
    base.convert("P").save(root / "palette.png")
    base.convert("RGBA").save(root / "alpha.png")
    base.convert("L").save(root / "grey.png")
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(root / "animated.webp", save_all=True, append_images=frames[1:])
    import pillow_heif

    pillow_heif.from_pillow(base).save(root / "phone.heic", quality=80)
    corrupt = bytearray(real_jpeg)
    exif_at = corrupt.find(b"Exif\x00\x00")
    segment = b"\xff\xe1\x00\x20Exif\x00\x00MM\x00\x2a\x00\x00\xff\xff\xff\xff" + b"\x00" * 12
    corrupt[2:2] = segment if exif_at < 0 else b""
    (root / "corrupt-exif.jpg").write_bytes(bytes(corrupt))
    (root / ("long-" + "x" * 200 + ".png")).write_bytes(real_png)
    good = {"cmyk.jpg", "sixteen-bit.png", "palette.png", "alpha.png", "grey.png", "animated.gif", "animated.webp",
            "phone.heic", "corrupt-exif.jpg", "long-" + "x" * 200 + ".png"}
    return set(bad) | {"broken-link.jpg", "loop-a.jpg", "loop-b.jpg", "caf\ufffd.png"}, good


def test_bad_files_are_skipped_with_reasons_and_odd_images_are_indexed(cli, tmp_path: Path) -> None:
    bad, good = _bad_and_strange_folder(tmp_path / "odd")
    report = _json(cli("index", tmp_path / "odd", *TINY, "--json"))
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == bad
    assert all(reason.strip() for reason in failed.values())
    assert "too large" in failed["bomb.png"]
    assert "UTF-8" in failed["caf\ufffd.png"]
    assert report["added"] == len(good)
    strict = cli("index", tmp_path / "odd", "--strict")
    assert strict.exit_code == 1


def test_a_file_that_vanishes_before_decoding_is_reported(tiny, tmp_path: Path) -> None:
    from clipdex.indexer.embedders import LocalEmbedder

    kept = tmp_path / "kept.png"
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"], kept)
    batches = list(LocalEmbedder(tiny, batch_size=4, workers=0).embed([str(kept), str(tmp_path / "gone.jpg")]))
    assert len(batches[0].done) == 1
    assert "gone.jpg" in batches[0].failed[0].error


def test_unreadable_file_is_reported(library_dir: Path, photos) -> None:
    """As root (CI) the run drops the capabilities that let root read any file, so permissions apply to it too."""
    folder = photos(2)
    locked = sorted(folder.iterdir())[0]
    locked.chmod(0)
    drop = "-dac_override,-dac_read_search"
    as_user = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"] if os.geteuid() == 0 else []
    result = subprocess.run(
        [*as_user, sys.executable, "-m", "clipdex", "--library", str(library_dir), "index", str(folder), *TINY,
         "--no-export", "--json"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [Path(f["path"]).name for f in report["failed"]] == [locked.name]
    assert "Permission denied" in report["failed"][0]["error"] and report["added"] == 1


def test_strange_queries(cli, photos, tmp_path: Path) -> None:
    cli("index", photos(3), *TINY)
    too_long = cli("search", "a red circle " * 800, "-k", "2", "--json")
    assert too_long.exit_code == 1 and "1,000" in too_long.stderr.replace("1000", "1,000")
    long = cli("search", "a red circle " * 70, "-k", "2", "--json")
    assert long.exit_code == 0 and len(json.loads(long.stdout)) == 2
    assert "query truncated to the model's 32 tokens" in long.stderr
    assert "query text is empty" in cli("search", "   ").stderr
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    result = cli("search", "--image", not_image)
    assert result.exit_code == 1 and "cannot read image" in result.stderr


# ----------------------------------------------------------------------------------- hostile checkpoints


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_a_payload_is_refused(cli, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": _Payload(marker)}, evil)
    with pytest.raises(ClipdexError, match="refusing to load"):
        load_encoder("clipdex-tiny", str(evil), "cpu")
    result = cli("index", tmp_path, "--model", "clipdex-tiny", "--pretrained", evil)
    assert result.exit_code == 1 and "refusing to load" in result.stderr
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(evil.read_bytes())
    with pytest.raises(ClipdexError, match="not a readable safetensors checkpoint"):
        load_encoder(str(fake), None, "cpu")
    assert not marker.exists()


# ----------------------------------------------------------------------------------- library state


def test_library_folder_is_private_and_schema_is_checked(cli, library_dir: Path, photos) -> None:
    cli("index", photos(2), *TINY)
    assert library_dir.stat().st_mode & 0o077 == 0
    with sqlite3.connect(library_dir / config.DATABASE_FILE) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    result = cli("status")
    assert result.exit_code == 1
    assert "schema version 99" in result.stderr and "Traceback" not in result.output


def test_a_second_writer_is_refused(cli, library_dir: Path, photos) -> None:
    folder = photos(2)
    cli("index", folder, *TINY)
    with Library(library_dir).writer():
        result = cli("index", folder)
    assert result.exit_code == 1 and "is being written by clipdex (pid" in result.stderr
    assert cli("index", folder).exit_code == 0


def _index_process(library_dir: Path, folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clipdex", "--library", str(library_dir), "index", str(folder), *TINY,
         "--batch-size", "2", "--workers", "0", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint,
    )


def _assert_consistent(library_dir: Path, folder: Path) -> None:
    library = Library(library_dir)
    ids, vectors = zip(*library.store.vectors(IMAGE, library.require_identity().dim))
    ids = np.concatenate(ids)
    paths = [row["key"] for row in library.store.items(ids).values()]
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir())  # every image exactly once
    assert np.allclose(np.linalg.norm(np.concatenate(vectors), axis=1), 1, atol=1e-4)  # every row has its vector
    index = library.vector_index(IMAGE)
    assert np.array_equal(np.sort(index.ids()), np.sort(ids))  # FAISS ids are the database ids


def _committed_images(library_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{library_dir / config.DATABASE_FILE}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM items WHERE kind = 'image'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_kill_9_during_index_loses_nothing_committed(library_dir: Path, photos) -> None:
    folder = photos(120)
    rng = random.Random(1)
    kill_points = []
    for _ in range(3):
        start = _committed_images(library_dir)
        process = _index_process(library_dir, folder)
        deadline = time.time() + 120
        while _committed_images(library_dir) <= start and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))  # somewhere in the middle of writing batches
        seen = _committed_images(library_dir)
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = _committed_images(library_dir)
        assert after >= seen  # what was committed before the kill stays committed
        kill_points.append(after)
    assert any(0 < n < 120 for n in kill_points), kill_points  # the kills did land mid-run
    finished = _index_process(library_dir, folder)
    assert finished.wait(timeout=300) == 0, finished.stderr.read().decode()
    _assert_consistent(library_dir, folder)


def test_ctrl_c_during_index_keeps_what_was_written_and_exits_130(library_dir: Path, photos) -> None:
    folder = photos(120)
    process = _index_process(library_dir, folder)
    deadline = time.time() + 120
    while _committed_images(library_dir) == 0 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    kept = _committed_images(library_dir)
    assert 0 < kept < 120
    finished = _index_process(library_dir, folder)
    assert finished.wait(timeout=300) == 0
    _assert_consistent(library_dir, folder)


def test_search_answers_while_index_runs(cli, library_dir: Path, photos) -> None:
    """Every answer given during indexing is the answer of some committed state: ids are assigned in commit order,
    so a committed state is all ids up to some id, each with its final score, ranked by it."""
    folder = photos(150)
    first = photos(1, "first")
    cli("index", first, *TINY)
    process = _index_process(library_dir, folder)
    answers = []
    while process.poll() is None:
        result = cli("search", "a red circle", "-k", "200", "--json")
        assert result.exit_code == 0, result.output
        answers.append(json.loads(result.stdout))
    assert process.returncode == 0, process.stderr.read().decode()
    final = _json(cli("search", "a red circle", "-k", "200", "--json"))
    assert len(final) == 151
    score = {hit["id"]: hit["score"] for hit in final}
    assert answers and any(1 < len(answer) < 151 for answer in answers)  # some answers came mid-index
    for answer in answers:
        ids = [hit["id"] for hit in answer]
        assert sorted(ids) == sorted(i for i in score if i <= max(ids))  # one committed state, whole
        assert [hit["score"] for hit in answer] == pytest.approx([score[i] for i in ids], abs=1e-5)
        assert [hit["score"] for hit in answer] == sorted((hit["score"] for hit in answer), reverse=True)


def test_a_folder_of_ten_thousand_tiny_files(cli, library_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10_000):
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    report = _json(cli("index", folder, *TINY, "--batch-size", "512", "--json"))
    assert (report["added"], report["failed"]) == (10_000, [])
    again = _json(cli("index", folder, "--json"))
    assert (again["added"], again["unchanged"]) == (0, 10_000)
    library = Library(library_dir)
    assert library.vector_index(IMAGE).count == 10_000 == library.store.counts()[IMAGE]
