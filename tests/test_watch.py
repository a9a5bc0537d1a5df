"""`clipdex watch` (and `serve --watch`): catches up, then follows copies, moves, renames and deletes through real
inotify (watchfiles); Ctrl-C during a burst loses nothing; a served library stays in sync."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clipdex.retrieval import config
from tests.conftest import SAMPLE_ROWS
from tests.helpers import SAMPLE, TINY, clipdex_command, eventually, start_running, stop_running, search_hits


@pytest.mark.slow
def test_renaming_a_folder_under_watch_moves_its_photos(library_dir: Path, tmp_path: Path, photos) -> None:
    """A folder renamed (`mv album album-2023`) is an event on a path without an extension: the photos must follow
    it, with their vectors, not linger at the old paths."""
    root = tmp_path / "root"
    root.mkdir()
    photos(3).rename(root / "album")
    process = start_running(library_dir, "watch", root, *SAMPLE, "--settle", "0.3")
    try:
        (root / "album").rename(root / "album-2023")
        deadline, paths = time.time() + 60, []
        while time.time() < deadline:
            out = subprocess.run(clipdex_command(library_dir, "search", "-f", "-k", "50", "a photo"),
                                 capture_output=True, text=True).stdout
            paths = out.splitlines()
            if len(paths) == 3 and all("/album-2023/" in p for p in paths):
                break
            time.sleep(0.5)
        assert len(paths) == 3 and all("/album-2023/" in p for p in paths), paths
    finally:
        stop_running(process)


def _paths(cli) -> set[str]:
    result = cli("search", "a photo", "-k", "500", "--mode", "clip", "--json")
    assert result.exit_code == 0, result.output  # a failed search is not "the file is gone"
    return {Path(h["path"]).name for h in search_hits(result)}


@pytest.mark.slow
def test_watch_catches_up_then_follows_copies_moves_and_deletes(cli, library_dir: Path, photos) -> None:
    folder = photos(3)
    process = start_running(library_dir, "watch", folder, *TINY, "--settle", "0.5")
    try:
        names = {p.name for p in folder.iterdir()}
        assert _paths(cli) == names  # caught up before watching
        new = SAMPLE_ROWS[10]["image"]
        shutil.copy(config.SAMPLE_DATA_DIR / new, folder / "copied.png")
        assert eventually(lambda: "copied.png" in _paths(cli)), "a copied file never became searchable"
        (folder / "sub").mkdir()
        (folder / "copied.png").rename(folder / "sub" / "moved.png")
        assert eventually(lambda: _paths(cli) == names | {"moved.png"})
        victim = sorted(folder.glob("*.*"))[0]
        victim.unlink()
        assert eventually(lambda: victim.name not in _paths(cli)), "a deleted file stayed in the library"
    finally:
        output = stop_running(process)
    assert process.returncode == 130, output
    assert "Traceback" not in output


@pytest.mark.slow
def test_sigint_during_a_burst_loses_nothing(cli, library_dir: Path, photos, tmp_path: Path) -> None:
    folder = photos(2)
    process = start_running(library_dir, "watch", folder, *TINY, "--settle", "0.5")
    burst = [SAMPLE_ROWS[20 + n]["image"] for n in range(120)]
    for n, image in enumerate(burst):
        shutil.copy(config.SAMPLE_DATA_DIR / image, folder / f"burst-{n:03d}{Path(image).suffix}")
    assert eventually(lambda: len(_paths(cli)) > 2, 60)  # the burst is being indexed
    output = stop_running(process, timeout=120)
    assert process.returncode == 130 and "Traceback" not in output, output
    kept = _paths(cli)
    assert 2 < len(kept) <= 122
    finished = json.loads(cli("index", folder, "--json").stdout)  # what was committed stays; the rest is added
    assert finished["added"] == 122 - len(kept) and finished["removed"] == 0
    assert len(_paths(cli)) == 122


@pytest.mark.slow
def test_serve_watch_keeps_the_served_library_in_sync(cli, library_dir: Path, photos) -> None:
    import socket
    import urllib.request

    folder = photos(2)
    assert cli("index", folder, *TINY).exit_code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        clipdex_command(library_dir, "serve", "--port", str(port), "--no-token", "--watch", str(folder)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def served() -> set[str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q=a+photo&k=50&mode=clip", timeout=5) as r:
                return {Path(h["path"]).name for h in json.loads(r.read())}
        except OSError:
            return set()

    try:
        assert eventually(lambda: len(served()) == 2, 90), "the server never answered"
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[40]["image"], folder / "arrived.png")
        assert eventually(lambda: "arrived.png" in served(), 60), "a new file never reached the served results"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
