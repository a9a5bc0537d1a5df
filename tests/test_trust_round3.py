"""Trust, third round (issue #25): special files, caption input, one query parser, what reaches a terminal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipdex.cli.web import create_app
from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from tests.conftest import default_sigint
from tests.test_web import LOCAL

SAMPLE = ("--model", "sample")


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
        [sys.executable, "-m", "clipdex", "--library", str(tmp_path / "lib"), "index", str(folder), *SAMPLE,
         "--json"], capture_output=True, text=True, timeout=120,
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


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_ends_indexing_and_its_decode_workers(tmp_path: Path, photos, stop: str) -> None:
    """Ctrl-C reaches the whole process group; SIGTERM (a service manager, `kill`) only the main process: either
    way it stops as interrupted (130), and no decode worker is left running."""
    folder = photos(1)
    for i in range(300):
        shutil.copy(next(folder.iterdir()), folder / f"copy-{i:03d}.png")
    process = subprocess.Popen(
        [sys.executable, "-m", "clipdex", "--library", str(tmp_path / "lib"), "index", str(folder), *SAMPLE,
         "--batch-size", "4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=default_sigint,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _children(process.pid):
        time.sleep(0.05)
    workers = _children(process.pid)
    assert workers, "no decode worker started"
    if stop == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    assert code == 130, process.stdout.read().decode(errors="replace")[-2000:]
    time.sleep(0.5)
    assert not [pid for pid in workers if _state(pid) not in ("Z", "gone")]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_captions_that_are_not_text_are_skipped_with_their_reason(cli, photos, library_dir: Path, tmp_path) -> None:
    assert cli("index", photos(2), *SAMPLE).exit_code == 0
    corpus = tmp_path / "corpus.jsonl"
    lines = ['{"caption": "a red circle"}', '{"caption": "\\ud800"}', '{"caption": 5}', '{"caption": null}',
             '{"caption": ["a", "b"]}', '{"caption": {"x": 1}}', json.dumps({"caption": "x" * 5000})]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("add-captions", corpus, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 1 and len(report["skipped"]) == 6
    assert "lone surrogate" in report["skipped"][0] and "int" in report["skipped"][1]
    stored = {h["caption"] for h in json.loads(cli("captions", next(photos(1, "q").iterdir()), "--json").stdout)}
    assert stored == {"a red circle"}  # never "5", "None" or "['a', 'b']"

    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    refused = client.post("/api/captions", files={"file": ("c.jsonl", b'{"caption": "\\ud800"}\n')})
    assert refused.status_code == 400 and "surrogate" in refused.text
    too_many = "\n".join(f"caption {i}" for i in range(config.WEB_MAX_CAPTIONS + 1)).encode()
    assert client.post("/api/captions", files={"file": ("c.txt", too_many)}).status_code == 413

    removed = cli("remove-captions", "--all", "--json")
    assert json.loads(removed.stdout) == {"removed": 1}
    assert json.loads(cli("status", "--json").stdout)["counts"].get("caption", 0) == 0


def test_a_quoted_query_reads_as_the_same_query_unquoted(cli, photos) -> None:
    assert cli("index", photos(12), *SAMPLE).exit_code == 0
    quoted = cli("search", "a red circle + a blue square - snow", "--json", "--mode", "clip")
    unquoted = cli("search", "a", "red", "circle", "+", "a blue square", "-", "snow", "--json", "--mode", "clip")
    assert quoted.exit_code == 0 and json.loads(quoted.stdout) == json.loads(unquoted.stdout)
    one_term = cli("search", "a red circle a blue square snow", "--json", "--mode", "clip")
    assert json.loads(one_term.stdout) != json.loads(quoted.stdout)


def test_newlines_and_c1_controls_in_names_never_reach_the_terminal(cli, photos) -> None:
    folder = photos(1)
    source = next(folder.iterdir())
    shutil.copy(source, folder / "a\nSPOOFED LINE.png")
    shutil.copy(source, folder / "b\x9b31mred.png")
    shutil.copy(source, folder / "c\u202egnp.exe.png")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    for args in (("-k", "5"), ("-k", "5", "--json")):
        out = cli("search", "a red circle", *args).stdout
        assert "\nSPOOFED" not in out and "\x9b" not in out and "\u202e" not in out, args
    error = cli("search", "--image", str(folder / "gone\nFORGED LINE.png")).output  # an error naming the file
    assert "\nFORGED" not in error and "gone\\x0aFORGED LINE.png" in error
    hits = json.loads(cli("search", "a red circle", "-k", "5", "--json").stdout)
    assert {Path(h["path"]).name for h in hits} >= {"a\nSPOOFED LINE.png", "b\x9b31mred.png"}  # data kept exact
    assert "a\nSPOOFED LINE.png" in cli("search", "a red circle", "-k", "5", "-f").stdout  # -f stays exact


def test_a_video_is_one_member_of_a_duplicate_group(cli, tmp_path: Path) -> None:
    """A static video and a still of its frame: one group of two, the video once (at a moment), not once a frame."""
    from tests.test_living_library import _sample, write_video

    folder = tmp_path / "media"
    folder.mkdir()
    frame = _sample(5)
    write_video(folder / "still.mp4", [(frame, 10)])
    frame.resize((160, 160)).save(folder / "still-frame.png")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    groups = json.loads(cli("duplicates", "--json").stdout)
    assert [sorted(Path(m["path"]).name for m in g) for g in groups] == [["still-frame.png", "still.mp4"]]
    video = next(m for m in groups[0] if m["path"].endswith(".mp4"))
    assert video["time"] is not None


def test_text_mode_searches_common_words_rather_than_none(cli, photos) -> None:
    """Most photos named (or reading) "receipt": in --mode text, where words are all there is, "receipt" finds
    them; in hybrid the common word still does not reorder CLIP's ranking."""
    folder = photos(10)
    for i, path in enumerate(sorted(folder.iterdir())):
        path.rename(folder / (f"receipt-{i}.png" if i < 8 else f"invoice-{i}.png"))
    assert cli("index", folder, *SAMPLE).exit_code == 0
    found = json.loads(cli("search", "receipt", "--mode", "text", "-k", "20", "--json").stdout)
    assert sorted(Path(h["path"]).name for h in found) == [f"receipt-{i}.png" for i in range(8)]
    clip = json.loads(cli("search", "receipt", "--mode", "clip", "-k", "10", "--json").stdout)
    hybrid = json.loads(cli("search", "receipt", "-k", "10", "--json").stdout)
    assert [h["id"] for h in hybrid] == [h["id"] for h in clip]


