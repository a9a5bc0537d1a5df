"""A living library (issue #17): camera RAW files and watched folders. Real LibRaw on DNG files written here with
tifffile (no RAW sample can be downloaded), real inotify through watchfiles, the real CLI in a subprocess."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.media.images import read_image
from clipdex.retrieval.library import Library
from tests.conftest import SAMPLE_ROWS, default_sigint

TINY = ("--model", "clipdex-tiny", "--no-export")
_DNG = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "clipdex test camera", True),
        (50721, "2i", 9, (10000, 10000, 0, 10000, 0, 10000, 0, 10000, 10000, 10000, 0, 10000, 0, 10000, 0, 10000,
                          10000, 10000), True),
        (50778, "H", 1, 21, True)]
_CFA = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True), (50717, "I", 1, 4095, True)]


def _mosaic(rgb: np.ndarray) -> np.ndarray:
    """An RGGB Bayer mosaic (12-bit) of an RGB image: what a sensor records."""
    levels = rgb.astype(np.uint16) * 16
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = levels[0::2, 0::2, 0]
    cfa[0::2, 1::2] = levels[0::2, 1::2, 1]
    cfa[1::2, 0::2] = levels[1::2, 0::2, 1]
    cfa[1::2, 1::2] = levels[1::2, 1::2, 2]
    return cfa


def write_dng(path: Path, scene: Image.Image, preview: Image.Image | None = None, orientation: int = 1) -> Path:
    """A DNG of `scene` (its sensor mosaic), with `preview` as the embedded preview when given."""
    cfa = _mosaic(np.asarray(scene.convert("RGB")))
    tags = [*_DNG, (274, "H", 1, orientation, True)]
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=[*tags, *_CFA], metadata=None)
        else:
            tif.write(np.asarray(preview.convert("RGB")), photometric="rgb", subfiletype=1, subifds=1,
                      extratags=tags, metadata=None)
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=_CFA, metadata=None)
    return path


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
    hits = json.loads(cli("search", SAMPLE_ROWS[0]["caption"], "-k", "2", "--json").stdout)
    assert {Path(h["path"]).name for h in hits} == {"with-preview.dng", "sensor-only.dng"}
    assert all((h["width"], h["height"]) == (320, 240) for h in hits)


# ------------------------------------------------------------------------------------------------ watch


def _watch(library_dir: Path, folder: Path, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "clipdex", "--library", str(library_dir), "watch", str(folder), *TINY,
         "--settle", "0.5", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint,
    )
    deadline = time.time() + 120
    for line in process.stdout:  # wait until it has caught up and is watching
        if "watching" in line or time.time() > deadline:
            break
    assert process.poll() is None, "watch stopped before watching"
    return process


def _paths(cli) -> set[str]:
    result = cli("search", "a photo", "-k", "500", "--mode", "clip", "--json")
    assert result.exit_code == 0, result.output  # a failed search is not "the file is gone"
    return {Path(h["path"]).name for h in json.loads(result.stdout)}


def _eventually(check, seconds: float = 60) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_watch_catches_up_then_follows_copies_moves_and_deletes(cli, library_dir: Path, photos) -> None:
    folder = photos(3)
    process = _watch(library_dir, folder)
    try:
        names = {p.name for p in folder.iterdir()}
        assert _paths(cli) == names  # caught up before watching
        new = SAMPLE_ROWS[10]["image"]
        shutil.copy(config.SAMPLE_DATA_DIR / new, folder / "copied.png")
        assert _eventually(lambda: "copied.png" in _paths(cli)), "a copied file never became searchable"
        (folder / "sub").mkdir()
        (folder / "copied.png").rename(folder / "sub" / "moved.png")
        assert _eventually(lambda: _paths(cli) == names | {"moved.png"})
        victim = sorted(folder.glob("*.*"))[0]
        victim.unlink()
        assert _eventually(lambda: victim.name not in _paths(cli)), "a deleted file stayed in the library"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "Traceback" not in output


def test_sigint_during_a_burst_loses_nothing(cli, library_dir: Path, photos, tmp_path: Path) -> None:
    folder = photos(2)
    process = _watch(library_dir, folder)
    burst = [SAMPLE_ROWS[20 + n]["image"] for n in range(120)]
    for n, image in enumerate(burst):
        shutil.copy(config.SAMPLE_DATA_DIR / image, folder / f"burst-{n:03d}{Path(image).suffix}")
    assert _eventually(lambda: len(_paths(cli)) > 2, 60)  # the burst is being indexed
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in output, output
    kept = _paths(cli)
    assert 2 < len(kept) <= 122
    finished = json.loads(cli("index", folder, "--json").stdout)  # what was committed stays; the rest is added
    assert finished["added"] == 122 - len(kept) and finished["removed"] == 0
    assert len(_paths(cli)) == 122


def test_serve_watch_keeps_the_served_library_in_sync(cli, library_dir: Path, photos) -> None:
    import socket
    import urllib.request

    folder = photos(2)
    assert cli("index", folder, *TINY).exit_code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "clipdex", "--library", str(library_dir), "serve", "--port", str(port), "--no-token",
         "--watch", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=default_sigint,
    )

    def served() -> set[str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q=a+photo&k=50&mode=clip", timeout=5) as r:
                return {Path(h["path"]).name for h in json.loads(r.read())}
        except OSError:
            return set()

    try:
        assert _eventually(lambda: len(served()) == 2, 90), "the server never answered"
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[40]["image"], folder / "arrived.png")
        assert _eventually(lambda: "arrived.png" in served(), 60), "a new file never reached the served results"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


# ------------------------------------------------------------------------------------------------ videos

SAMPLE_MODEL = ("--model", "sample", "--no-export")


def write_video(path: Path, segments: list[tuple[Image.Image, float]], fps: int = 10, side: int = 160,
                keyframe_seconds: float | None = None) -> Path:
    """An H.264 video showing each image for its number of seconds, made with PyAV; a keyframe exactly every
    `keyframe_seconds` when given (as phones write them), else where x264 chooses."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        if keyframe_seconds:
            gop = round(keyframe_seconds * fps)
            stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for image, seconds in segments:
            frame = av.VideoFrame.from_image(image.convert("RGB").resize((side, side)))
            for _ in range(int(seconds * fps)):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _sample(n: int) -> Image.Image:
    return Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"])


