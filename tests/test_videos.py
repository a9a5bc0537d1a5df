"""Videos: found once at the moment that matches, frames sampled as decoding in order gives them, never their own
duplicates, moved, changed and broken like photos, and shown on the page from their frame with byte ranges."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from tests.conftest import SAMPLE_ROWS
from tests.helpers import LOCAL, SAMPLE, sample_image, write_video, search_hits


def test_a_video_is_one_member_of_a_duplicate_group(cli, tmp_path: Path) -> None:
    """A static video and a still of its frame: one group of two, the video once (at a moment), not once a frame."""

    folder = tmp_path / "media"
    folder.mkdir()
    frame = sample_image(5)
    write_video(folder / "still.mp4", [(frame, 10)])
    frame.resize((160, 160)).save(folder / "still-frame.png")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    groups = json.loads(cli("duplicates", "--json").stdout)
    assert [sorted(Path(m["path"]).name for m in g) for g in groups] == [["still-frame.png", "still.mp4"]]
    video = next(m for m in groups[0] if m["path"].endswith(".mp4"))
    assert video["time"] is not None


@pytest.mark.slow
def test_a_video_in_the_library_is_counted_once_and_can_be_a_query(cli, tmp_path: Path) -> None:
    """status counts a video as one video (not as its frames), and captions / search --image take a video as
    they take a photo: through a frame."""

    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "clip.mp4", [(sample_image(5), 4), (sample_image(6), 4)])
    sample_image(5).resize((160, 160)).save(folder / "still.png")
    assert cli("index", folder, *SAMPLE).exit_code == 0
    counts = json.loads(cli("status", "--json").stdout)["counts"]
    assert (counts["image"], counts["video"]) == (1, 1) and counts["frame"] >= 2
    assert "videos" in cli("status").stdout
    found = cli("search", "--image", folder / "clip.mp4", "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    assert {Path(h["path"]).name for h in search_hits(found)[:2]} == {"clip.mp4", "still.png"}
    assert "first frame" in found.stderr
    assert cli("add-captions", config.SAMPLE_CAPTIONS).exit_code == 0
    described = cli("captions", folder / "clip.mp4", "-k", "1", "--json")
    assert described.exit_code == 0 and len(json.loads(described.stdout)) == 1, described.output


SAMPLE_MODEL = ("--model", "sample", "--no-export")


@pytest.mark.slow
def test_a_video_is_found_once_at_the_right_moment(cli, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "holiday.mp4", [(sample_image(0), 4), (sample_image(1), 4)])
    for n in (2, 3, 4):
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"], folder)
    report = json.loads(cli("index", folder, *SAMPLE_MODEL, "--json").stdout)
    assert report["added"] == 4 and report["failed"] == []
    for n, (start, end) in ((0, (0, 4)), (1, (4, 8))):
        hits = search_hits(cli("search", SAMPLE_ROWS[n]["caption"], "-k", "4", "--json"))
        assert Path(hits[0]["path"]).name == "holiday.mp4" and start <= hits[0]["time"] < end, hits[0]
        assert [Path(h["path"]).name for h in hits].count("holiday.mp4") == 1  # once, at its best moment
        assert all("time" not in h for h in hits[1:])
    by_image = search_hits(cli("search", "--image", config.SAMPLE_DATA_DIR / SAMPLE_ROWS[1]["image"], "-k", "1",
                              "--json"))
    assert Path(by_image[0]["path"]).name == "holiday.mp4" and 4 <= by_image[0]["time"] < 8
    combined = search_hits(cli("search", SAMPLE_ROWS[1]["caption"], "-", SAMPLE_ROWS[0]["caption"], "-k", "1",
                              "--json"))
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
    scenes = [(sample_image(5), 12), (sample_image(6), 4), (sample_image(7), 9)]  # the middle scene from 12 to 16 s
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
    hit = search_hits(cli("search", "--image", config.SAMPLE_DATA_DIR / SAMPLE_ROWS[6]["image"], "-k", "1",
                         "--json"))[0]
    assert 12 <= hit["time"] < 16, hit


@pytest.mark.parametrize("keyframe_seconds", [1, 8])
def test_frames_skipped_between_moments_change_no_frame_that_is_read(tmp_path: Path, keyframe_seconds: int) -> None:
    """Non-reference frames are skipped while the next moment is far (video.py): on footage where every frame
    differs (B-frames carry real motion), the frames read are still exactly those that decoding every frame gives."""
    import av

    from clipdex.retrieval.media.video import read_frames

    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (12, 20, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    video, fps, gop = tmp_path / "pan.mp4", 30, 30 * keyframe_seconds
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"}
        for i in range(17 * fps):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    read = read_frames(video, 64)
    expected, due = [], 0.0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            if frame.time + 1e-6 >= due:
                expected.append((round(frame.time, 3), np.asarray(frame.to_image(width=107, height=64))))
                due = frame.time + config.VIDEO_FRAME_SECONDS
    assert read.times == [t for t, _ in expected] == [2.0 * n for n in range(9)]
    assert all(np.array_equal(np.asarray(a), b) for a, (_, b) in zip(read.frames, expected))


@pytest.mark.parametrize("every", [0.5, config.VIDEO_FRAME_SECONDS])
def test_the_next_moment_counts_from_the_frame_taken_at_7_fps(tmp_path: Path, every: float) -> None:
    """At 7 fps a half-second step falls between frames: each moment taken is the first frame at least `every`
    after the one taken before (counted from the last moment due instead, the gaps shrink to 3/7 s)."""
    import av

    from clipdex.retrieval.media.video import read_frames

    video = write_video(tmp_path / "seven.mp4", [(sample_image(5), 5), (sample_image(6), 5)], fps=7, side=96)
    read = read_frames(video, 64, every=every)
    expected, due = [], 0.0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):  # every frame, in order
            if frame.time + 1e-6 >= due:
                expected.append(round(frame.time, 3))
                due = frame.time + every
    assert read.times == expected and len(expected) >= 10 / every - 2
    gaps = np.diff(read.times)
    assert gaps.min() >= every - 1e-3 and gaps.max() < every + 1 / 7 + 1e-3, read.times


def test_a_few_videos_are_decoded_side_by_side() -> None:
    """A video is a batch's worth of decoding: four clips get a worker per core, where eight photos need one."""
    from clipdex.indexer.embedders import decoders_for

    assert decoders_for([f"clip-{n}.mp4" for n in range(4)], 32, 2) == 2
    assert decoders_for([f"clip-{n}.MOV" for n in range(4)], 32, 8) == 4
    assert decoders_for([f"photo-{n}.jpg" for n in range(8)], 32, 2) == 1
    assert decoders_for([f"photo-{n}.jpg" for n in range(70)], 32, 2) == 2


