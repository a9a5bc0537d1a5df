"""The library API on its own: `import clipdex`, then index → search → captions, no CLI involved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import clipdex
from clipdex.retrieval import config
from tests.conftest import SAMPLE_ROWS


@pytest.mark.slow
def test_index_search_and_captions_through_the_python_api(tmp_path: Path, photos, monkeypatch) -> None:
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))  # its own model cache, checked at the end
    folder = photos(12)
    library = clipdex.open_library(tmp_path / "lib", create=True)
    report = clipdex.index(library, [folder], clipdex.IndexOptions(model="clipdex-tiny", export_text=False))
    assert (report.added, report.failed) == (12, [])
    assert not (tmp_path / "cache").exists()  # export_text=False: the model was not prepared (a search may)
    first = folder / Path(SAMPLE_ROWS[0]["image"]).name
    hits = clipdex.search(library, str(first))  # an existing file is an image term: the photo finds itself
    assert hits[0].path == str(first) and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert clipdex.search(library, "a red circle + blue", k=3) and len(clipdex.search(library, "snow", k=3)) == 3
    added = clipdex.add_captions(library, [row["caption"] for row in SAMPLE_ROWS[:12]])
    assert (added.added, added.already_present, added.skipped) == (12, 0, [])
    described = clipdex.captions(library, first, k=12)
    assert {h.caption for h in described} == {row["caption"] for row in SAMPLE_ROWS[:12]}
    status = clipdex.status(library)
    assert status["counts"]["image"] == 12 and status["model"] == "clipdex-tiny"


def test_writers_take_the_lock_themselves(tmp_path: Path, photos) -> None:
    library = clipdex.open_library(tmp_path / "lib", create=True)
    other = clipdex.open_library(tmp_path / "lib")
    with other.writer():
        with pytest.raises(clipdex.ClipdexError, match="being written"):
            clipdex.index(library, [photos(2)], clipdex.IndexOptions(model="clipdex-tiny", export_text=False))


def test_open_library_does_not_create_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(clipdex.ClipdexError, match="no library"):
        clipdex.open_library(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_import_clipdex_is_light() -> None:
    script = "import sys, clipdex; assert 'torch' not in sys.modules and 'faiss' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=config.PACKAGE_DIR)
    assert done.stdout.strip() == "ok", done.stderr
