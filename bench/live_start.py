"""Commands that stay open: how soon `clipdex serve` answers its first query, and what an idle `watch` holds.

    python bench/live_start.py [--model ViT-B-32] [--photos 16] [--runs 3] [--settle 5] [--json]

A library of camera JPEGs is indexed with the model once (random weights from a file, prepared for torch-free
runs). Then:
- serve: from starting the process to the first `/api/search` answer over real HTTP (polled every 20 ms),
  median of --runs fresh processes;
- watch and serve --watch: resident memory (VmRSS of the process, its decode workers included while they run)
  once the catch-up is done and the folder has been quiet for --settle seconds, and after one batch of new photos
  was indexed and the process went idle again; for watch also right after it answered a CLI query (text tower
  and index loaded) and once its keep-alive ended.
The last line is one JSON object with the figures (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.startup import weights_file  # noqa: E402
from bench.synthetic import camera_jpegs  # noqa: E402

QUERY = "a+dog+on+a+beach"
KEEP_ALIVE = 5  # seconds watch keeps a query's model (300 by default: shortened to measure what it drops to)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clipdex(library: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clipdex", "-L", str(library), *args], cwd=ROOT, **popen)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def first_answer(library: Path) -> float:
    """Seconds from starting `serve` to its first search answer."""
    port = _free_port()
    started = time.perf_counter()
    server = _clipdex(library, "serve", "--port", str(port), "--no-token", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                      text=True)
    try:
        while server.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/search?q={QUERY}&k=5"
                with urllib.request.urlopen(url, timeout=10) as response:
                    json.loads(response.read())
                return time.perf_counter() - started
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"serve stopped: {server.stderr.read()[-500:]}")
    finally:
        _stop(server)


def idle_memory(library: Path, folder: Path, extra: list[str], settle: float) -> dict[str, float]:
    """VmRSS in MB once idle after the catch-up, once idle again after a batch of new photos, and for `watch`
    (which answers the CLI's queries): right after answering one, and once its keep-alive (KEEP_ALIVE s) ended.
    `extra` is the command up to the folder it watches."""
    process = _clipdex(library, *extra, str(folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if "watching" in line:
                break
        time.sleep(settle)
        figures = {"idle_mb": _rss_mb(process.pid)}
        for source in sorted(folder.glob("*.jpg"))[:4]:
            shutil.copy(source, folder / f"new-{source.name}")
        time.sleep(settle + 4)
        figures["after_batch_mb"] = _rss_mb(process.pid)
        if extra[0] == "watch":
            subprocess.run([sys.executable, "-m", "clipdex", "-L", str(library), "search", "a dog", "-f"], cwd=ROOT,
                           check=True, capture_output=True)
            figures["answering_mb"] = _rss_mb(process.pid)
            time.sleep(KEEP_ALIVE + 3)
            figures["after_keep_alive_mb"] = _rss_mb(process.pid)
        return figures
    finally:
        _stop(process)
        for new in folder.glob("new-*.jpg"):
            new.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, library = Path(tmp) / "photos", Path(tmp) / "lib"
        shutil.copytree(camera_jpegs(args.photos), folder)
        os.environ.setdefault("CLIPDEX_CACHE", str(Path(tmp) / "cache"))
        weights = weights_file(args.model, Path(tempfile.gettempdir()))  # random, saved once
        subprocess.run([sys.executable, "-m", "clipdex", "-L", str(library), "index", str(folder), "--model",
                        args.model, "--pretrained", str(weights)], cwd=ROOT, check=True, capture_output=True)
        answers = [first_answer(library) for _ in range(args.runs)]
        print(f"serve: first answer {statistics.median(answers):.2f} s after start (median of {args.runs}: "
              + ", ".join(f"{a:.2f}" for a in answers) + ")")
        figures = {"serve_first_answer_s": round(statistics.median(answers), 3)}
        commands = (("watch", ["watch", "--settle", "0.5", "--keep-alive", str(KEEP_ALIVE)]),
                    ("serve_watch", ["serve", "--no-token", "--port", str(_free_port()), "--watch"]))
        for name, extra in commands:
            memory = idle_memory(library, folder, extra, args.settle)
            print(f"{'watch' if name == 'watch' else 'serve --watch'}: {memory['idle_mb']:.0f} MB resident when "
                  f"idle, {memory['after_batch_mb']:.0f} MB idle again after a batch of 4 new photos"
                  + (f"; {memory['answering_mb']:.0f} MB having answered a CLI query, "
                     f"{memory['after_keep_alive_mb']:.0f} MB once its keep-alive ({KEEP_ALIVE} s) ended"
                     if "answering_mb" in memory else ""))
            figures.update({f"{name}_{key}": round(value) for key, value in memory.items()})
    if args.json:
        print(json.dumps({"model": args.model, **figures}))


if __name__ == "__main__":
    main()
