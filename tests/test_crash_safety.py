"""Ctrl-C, SIGTERM and kill -9 during indexing keep what was committed and end the decode workers; kill -9 exactly where
it hurts: inside a database transaction, while the FAISS index or a checkpoint is being written, and while a reader
holds the database open. Random kill times almost never land there (a mutation audit showed WAL switched off and a
checkpoint written in place both passed), so each process here stops at a named pause point (retrieval/pause.py) and
is killed while it waits there."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.models.checkpoint import optimizer_path, read_checkpoint_info
from clipdex.retrieval.models.openclip.factory import load_encoder
from clipdex.retrieval.storage.store import IMAGE
from clipdex.retrieval.storage.vector_index import VectorIndex
from clipdex.retrieval.training.metrics_log import metrics_path, read_metrics
from tests.conftest import new_postgres_database
from tests.helpers import QUICK, SAMPLE, TINY, clipdex_command, sample_pairs, start_index, write_pairs


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_paused_process_outlives_its_test():
    """A test that fails before its kill would leave a process waiting at its pause point for ever."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_pause(process: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not marker.exists():
        assert process.poll() is None, f"ended before its pause point: {process.stderr.read()}"
        assert time.time() < deadline, "never reached its pause point"
        time.sleep(0.02)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def _count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM items WHERE kind = 'image'")).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_inside_a_write_transaction_leaves_no_trace_of_it(backend, request, tmp_path: Path, photos) -> None:
    """The third batch is written but not committed when the process dies: the two before it stay, the third is
    wholly absent, no writer lock is left behind, and the next run completes the library."""
    folder, library, marker = photos(12), tmp_path / "library", tmp_path / "paused"
    if backend == "sqlite":
        extra, url = (), f"sqlite:///{library / config.DATABASE_FILE}"
    else:
        extra = ("--database", url := new_postgres_database(request.getfixturevalue("postgres_server")))
    process = _clipdex(*_index(library, folder, *extra), pause="store-write@3", marker=marker)
    _wait_for_pause(process, marker)
    _kill(process)
    assert _count(url) == 4  # two whole batches of two; nothing of the third
    finished = _clipdex(*_index(library, folder, *extra))
    assert finished.wait(timeout=300) == 0, finished.stderr.read()
    assert _count(url) == 12
    if backend == "sqlite":
        _assert_consistent(library, folder)


@pytest.mark.slow
def test_kill_while_the_faiss_index_is_saved_keeps_the_saved_one_readable(tmp_path: Path, photos) -> None:
    folder, library, marker = photos(10), tmp_path / "library", tmp_path / "paused"
    later = sorted(folder.iterdir())[6:]
    for path in later:
        path.rename(tmp_path / path.name)
    first = _clipdex(*_index(library, folder))
    assert first.wait(timeout=300) == 0, first.stderr.read()
    for path in later:
        (tmp_path / path.name).rename(path)
    process = _clipdex(*_index(library, folder), pause="index-save", marker=marker)
    _wait_for_pause(process, marker)
    state = json.loads((library / f"{IMAGE}s.faiss.json").read_text())
    saved = list(library.glob(f"{IMAGE}s-*.faiss"))
    assert [p.name for p in saved] == [state["file"]]
    old = VectorIndex.load(saved[0], 64)
    assert old is not None and old.count == 6  # the file in place is the old index, whole, while the new is written
    _kill(process)
    finished = _clipdex(*_index(library, folder))
    assert finished.wait(timeout=300) == 0, finished.stderr.read()
    _assert_consistent(library, folder)


