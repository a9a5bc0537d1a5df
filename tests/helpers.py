"""What many test modules share: the real CLI in a new process, JSON of a CLI run, one-line errors, exact search to
compare against, a live server, fine-tuning pairs, and media written here (DNG files, H.264 videos, photos of
words)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile
from PIL import Image, ImageDraw, ImageFont

from clipdex.retrieval import config
from clipdex.retrieval.describe.pairs import Pair
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import IMAGE
from tests.conftest import SAMPLE_ROWS

TINY = ("--model", "clipdex-tiny")  # the tiny config: its seeded weights are the same in every process
SAMPLE = ("--model", "sample")  # the bundled sample model
QUICK = ("--batch-size", "16", "--warmup", "0", "--weight-decay", "0", "--val-fraction", "0.25")  # seconds, not minutes
LOCAL = "http://127.0.0.1:8765"  # the server answers only to loopback host names (TestClient's default is not one)


def clipdex_command(library: Path | None, *args) -> list[str]:
    """The real CLI as a user runs it, in a new process: `python -m clipdex [--library LIBRARY] ARGS`."""
    return [sys.executable, "-m", "clipdex", *(["--library", str(library)] if library else []), *map(str, args)]


def limited(command: list[str], *, open_files: int | None = None, file_size: int | None = None,
            close_stdout: bool = False) -> list[str]:
    """COMMAND run with these limits, through tests/exec_limited.py (never a preexec_fn: see there why)."""
    options = [*(["--open-files", str(open_files)] if open_files is not None else []),
               *(["--file-size", str(file_size)] if file_size is not None else []),
               *(["--close-stdout"] if close_stdout else [])]
    return [sys.executable, str(Path(__file__).with_name("exec_limited.py")), *options, "--", *command]


def json_output(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def search_hits(result) -> list:
    """The hits of `clipdex search --json` ({"understood": …, "hits": […]}), from the CLI in this process or in
    a new one."""
    assert getattr(result, "exit_code", getattr(result, "returncode", 0)) == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert set(found) == {"understood", "hits"}, found
    return found["hits"]


def stored_vectors(library_dir: Path, kind: str = IMAGE) -> tuple[np.ndarray, np.ndarray]:
    library = Library(library_dir, create=False)
    parts = list(library.store.vectors(kind, library.require_identity().dim))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def brute_force(library_dir: Path, query: np.ndarray, k: int, kind: str = IMAGE) -> list[int]:
    ids, vectors = stored_vectors(library_dir, kind)
    return [int(i) for i in ids[np.argsort(-(vectors @ query), kind="stable")[:k]]]


@contextmanager
def live_server(app) -> Iterator[int]:
    """The app behind a real uvicorn on a free 127.0.0.1 port, in a thread; yields the port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def response_head(sock: socket.socket) -> bytes:
    """What the server sent until it closed the connection (or 64 KB of it)."""
    received = b""
    while len(received) < 65536:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


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


def sample_image(n: int) -> Image.Image:
    return Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"])


def words_image(text: str, size=(900, 600), font_size: int = 72, colour=(20, 20, 20)) -> Image.Image:
    image = Image.new("RGB", size, (245, 242, 235))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    y = size[1] // 4
    for line in text.split(" ", 1) if len(text) > 12 else [text]:
        draw.text((size[0] // 10, y), line, fill=colour, font=font)
        y += int(font_size * 1.6)
    return image


def start_index(library_dir: Path, folder: Path, *extra: str) -> subprocess.Popen:
    """`clipdex index` in a new process, two photos a batch and no decode workers: many commits to stop between."""
    return subprocess.Popen(
        clipdex_command(library_dir, "index", str(folder), *TINY, "--batch-size", "2", "--workers", "0", *extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def assert_one_line_error(result, *needles: str) -> None:
    """A CLI run that failed as a user should see it: exit 1, one `error:` line holding each needle, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def write_pairs(path: Path, pairs: list[Pair]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "caption"))
        writer.writerows((str(p.image), p.caption) for p in pairs)
    return path


def sample_pairs(n: int) -> list[Pair]:
    return [Pair(config.SAMPLE_DATA_DIR / r["image"], r["caption"]) for r in SAMPLE_ROWS[:n]]


def start_running(library: Path, *args) -> subprocess.Popen:
    """`clipdex watch|serve ARGS` in a new process, returned once it says it is watching or serving. Its output is
    read on in a thread (a full pipe would stall it) and kept for `stop_running`."""
    process = subprocess.Popen(
        clipdex_command(library, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.time() + 120
    for line in process.stdout:
        lines.append(line)
        if "watching" in line or "serving" in line or time.time() > deadline:
            break
    assert process.poll() is None, "".join(lines)
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    process.lines, process.reader = lines, reader
    return process


def stop_running(process: subprocess.Popen, timeout: float = 60) -> str:
    """Ctrl-C a process `start_running` started; everything it printed."""
    process.send_signal(signal.SIGINT)
    process.wait(timeout=timeout)
    process.reader.join(timeout=10)
    return "".join(process.lines)


def eventually(check, seconds: float = 60) -> bool:
    """Whether `check()` comes true within `seconds` (asked five times a second)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "torchvision")

# The CLI in a new process as the base install has it: torch, open_clip and torchvision cannot be imported.
_WITHOUT_TORCH = f"""
import sys
for name in {HEAVY!r}:
    sys.modules[name] = None
from clipdex.cli.app import main
sys.argv = ["clipdex", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exit:
    code = exit.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r} and sys.modules[m] is not None)
print("LOADED", loaded, file=sys.stderr)
sys.exit(code)
"""


def without_torch_command(*args) -> list[str]:
    """The real CLI as the light install has it (torch, open_clip and torchvision cannot be imported), for a
    process a test starts itself; run it with `without_torch_env`."""
    return [sys.executable, "-c", _WITHOUT_TORCH, *map(str, args)]


def without_torch_env(env: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(_ROOT), **(env or {})}


def without_torch(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """without_torch_command run to its end; checks that none of the torch modules was imported."""
    done = subprocess.run(without_torch_command(*args), cwd=_ROOT, capture_output=True, text=True,
                          env=without_torch_env(env), timeout=timeout)
    assert "LOADED []" in done.stderr, done.stderr[-2000:]
    return done
