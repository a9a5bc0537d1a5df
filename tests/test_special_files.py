"""A FIFO, socket or device put where a photo or video was never blocks a reader: every read of a file goes
through the regular-file check, and a query names what is wrong with it. Each read runs in a child process with
a deadline, so a regression fails its test instead of hanging the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SAMPLE, clipdex_command

ROOT = Path(__file__).resolve().parents[1]


def _in_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("name", ("photo.jpg", "photo.cr2", "clip.mp4"))
def test_reading_a_fifo_under_a_media_name_is_refused_at_once(tmp_path: Path, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    reader = "read_frames(sys.argv[1], 64)" if name.endswith(".mp4") else "read_image(sys.argv[1], 64)"
    done = _in_child(
        "import sys\nfrom clipdex.retrieval.media.images import read_image\nfrom clipdex.retrieval.media.video import read_frames\n"
        f"from clipdex.retrieval.errors import ClipdexError\ntry:\n    {reader}\nexcept ClipdexError as e:\n"
        "    print(e)\n", str(fifo))
    assert "not a regular file" in done.stdout, done.stderr[-1000:]


def test_a_preview_of_a_fifo_draws_nothing_and_returns(tmp_path: Path) -> None:
    fifo = tmp_path / "was-a-photo.jpg"
    os.mkfifo(fifo)
    done = _in_child(
        "import sys\nfrom clipdex.cli.preview import Previewer\n"
        "Previewer({'CLIPDEX_PREVIEW': 'blocks'}).draw(sys.argv[1])\nprint('returned')\n", str(fifo))
    assert done.stdout.strip() == "returned", done.stderr[-1000:]


def test_a_query_image_that_is_a_fifo_is_named_so(cli, photos, tmp_path: Path) -> None:
    assert cli("index", photos(2), "--model", "sample").exit_code == 0
    fifo = tmp_path / "query.jpg"
    os.mkfifo(fifo)
    for command in (("captions", fifo), ("search", "--image", fifo)):
        result = cli(*command)
        assert result.exit_code == 1 and "not a regular file" in result.output, result.output


def test_fifos_sockets_and_devices_under_photo_names_never_stall_indexing(cli, photos, tmp_path: Path) -> None:
    """A FIFO blocks `open` until a writer comes; /dev/zero never ends. Both are refused at once, with their
    reason, and the real photos beside them are indexed; a process that would block fails the test by timeout."""
    import socket

    folder = photos(3)
    os.mkfifo(folder / "x.jpg")
    (folder / "zero.mp4").symlink_to("/dev/zero")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.png"))
    done = subprocess.run(
        clipdex_command(tmp_path / "lib", "index", str(folder), *SAMPLE, "--json"),
        capture_output=True, text=True, timeout=120,
    )
    server.close()
    report = json.loads(done.stdout)
    assert report["added"] == 3
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {"x.jpg", "zero.mp4", "zero.jpg", "sock.png"}
    assert all("not a regular file" in error for error in failed.values())


def test_a_file_swapped_for_a_fifo_after_the_scan_is_refused_without_blocking(tmp_path: Path) -> None:
    from clipdex.indexer.decode import DecodeSettings, decode_file
    from clipdex.retrieval.digest import file_sha256
    from clipdex.retrieval.models.preprocess import ImagePreprocess

    os.mkfifo(tmp_path / "late.jpg")
    settings = DecodeSettings(ImagePreprocess(32, (0.5,) * 3, (0.5,) * 3), 32)
    decoded = decode_file(0, str(tmp_path / "late.jpg"), settings)  # would wait forever for a writer
    assert decoded.pixels is None and "not a regular file" in decoded.error
    with pytest.raises(OSError, match="not a regular file"):
        file_sha256(tmp_path / "late.jpg")
