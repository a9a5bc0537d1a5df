"""A disk that fills up while indexing: one line saying what happened (never SQL, parameters or a link to
SQLAlchemy's pages), and the library keeps what it had. The disk is made full for the child process alone: its
file-size limit is set just above the database's size (writes past it fail as on a full disk)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from clipdex.retrieval import config
from tests.helpers import clipdex_command, limited

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_full_disk_while_indexing_says_so_in_one_line_and_keeps_the_library(tmp_path: Path) -> None:
    photos, library = tmp_path / "photos", tmp_path / "library"
    photos.mkdir()
    images = sorted((config.SAMPLE_DATA_DIR / "images").iterdir())
    for image in images[:2]:
        shutil.copy(image, photos)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = clipdex_command(library, "index", str(photos), "--model", "sample")
    assert subprocess.run(command, capture_output=True, env=env).returncode == 0
    for image in images[2:]:
        shutil.copy(image, photos)
    limit = (library / config.DATABASE_FILE).stat().st_size + 36_000
    done = subprocess.run(limited(command, file_size=limit), capture_output=True, text=True, env=env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
    assert "could not write to the library database" in lines[0]
    assert "[SQL" not in lines[0] and "sqlalche.me" not in lines[0] and "sqlite://" not in lines[0]
    status = subprocess.run(clipdex_command(library, "status", "--json"),
                            capture_output=True, text=True, env=env)
    assert json.loads(status.stdout)["counts"]["image"] >= 2  # what it had, and whole batches only
