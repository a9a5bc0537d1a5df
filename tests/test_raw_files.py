"""Camera RAW files: the embedded preview when large enough, else the sensor demosaiced, orientation applied, a
broken one skipped with its reason, an ordinary image under a RAW name read as what it is. Real LibRaw on DNG
files written here with tifffile (no RAW sample can be downloaded)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.media.images import read_image
from tests.conftest import SAMPLE_ROWS
from tests.helpers import SAMPLE, TINY, clipdex_command, write_dng, search_hits


def test_libraw_s_warning_in_decode_workers_stays_out_of_index_output(cli, tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(config.SAMPLE_DATA_DIR / "images" / "00000.png", folder / "a.png")
    (folder / "broken.nef").write_bytes(os.urandom(4096))  # read by LibRaw in a forked decode worker
    result = subprocess.run(clipdex_command(tmp_path / "lib", "index", str(folder), *SAMPLE, "--workers", "1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "broken.nef" in result.stderr and "RuntimeWarning" not in result.stderr and "set_start_method" not in result.stderr


def test_an_ordinary_image_under_a_raw_name_is_read_as_what_it_is(cli, tmp_path: Path) -> None:
    folder = tmp_path / "camera"
    folder.mkdir()
    Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"]).convert("RGB").save(folder / "renamed.dng", "JPEG")
    report = json.loads(cli("index", folder, *TINY, "--json").stdout)
    assert (report["added"], report["failed"]) == (1, [])


def _halves(size=(640, 480), left=(220, 30, 30), right=(30, 30, 220)) -> Image.Image:
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def _colour(image: Image.Image, box) -> np.ndarray:
    return np.asarray(image.crop(box), dtype=float).mean(axis=(0, 1))


def test_raw_preview_is_used_when_large_enough_else_the_sensor_is_demosaiced(tmp_path: Path) -> None:
    scene = _halves()  # red | blue on the sensor
    preview = _halves((400, 300), left=(30, 200, 30), right=(240, 240, 30))  # green | yellow in the preview
    dng = write_dng(tmp_path / "a.dng", scene, preview)
    small = read_image(dng, min_side=224)  # the preview covers the model's input: it is what is read
    assert (small.width, small.height) == (640, 480)
    assert _colour(small.image, (0, 0, 100, 100))[1] > 150 and _colour(small.image, (small.image.width - 100, 0,
                                                                                       small.image.width, 100))[0] > 150
    large = read_image(dng, min_side=1000)  # larger than the preview: the sensor data, demosaiced at half size
    assert large.image.size == (320, 240)
    left, right = _colour(large.image, (10, 10, 120, 230)), _colour(large.image, (200, 10, 310, 230))
    assert left[0] > 2 * left[2] and right[2] > 2 * right[0]  # red left, blue right, as the sensor saw it


@pytest.mark.parametrize("orientation, size", [(1, (640, 480)), (3, (640, 480)), (6, (480, 640)), (8, (480, 640))])
def test_raw_orientation_is_applied_to_preview_and_sensor(tmp_path: Path, orientation: int, size) -> None:
    scene = _halves()
    for preview in (None, _halves((400, 300))):
        dng = write_dng(tmp_path / f"o{orientation}-{preview is None}.dng", scene, preview, orientation)
        decoded = read_image(dng, min_side=100)
        assert (decoded.width, decoded.height) == size
        image = decoded.image
        assert (image.width > image.height) == (size[0] > size[1])
        red_first = {1: "left", 3: "right", 6: "top", 8: "bottom"}[orientation]
        w, h = image.size
        half = {"left": (0, 0, w // 2, h), "right": (w // 2, 0, w, h), "top": (0, 0, w, h // 2),
                "bottom": (0, h // 2, w, h)}[red_first]
        colour = _colour(image, half)
        assert colour[0] > colour[2], (orientation, preview is None, colour)  # the red half is where it belongs


def test_raw_files_index_and_a_broken_one_is_skipped_with_its_reason(cli, tmp_path: Path) -> None:
    folder = tmp_path / "camera"
    folder.mkdir()
    sample = Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"]).convert("RGB").resize((320, 240))
    write_dng(folder / "with-preview.dng", sample, sample.resize((256, 192)))
    write_dng(folder / "sensor-only.dng", sample)
    (folder / "broken.nef").write_bytes(b"II*\0" + bytes(200))
    (folder / "empty.cr2").write_bytes(b"")
    read_image(folder / "sensor-only.dng", min_side=1000)  # LibRaw's OpenMP threads now run in this process:
    # decode workers forked from it would hang, so they must start from a fresh one
    report = json.loads(cli("index", folder, *TINY, "--workers", "1", "--json").stdout)
    assert report["added"] == 2
    assert sorted(Path(f["path"]).name for f in report["failed"]) == ["broken.nef", "empty.cr2"]
    assert all(f["error"] for f in report["failed"])
    hits = search_hits(cli("search", SAMPLE_ROWS[0]["caption"], "-k", "2", "--json"))
    assert {Path(h["path"]).name for h in hits} == {"with-preview.dng", "sensor-only.dng"}
    assert all((h["width"], h["height"]) == (320, 240) for h in hits)
