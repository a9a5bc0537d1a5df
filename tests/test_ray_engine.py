"""Indexing with --engine ray on a local Ray cluster gives the local engine's items and vectors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clipdex.retrieval.digest import file_sha256
from clipdex.retrieval.library import Library
from clipdex.retrieval.storage.store import IMAGE
from tests.conftest import SAMPLE_ROWS
from tests.helpers import sample_image, write_video

if os.environ.get("CLIPDEX_REQUIRE_RAY"):  # CI installs the dev extra: a broken Ray must fail there, not skip
    import ray
else:
    ray = pytest.importorskip("ray", reason="the Ray engine is optional: pip install 'clipdex[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _vectors(library_dir: Path) -> dict[tuple[str, float | None], np.ndarray]:
    library = Library(library_dir)
    out = {}
    for ids, vectors in library.store.vectors(IMAGE, library.require_identity().dim):
        rows = library.store.items(ids)
        out.update({(rows[int(i)]["key"], rows[int(i)]["frame_time"]): v for i, v in zip(ids, vectors)})
    return out


@pytest.mark.slow
def test_ray_engine_matches_local_and_reruns_incrementally(local_ray, cli, photos, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from clipdex.cli.app import app


    folder = photos(len(SAMPLE_ROWS))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    write_video(folder / "clip.mp4", [(sample_image(3), 3), (sample_image(9), 3)])  # the engines agree on videos too
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    runner = CliRunner()

    def index(library: Path, *extra: str) -> dict:
        result = runner.invoke(app, ["--library", str(library), "index", str(folder), "--model", "clipdex-tiny",
                                     "--json", *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    local = index(local_dir)
    distributed = index(ray_dir, "--engine", "ray")
    assert distributed["added"] == local["added"] == len(SAMPLE_ROWS) + 1
    assert [f["path"] for f in distributed["failed"]] == [f["path"] for f in local["failed"]] == [str(folder / "broken.jpg")]
    a, b = _vectors(local_dir), _vectors(ray_dir)
    assert a.keys() == b.keys() and sum(path.endswith("clip.mp4") for path, _ in a) >= 2  # a vector a frame
    cosines = np.array([float(a[k] @ b[k]) for k in a])
    assert cosines.min() >= 0.9999
    hashed = {s.path: s.sha256 for s in Library(ray_dir).store.images()}  # by the actors, from the bytes read
    assert hashed == {s.path: s.sha256 for s in Library(local_dir).store.images()}
    assert all(hashed[p] == file_sha256(p) for p in list(hashed)[:20])

    (folder / sorted(p.name for p in folder.iterdir())[0]).unlink()
    again = index(ray_dir, "--engine", "ray")
    assert (again["added"], again["removed"], again["unchanged"]) == (0, 1, len(SAMPLE_ROWS))
