"""Bad and strange files: every EXIF orientation applied, broken files skipped with their reasons, odd images
indexed, vanished or unreadable files reported, CMYK/16-bit/HEIC decoded right, oversized files refused unread,
ten thousand tiny files."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.storage.store import IMAGE
from tests.conftest import SAMPLE_ROWS
from tests.helpers import SAMPLE, TINY, clipdex_command, json_output


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


@pytest.mark.slow
def test_bad_files_are_skipped_with_reasons_and_odd_images_are_indexed(cli, tmp_path: Path) -> None:
    bad, good = _bad_and_strange_folder(tmp_path / "odd")
    report = json_output(cli("index", tmp_path / "odd", *TINY, "--json"))
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


@pytest.mark.slow
def test_unreadable_file_is_reported(library_dir: Path, photos) -> None:
    """As root (CI) the run drops the capabilities that let root read any file, so permissions apply to it too."""
    folder = photos(2)
    locked = sorted(folder.iterdir())[0]
    locked.chmod(0)
    drop = "-dac_override,-dac_read_search"
    as_user = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"] if os.geteuid() == 0 else []
    result = subprocess.run(
        [*as_user, *clipdex_command(library_dir, "index", str(folder), *TINY, "--no-export", "--json")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [Path(f["path"]).name for f in report["failed"]] == [locked.name]
    assert "Permission denied" in report["failed"][0]["error"] and report["added"] == 1


def _as_user(library_dir: Path, *args) -> dict:
    """`clipdex ARGS --json` in a new process; as root, without the capabilities that let root read any folder."""
    drop = "-dac_override,-dac_read_search"
    as_user = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"] if os.geteuid() == 0 else []
    result = subprocess.run([*as_user, *clipdex_command(library_dir, *args, "--json")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_folder_that_cannot_be_listed_is_reported_and_its_photos_kept(library_dir: Path, photos) -> None:
    """`chmod 000` (or 311: enter but not list; or 644: list but not enter) on an album is not its deletion: the
    folder is a failure with its reason and its photos keep their rows, ids, tags and text."""
    folder = photos(5)
    album = folder / "album"
    album.mkdir()
    for photo in sorted(folder.glob("*.*"))[:2]:
        photo.rename(album / photo.name)
    _as_user(library_dir, "index", folder, *SAMPLE)
    ids = {image.path: image.id for image in Library(library_dir).store.images()}
    assert len(ids) == 5
    try:
        for mode, failed in ((0o000, [str(album)]), (0o311, [str(album)]),
                             (0o644, sorted(str(p) for p in ids if p.startswith(f"{album}/")))):
            album.chmod(mode)
            report = _as_user(library_dir, "index", folder)
            assert (report["removed"], report["added"], report["unchanged"]) == (0, 0, 3), (oct(mode), report)
            assert sorted(f["path"] for f in report["failed"]) == failed, (oct(mode), report)
            assert all("Permission denied" in f["error"] for f in report["failed"]), report
            assert {image.path: image.id for image in Library(library_dir).store.images()} == ids
    finally:
        album.chmod(0o755)
    report = _as_user(library_dir, "index", folder)
    assert (report["removed"], report["added"], report["unchanged"], report["failed"]) == (0, 0, 5, [])
    assert {image.path: image.id for image in Library(library_dir).store.images()} == ids


# ----------------------------------------------------------------------------------- hostile checkpoints


# ----------------------------------------------------------------------------------- library state


@pytest.mark.slow
def test_a_folder_of_ten_thousand_tiny_files(cli, library_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10_000):
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    report = json_output(cli("index", folder, *TINY, "--batch-size", "512", "--json"))
    assert (report["added"], report["failed"]) == (10_000, [])
    again = json_output(cli("index", folder, "--json"))
    assert (again["added"], again["unchanged"]) == (0, 10_000)
    library = Library(library_dir)
    assert library.vector_index(IMAGE).count == 10_000 == library.store.counts()[IMAGE]


def test_decoded_pixels_of_cmyk_sixteen_bit_and_heic_are_right(tmp_path: Path) -> None:
    import numpy as np
    import pillow_heif

    from clipdex.retrieval.media.images import read_image

    base = Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"]).convert("RGB")
    reference = np.asarray(base, dtype=np.float32)
    base.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(tmp_path / "sixteen.png")
    pillow_heif.from_pillow(base).save(tmp_path / "phone.heic", quality=95)
    cmyk = np.asarray(read_image(tmp_path / "cmyk.jpg").image, dtype=np.float32)
    assert np.abs(cmyk - reference).mean() < 8
    sixteen = np.asarray(read_image(tmp_path / "sixteen.png").image, dtype=np.float32)
    assert np.abs(sixteen[..., 0] - np.asarray(base.convert("L"), dtype=np.float32)).mean() < 2
    heic = np.asarray(read_image(tmp_path / "phone.heic").image, dtype=np.float32)
    assert heic.shape == reference.shape and np.abs(heic - reference).mean() < 8


def test_files_over_the_size_cap_are_refused_before_reading(cli, tmp_path: Path) -> None:
    folder = tmp_path / "huge"
    folder.mkdir()
    with open(folder / "huge.jpg", "wb") as sparse:  # no disk used: the size is only declared
        sparse.truncate(config.MAX_IMAGE_FILE_BYTES + 1)
    report = json.loads(cli("index", folder, *TINY, "--json", "--no-export").stdout)
    assert [f["error"] for f in report["failed"]] == [f"{folder / 'huge.jpg'}: file larger than 512 MB, refused before reading"]