def test_renaming_a_folder_under_watch_moves_its_photos(library_dir: Path, tmp_path: Path, photos) -> None:
    """A folder renamed (`mv album album-2023`) is an event on a path without an extension: the photos must follow
    it, with their vectors, not linger at the old paths."""
    root = tmp_path / "root"
    root.mkdir()
    photos(3).rename(root / "album")
    process = subprocess.Popen(
        [sys.executable, "-m", "clipdex", "--library", str(library_dir), "watch", str(root), *SAMPLE, "--settle",
         "0.3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint,
    )
    try:
        for line in process.stdout:
            if "watching" in line:
                break
        (root / "album").rename(root / "album-2023")
        deadline, paths = time.time() + 60, []
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-m", "clipdex", "--library", str(library_dir), "search", "-f",
                                  "-k", "50", "a photo"], capture_output=True, text=True).stdout
            paths = out.splitlines()
            if len(paths) == 3 and all("/album-2023/" in p for p in paths):
                break
            time.sleep(0.5)
        assert len(paths) == 3 and all("/album-2023/" in p for p in paths), paths
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_a_video_in_the_library_is_counted_once_and_can_be_a_query(cli, tmp_path: Path) -> None:
    """status counts a video as one video (not as its frames), and captions / search --image take a video as
    they take a photo: through a frame."""
    from tests.test_living_library import _sample, write_video

    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "clip.mp4", [(_sample(5), 4), (_sample(6), 4)])
    _sample(5).resize((160, 160)).save(folder / "still.png")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    counts = json.loads(cli("status", "--json").stdout)["counts"]
    assert (counts["image"], counts["video"]) == (1, 1) and counts["frame"] >= 2
    assert "videos" in cli("status").stdout
    found = cli("search", "--image", folder / "clip.mp4", "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    assert {Path(h["path"]).name for h in json.loads(found.stdout)[:2]} == {"clip.mp4", "still.png"}
    assert "first frame" in found.stderr
    assert cli("add-captions", config.SAMPLE_CAPTIONS).exit_code == 0
    described = cli("captions", folder / "clip.mp4", "-k", "1", "--json")
    assert described.exit_code == 0 and len(json.loads(described.stdout)) == 1, described.output


def test_libraw_s_warning_in_decode_workers_stays_out_of_index_output(cli, tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(config.SAMPLE_DATA_DIR / "images" / "00000.png", folder / "a.png")
    (folder / "broken.nef").write_bytes(os.urandom(4096))  # read by LibRaw in a forked decode worker
    result = subprocess.run([sys.executable, "-m", "clipdex", "--library", str(tmp_path / "lib"), "index",
                             str(folder), *SAMPLE, "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "broken.nef" in result.stderr and "RuntimeWarning" not in result.stderr and "set_start_method" not in result.stderr


def test_the_status_a_browser_gets_names_no_absolute_path(cli, tmp_path: Path, photos) -> None:
    from tests.test_finetune_watch import QUICK, _sample_pairs, _write_pairs

    pairs = _write_pairs(tmp_path / "pairs.csv", _sample_pairs(32))
    checkpoint = tmp_path / "private-folder" / "mine.safetensors"
    assert cli("finetune", pairs, *SAMPLE, *QUICK, "--epochs", "1", "-o", checkpoint).exit_code == 0
    assert cli("index", photos(3), "--model", checkpoint).exit_code == 0
    client = TestClient(create_app(Library(tmp_path / "library"), "cpu"), base_url=LOCAL)
    status = client.get("/api/status")
    assert status.status_code == 200 and str(tmp_path) not in status.text
    assert status.json()["model"] == "mine.safetensors"
    assert client.get("/api/status", params={"paths": "true"}).json()["model"] == str(checkpoint)