def test_frames_of_one_video_are_not_duplicates(cli, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "still.mp4", [(sample_image(5), 8)])  # four identical frames
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[6]["image"], folder)
    assert cli("index", folder, *SAMPLE_MODEL).exit_code == 0
    assert json.loads(cli("duplicates", "--json").stdout) == []
    shutil.copy(folder / "still.mp4", folder / "copy.mp4")  # another video with the same frames is one
    assert cli("index", folder).exit_code == 0
    groups = json.loads(cli("duplicates", "--json").stdout)
    assert [sorted({Path(m["path"]).name for m in g}) for g in groups] == [["copy.mp4", "still.mp4"]]


@pytest.mark.slow
def test_a_video_of_two_scenes_is_in_two_groups_and_never_joins_their_photos(cli, tmp_path: Path) -> None:
    """Each scene of a video resembles another photo: two groups, the video in each at its moment. Its frames are
    not one node, so the two photos, unlike each other, are never put in one group through it."""
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "trip.mp4", [(sample_image(5), 4), (sample_image(6), 4)])
    for n in (5, 6):  # each scene as a photo, as the video shows it
        sample_image(n).convert("RGB").resize((160, 160)).save(folder / f"scene-{n}.png")
    assert cli("index", folder, *SAMPLE_MODEL).exit_code == 0
    groups = json.loads(cli("duplicates", "--json").stdout)
    named = sorted(sorted((Path(m["path"]).name, m.get("time")) for m in g) for g in groups)
    assert [[name for name, _ in g] for g in named] == [["scene-5.png", "trip.mp4"], ["scene-6.png", "trip.mp4"]]
    assert named[0][1][1] < 4 <= named[1][1][1], named  # the video in each group at that scene's moment