@pytest.mark.slow
def test_kill_while_a_checkpoint_is_saved_keeps_the_old_one_whole(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", sample_pairs(64))
    out, marker = tmp_path / "ft.safetensors", tmp_path / "paused"
    common = ("finetune", pairs, *SAMPLE, *QUICK, "--epochs", "1", "--lr", "1e-4", "--workers", "0", "-o", out)
    first = _clipdex(*common, "--seed", "1")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    before = read_checkpoint_info(out)
    weights, log = out.read_bytes(), metrics_path(out).read_text()
    for path in (out, optimizer_path(out), metrics_path(out)):  # beside a private checkpoint, private too
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    process = _clipdex(*common, "--seed", "2", pause="checkpoint-save", marker=marker)
    _wait_for_pause(process, marker)
    assert out.read_bytes() == weights  # the new weights are written elsewhere until they are whole
    _kill(process)
    assert read_checkpoint_info(out) == before
    assert metrics_path(out).read_text().startswith(log)  # the killed run's log follows the kept one's
    assert [r["event"] for r in read_metrics(metrics_path(out))][0] == "run"  # read back: the last run alone
    encoder = load_encoder(str(out), None, "cpu")
    assert np.isfinite(next(iter(encoder.model.parameters())).detach().numpy()).all()


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_ends_indexing_and_its_decode_workers(tmp_path: Path, photos, stop: str) -> None:
    """Ctrl-C reaches the whole process group; SIGTERM (a service manager, `kill`) only the main process: either
    way it stops as interrupted (130), and no decode worker is left running."""
    folder = photos(1)
    for i in range(300):
        shutil.copy(next(folder.iterdir()), folder / f"copy-{i:03d}.png")
    process = subprocess.Popen(
        clipdex_command(tmp_path / "lib", "index", str(folder), *SAMPLE, "--batch-size", "4"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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


@pytest.mark.slow
def test_kill_9_during_index_loses_nothing_committed(library_dir: Path, photos) -> None:
    folder = photos(120)
    rng = random.Random(1)
    kill_points = []
    for _ in range(3):
        start = _committed_images(library_dir)
        process = start_index(library_dir, folder)
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
    finished = start_index(library_dir, folder)
    assert finished.wait(timeout=300) == 0, finished.stderr.read().decode()
    _assert_consistent(library_dir, folder)


@pytest.mark.slow
def test_ctrl_c_during_index_keeps_what_was_written_and_exits_130(library_dir: Path, photos) -> None:
    folder = photos(120)
    process = start_index(library_dir, folder)
    deadline = time.time() + 120
    while _committed_images(library_dir) == 0 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    kept = _committed_images(library_dir)
    assert 0 < kept < 120
    finished = start_index(library_dir, folder)
    assert finished.wait(timeout=300) == 0
    _assert_consistent(library_dir, folder)


def _clipdex(*args, pause: str | None = None, marker: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if pause:
        env[config.PAUSE_ENV], env[config.PAUSE_FILE_ENV] = pause, str(marker)
    process = subprocess.Popen(clipdex_command(None, *args), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _started.append(process)
    return process


def _index(library: Path, folder: Path, *extra) -> list[str]:
    return ["--library", library, *extra, "index", folder, *TINY, "--batch-size", "2", "--workers", "0"]


def test_a_reader_holding_the_database_open_does_not_stall_a_writer(tmp_path: Path, photos) -> None:
    """What WAL is there for: a page left open in `serve` or a long search reads while `index` commits."""
    library = tmp_path / "library"
    first = _clipdex(*_index(library, photos(4)))
    assert first.wait(timeout=300) == 0, first.stderr.read()
    reader = sqlite3.connect(library / config.DATABASE_FILE, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM items WHERE kind = 'image'").fetchone()[0] == 4  # a snapshot, held
    more = photos(10, "more")
    second = _clipdex(*_index(library, more))
    try:
        assert second.wait(timeout=25) == 0, second.stderr.read()  # under SQLite's 30 s busy wait
    finally:
        second.kill()
    assert reader.execute("SELECT count(*) FROM items WHERE kind = 'image'").fetchone()[0] == 4  # its snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM items WHERE kind = 'image'").fetchone()[0] == 14
    reader.close()