def test_a_video_is_found_once_at_the_right_moment(cli, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "holiday.mp4", [(_sample(0), 4), (_sample(1), 4)])
    for n in (2, 3, 4):
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"], folder)
    report = json.loads(cli("index", folder, *SAMPLE_MODEL, "--json").stdout)
    assert report["added"] == 4 and report["failed"] == []
    for n, (start, end) in ((0, (0, 4)), (1, (4, 8))):
        hits = json.loads(cli("search", SAMPLE_ROWS[n]["caption"], "-k", "4", "--json").stdout)
        assert Path(hits[0]["path"]).name == "holiday.mp4" and start <= hits[0]["time"] < end, hits[0]
        assert [Path(h["path"]).name for h in hits].count("holiday.mp4") == 1  # once, at its best moment
        assert all("time" not in h for h in hits[1:])
    by_image = json.loads(cli("search", "--image", config.SAMPLE_DATA_DIR / SAMPLE_ROWS[1]["image"], "-k", "1",
                              "--json").stdout)
    assert Path(by_image[0]["path"]).name == "holiday.mp4" and 4 <= by_image[0]["time"] < 8
    combined = json.loads(cli("search", SAMPLE_ROWS[1]["caption"], "-", SAMPLE_ROWS[0]["caption"], "-k", "1",
                              "--json").stdout)
    assert 4 <= combined[0]["time"] < 8
    paths = cli("search", SAMPLE_ROWS[0]["caption"], "-f", "-k", "4").stdout.splitlines()
    assert len(paths) == len(set(paths)) == 4


@pytest.mark.parametrize("keyframe_seconds", [1, 8])
def test_sampled_frames_are_the_ones_decoding_in_order_gives_and_the_hit_is_at_its_second(
        cli, tmp_path: Path, keyframe_seconds: int) -> None:
    import av

    from clipdex.retrieval.media.video import read_frames

    folder = tmp_path / "media"
    folder.mkdir()
    scenes = [(_sample(5), 12), (_sample(6), 4), (_sample(7), 9)]  # the middle scene from 12 to 16 s
    video = write_video(folder / "trip.mp4", scenes, fps=30, side=96, keyframe_seconds=keyframe_seconds)
    read = read_frames(video, 64)
    expected, due = [], 0.0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):  # every frame, in order
            if frame.time + 1e-6 >= due:
                expected.append((round(frame.time, 3), np.asarray(frame.to_image(width=64, height=64))))
                due = frame.time + config.VIDEO_FRAME_SECONDS
    assert read.times == [t for t, _ in expected] == [2.0 * n for n in range(13)]
    assert all(np.array_equal(np.asarray(a), b) for a, (_, b) in zip(read.frames, expected))
    assert json.loads(cli("index", folder, *SAMPLE_MODEL, "--json").stdout)["added"] == 1
    hit = json.loads(cli("search", "--image", config.SAMPLE_DATA_DIR / SAMPLE_ROWS[6]["image"], "-k", "1",
                         "--json").stdout)[0]
    assert 12 <= hit["time"] < 16, hit