def test_the_copy_to_keep_is_the_oldest_when_pixels_and_bytes_tie(cli, tmp_path: Path) -> None:
    """Byte-identical copies tie on pixels and bytes: the oldest is the original (copies are made after it), even
    when it was indexed last."""
    import os

    folder = tmp_path / "media"
    folder.mkdir()
    original = SAMPLE_ROWS[5]["image"]
    shutil.copy(config.SAMPLE_DATA_DIR / original, folder / "a-copy.png")
    shutil.copy(config.SAMPLE_DATA_DIR / original, folder / "b-original.png")  # (a higher id than the copy)
    os.utime(folder / "b-original.png", (1_500_000_000, 1_500_000_000))
    os.utime(folder / "a-copy.png", (1_700_000_000, 1_700_000_000))
    assert cli("index", folder, *SAMPLE_MODEL).exit_code == 0
    (group,) = json.loads(cli("duplicates", "--json").stdout)
    assert [Path(m["path"]).name for m in group] == ["b-original.png", "a-copy.png"]
    assert group[0]["keep"] and group[0]["reason"] == "the same pixels and file size as the others, and the oldest"


def test_videos_move_change_disappear_and_break_like_photos(cli, library_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    video = write_video(folder / "a.mp4", [(sample_image(0), 4)])
    (folder / "broken.mov").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    first = json.loads(cli("index", folder, *SAMPLE_MODEL, "--json").stdout)
    assert first["added"] == 1 and [Path(f["path"]).name for f in first["failed"]] == ["broken.mov"]
    assert first["failed"][0]["error"].startswith("cannot read video")
    (folder / "sub").mkdir()
    video.rename(folder / "sub" / "b.mp4")
    assert json.loads(cli("index", folder, "--json").stdout)["moved"] == 1
    hit = search_hits(cli("search", SAMPLE_ROWS[0]["caption"], "-k", "1", "--json"))[0]
    assert hit["path"] == str(folder / "sub" / "b.mp4")
    write_video(folder / "sub" / "b.mp4", [(sample_image(1), 2), (sample_image(0), 2), (sample_image(1), 4)])  # new content
    assert json.loads(cli("index", folder, "--json").stdout)["updated"] == 1
    hit = search_hits(cli("search", SAMPLE_ROWS[0]["caption"], "-k", "1", "--json"))[0]
    assert 2 <= hit["time"] < 4  # the new video's frames, not the old ones
    assert len(Library(library_dir).store.frame_files()) == 4  # 8 s, a frame every 2 s: the old rows are gone
    (folder / "sub" / "b.mp4").unlink()
    assert json.loads(cli("index", folder, "--json").stdout)["removed"] == 1
    assert search_hits(cli("search", "x", "-k", "5", "--json")) == []


def test_the_web_shows_a_video_frame_and_serves_byte_ranges(cli, library_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from clipdex.cli.web import create_app

    folder = tmp_path / "media"
    folder.mkdir()
    video = write_video(folder / "clip.mp4", [(sample_image(0), 4), (sample_image(1), 4)])
    assert cli("index", folder, *SAMPLE_MODEL).exit_code == 0
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    hit = client.get("/api/search", params={"q": SAMPLE_ROWS[1]["caption"], "k": 1}).json()[0]
    assert 4 <= hit["time"] < 8
    thumb = client.get(f"/api/items/{hit['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(thumb.content)).convert("RGB").resize((160, 160))
    expected = sample_image(1).convert("RGB").resize((160, 160))
    other = sample_image(0).convert("RGB").resize((160, 160))
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
