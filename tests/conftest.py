"""Shared fixtures: the real tiny model, real libraries in temp folders, the real CLI."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval import config

SAMPLE_ROWS = list(csv.DictReader(config.SAMPLE_CAPTIONS.open(encoding="utf-8")))


@pytest.fixture(scope="session")
def tiny():
    """clipdex-tiny with its seeded init: the same weights in every process, so CLI runs agree with it."""
    from retrieval.factory import load_encoder

    return load_encoder("clipdex-tiny", None, "cpu")


@pytest.fixture
def photos(tmp_path: Path):
    """A function copying the first n sample images into a fresh folder the test may change."""

    def make(n: int, name: str = "photos") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for row in SAMPLE_ROWS[:n]:
            shutil.copy2(config.SAMPLE_DATA_DIR / row["image"], folder / Path(row["image"]).name)
        return folder

    return make


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    return tmp_path / "library"


@pytest.fixture
def cli(library_dir: Path):
    """Run the real typer app against the temp library; returns the click Result."""
    from cli.app import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--library", str(library_dir), *map(str, args)], catch_exceptions=False)

    return run