def test_frames_of_one_video_are_not_duplicates(cli, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "still.mp4", [(_sample(5), 8)])  # four identical frames
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[6]["image"], folder)
    assert cli("index", folder, *SAMPLE_MODEL).exit_code == 0
    assert json.loads(cli("duplicates", "--json").stdout) == []
    shutil.copy(folder / "still.mp4", folder / "copy.mp4")  # another video with the same frames is one
    assert cli("index", folder).exit_code == 0
    groups = json.loads(cli("duplicates", "--json").stdout)
    assert [sorted({Path(m["path"]).name for m in g}) for g in groups] == [["copy.mp4", "still.mp4"]]


def test_videos_move_change_disappear_and_break_like_photos(cli, library_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    video = write_video(folder / "a.mp4", [(_sample(0), 4)])
    (folder / "broken.mov").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    first = json.loads(cli("index", folder, *SAMPLE_MODEL, "--json").stdout)
    assert first["added"] == 1 and [Path(f["path"]).name for f in first["failed"]] == ["broken.mov"]
    assert first["failed"][0]["error"].startswith("cannot read video")
    (folder / "sub").mkdir()
    video.rename(folder / "sub" / "b.mp4")
    assert json.loads(cli("index", folder, "--json").stdout)["moved"] == 1
    hit = json.loads(cli("search", SAMPLE_ROWS[0]["caption"], "-k", "1", "--json").stdout)[0]
    assert hit["path"] == str(folder / "sub" / "b.mp4")
    write_video(folder / "sub" / "b.mp4", [(_sample(1), 2), (_sample(0), 2), (_sample(1), 4)])  # new content
    assert json.loads(cli("index", folder, "--json").stdout)["updated"] == 1
    hit = json.loads(cli("search", SAMPLE_ROWS[0]["caption"], "-k", "1", "--json").stdout)[0]
    assert 2 <= hit["time"] < 4  # the new video's frames, not the old ones
    assert len(Library(library_dir).store.frame_files()) == 4  # 8 s, a frame every 2 s: the old rows are gone
    (folder / "sub" / "b.mp4").unlink()
    assert json.loads(cli("index", folder, "--json").stdout)["removed"] == 1
    assert json.loads(cli("search", "x", "-k", "5", "--json").stdout) == []


def test_the_web_shows_a_video_frame_and_serves_byte_ranges(cli, library_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from clipdex.cli.web import create_app
    from tests.test_web import LOCAL

    folder = tmp_path / "media"
    folder.mkdir()
    video = write_video(folder / "clip.mp4", [(_sample(0), 4), (_sample(1), 4)])
    assert cli("index", folder, *SAMPLE_MODEL).exit_code == 0
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    hit = client.get("/api/search", params={"q": SAMPLE_ROWS[1]["caption"], "k": 1}).json()[0]
    assert 4 <= hit["time"] < 8
    thumb = client.get(f"/api/items/{hit['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(thumb.content)).convert("RGB").resize((160, 160))
    expected = _sample(1).convert("RGB").resize((160, 160))
    other = _sample(0).convert("RGB").resize((160, 160))
    difference = lambda a, b: np.abs(np.asarray(a, float) - np.asarray(b, float)).mean()  # noqa: E731
    assert difference(shown, expected) < difference(shown, other)  # the frame at that moment, not the first
    data = video.read_bytes()
    part = client.get(f"/api/items/{hit['id']}/image", headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/api/items/{hit['id']}/image", headers={"range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    assert client.get(f"/api/items/{hit['id']}/image", headers={"range": f"bytes={len(data)}-"}).status_code == 416
    whole = client.get(f"/api/items/{hit['id']}/image")
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/mp4"
