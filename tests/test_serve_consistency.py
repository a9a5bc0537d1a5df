"""A running server and the CLI share one library: every answer must come from one consistent (model, vectors)
state, whatever another process committed meanwhile."""

from __future__ import annotations

import copy
from pathlib import Path

import open_clip
import pytest
import torch
from fastapi.testclient import TestClient

from clipdex.cli.web import create_app
from clipdex.retrieval.library import Library
from clipdex.retrieval.models.checkpoint import CheckpointInfo, save_checkpoint
from tests.helpers import LOCAL, search_hits

QUERY = "a red circle"


def _same_size_finetune(tiny, path: Path) -> Path:
    """clipdex-tiny with every weight moved: what a fine-tune is to the library (same architecture, same
    dimension, other vectors)."""
    model = copy.deepcopy(tiny.model)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    save_checkpoint(path, model, CheckpointInfo("clipdex-tiny", open_clip.get_model_config("clipdex-tiny")))
    return path


def _scores(hits: list[dict]) -> dict[str, float]:
    return {hit["path"]: hit["score"] for hit in hits}


@pytest.mark.slow
@pytest.mark.parametrize("new_model", ["clipdex-small", "finetuned"])
def test_a_running_server_follows_a_reembed(cli, photos, library_dir: Path, tiny, tmp_path: Path, new_model) -> None:
    folder = photos(6)
    assert cli("index", folder, "--model", "clipdex-tiny", "--no-export").exit_code == 0
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL, raise_server_exceptions=False)
    before = client.get("/api/search", params={"q": QUERY, "k": 6})
    assert before.status_code == 200
    image_id = before.json()[0]["id"]
    model = new_model if new_model != "finetuned" else str(_same_size_finetune(tiny, tmp_path / "ft.safetensors"))
    result = cli("index", "--reembed", "--model", model, "--no-export")
    assert result.exit_code == 0, result.output

    after = client.get("/api/search", params={"q": QUERY, "k": 6})
    assert after.status_code == 200, after.text
    expected = search_hits(cli("search", QUERY, "-k", "6", "--json"))  # a fresh process's answer
    assert _scores(after.json()) == pytest.approx(_scores(expected), abs=1e-4)
    assert _scores(after.json()) != pytest.approx(_scores(before.json()), abs=1e-4)  # the re-embed did change them
    similar = client.get(f"/api/items/{image_id}/similar", params={"k": 1})
    assert similar.status_code == 200 and similar.json()[0]["id"] == image_id
    assert similar.json()[0]["score"] == pytest.approx(1.0, abs=1e-4)  # its own new vector, not the old one
    assert client.get("/api/status", params={"paths": "true"}).json()["model"] == model
