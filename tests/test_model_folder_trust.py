"""A model folder is trusted for what it is, all of it: every file its towers read is part of its identity, its
config.json must agree with what its towers give, and anything else (an impossible number, JSON nested
thousands deep, a tower taking other inputs or giving other shapes, NaN) is one line before anything is stored."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.model_folder import folder_fingerprint
from tests.helpers import clipdex_command, without_torch, without_torch_command, without_torch_env, search_hits


def _copy(tmp_path: Path, name: str = "model") -> Path:
    return shutil.copytree(config.SAMPLE_MODEL_FOLDER, tmp_path / name)


def _edit_config(folder: Path, edit) -> None:
    values = json.loads((folder / "config.json").read_text())
    edit(values)
    (folder / "config.json").write_text(json.dumps(values))


def _rewire(folder: Path, tower: str, change) -> None:
    """Change a tower's ONNX graph with `change(model, helper)`."""
    import onnx
    from onnx import helper

    path = folder / tower / "model.onnx"
    model = onnx.load(str(path))
    change(model, helper)
    onnx.save(model, str(path))


def _after_output(op: str, **attributes):
    """A change that passes the tower's output through one more node (its output keeps the name `embedding`)."""

    def change(model, helper) -> None:
        out = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [f"{out}_raw" if o == out else o for o in node.output]
        inputs = [f"{out}_raw"]
        if op in ("Unsqueeze", "ReduceMean", "Mul"):
            import onnx

            value = {"Unsqueeze": np.array([1]), "ReduceMean": np.array([0]), "Mul": np.array([np.nan], np.float32)}[op]
            model.graph.initializer.append(onnx.numpy_helper.from_array(value, f"{out}_{op}_arg"))
            inputs.append(f"{out}_{op}_arg")
        model.graph.node.append(helper.make_node(op, inputs, [out], **attributes))
        model.graph.output[0].ClearField("type")

    return change


def test_every_file_under_a_tower_and_the_config_is_part_of_the_identity(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    seen = {folder_fingerprint(folder)}
    for relative in ("visual/.w.bin", "visual/weights/w.bin", "textual/.hidden/x.data"):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 64)
        seen.add(folder_fingerprint(folder))
        path.write_bytes(b"\0" * 63 + b"\1")  # the same size, one byte changed
        seen.add(folder_fingerprint(folder))
    _edit_config(folder, lambda v: v["text_cfg"].update(context_length=3))
    seen.add(folder_fingerprint(folder))
    assert len(seen) == 8


@pytest.mark.slow
def test_an_edited_prepared_config_is_never_trusted(tmp_path: Path, monkeypatch) -> None:
    from clipdex.retrieval.models.loading import load_model
    from clipdex.retrieval.models.prepared import open_prepared, prepared_path

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    prepared = load_model(str(config.SAMPLE_MODEL), None, "cpu")
    identity = prepared.identity
    assert open_prepared(identity, "fp32") is not None
    folder = prepared_path(identity, "fp32")
    _edit_config(folder, lambda v: v["text_cfg"].update(context_length=3))
    assert open_prepared(identity, "fp32") is None
    for path in (folder, folder / "textual"):  # made again, then: a folder its group may write is not trusted
        shutil.rmtree(folder)
        load_model(str(config.SAMPLE_MODEL), None, "cpu")
        path.chmod(0o770)
        assert open_prepared(identity, "fp32") is None


BROKEN_CONFIGS = {
    "embed_dim Infinity": lambda f: _edit_config(f, lambda v: v.update(embed_dim=float("inf"))),
    "context_length Infinity": lambda f: _edit_config(f, lambda v: v["text_cfg"].update(context_length=float("inf"))),
    "context_length x": lambda f: _edit_config(f, lambda v: v["text_cfg"].update(context_length="x")),
    "config nested": lambda f: (f / "config.json").write_text("[" * 200_000 + "]" * 200_000),
    "tokenizer_config nested": lambda f: (f / "textual" / "tokenizer_config.json").write_text("[" * 200_000),
    "preprocess size Infinity": lambda f: (f / "visual" / "preprocess_cfg.json").write_text('{"size": Infinity}'),
    "preprocess size 0": lambda f: (f / "visual" / "preprocess_cfg.json").write_text('{"size": 0}'),
    "preprocess size unlike the tower's": lambda f: (
        _rewire(f, "visual", lambda m, h: [d.ClearField("dim_param") or setattr(d, "dim_value", 64)
                                           for d in m.graph.input[0].type.tensor_type.shape.dim[2:]]),
        (f / "visual" / "preprocess_cfg.json").write_text('{"size": 32}')),
    "embed_dim unlike the towers'": lambda f: _edit_config(f, lambda v: v.update(embed_dim=64)),
    "image tower with a fixed batch of 2": lambda f: _rewire(
        f, "visual", lambda m, h: [d.ClearField("dim_param") or setattr(d, "dim_value", 2)
                                   for d in m.graph.input[0].type.tensor_type.shape.dim[:1]]),
    "text tower with a position_ids input": lambda f: _rewire(
        f, "textual", lambda m, h: m.graph.input.append(h.make_tensor_value_info("position_ids", 7, ["b", "n"]))),
    "image tower giving one row per batch": lambda f: _rewire(f, "visual", _after_output("ReduceMean", keepdims=1)),
    "image tower giving (batch, 1, dim)": lambda f: _rewire(f, "visual", _after_output("Unsqueeze")),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(BROKEN_CONFIGS))
def test_a_folder_that_disagrees_with_itself_is_one_line_and_stores_nothing(tmp_path: Path, photos, damage) -> None:
    folder = _copy(tmp_path)
    BROKEN_CONFIGS[damage](folder)
    library = tmp_path / "library"
    done = without_torch("-L", library, "index", photos(3), "--model", folder)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unexpected" not in errors[0] and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not library.exists()  # no library bound to a model that cannot run
    if damage == "context_length x":
        assert "context_length" in errors[0]


@pytest.mark.slow
def test_a_query_on_a_tower_giving_nan_is_one_line(tmp_path: Path, photos) -> None:
    folder = _copy(tmp_path)
    library = tmp_path / "library"
    assert without_torch("-L", library, "index", photos(2), "--model", folder).returncode == 0
    damaged = _copy(tmp_path, "damaged")
    _rewire(damaged, "textual", _after_output("Mul"))
    for name in ("textual/model.onnx",):  # same identity as far as the library can tell: swapped in place
        shutil.copy(damaged / name, folder / name)
    done = without_torch("-L", library, "search", "a red circle", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "changed since this library was built" in done.stderr or "non-finite" in done.stderr
    from clipdex.retrieval.models.identity import ModelIdentity
    from clipdex.retrieval.models.model_folder import FolderModel

    with pytest.raises(ClipdexError, match="non-finite"):
        FolderModel(damaged, ModelIdentity("x", None, "files:x", 0)).encode_texts(["a red circle"])


def test_a_folder_refuses_cuda_in_one_line(tmp_path: Path, photos) -> None:
    from clipdex.retrieval.models.loading import load_model

    with pytest.raises(ClipdexError, match="runs as it was exported, on the CPU"):
        load_model("sample", None, "cuda")
    load_model("sample", None, "cpu")


def test_the_offline_switch_is_put_back_after_an_unreachable_hub(monkeypatch) -> None:
    import huggingface_hub.constants as hub_constants

    from clipdex.retrieval.models.hub import hub_access

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    before = hub_constants.HF_HUB_OFFLINE
    with hub_access() as online:
        assert not online and os.environ["HF_HUB_OFFLINE"] == "1" and hub_constants.HF_HUB_OFFLINE
    assert "HF_HUB_OFFLINE" not in os.environ and hub_constants.HF_HUB_OFFLINE == before


@pytest.mark.slow
def test_export_model_stopped_half_way_leaves_no_partial_folder_and_shares_readable_files(tmp_path: Path) -> None:
    out = tmp_path / "exported"
    process = subprocess.Popen(clipdex_command(None, "export-model", "clipdex-tiny", out), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".clipdex-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert not out.exists() and not list(tmp_path.glob(".clipdex-*"))
    done = subprocess.run(clipdex_command(None, "export-model", "clipdex-tiny", out), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for path in [out, *out.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path


@pytest.mark.slow
def test_a_library_bound_to_a_hub_name_ignores_a_same_named_folder_and_a_moved_folder_is_said(tmp_path: Path,
                                                                                              photos) -> None:
    hub = tmp_path / "hf-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--someone--clip-sample"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(config.SAMPLE_MODEL_FOLDER, repo / "snapshots" / commit)
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    library = tmp_path / "library"
    assert without_torch("-L", library, "index", photos(2), "--model", "someone/clip-sample", env=env).returncode == 0
    work = tmp_path / "work"
    (work / "someone" / "clip-sample").mkdir(parents=True)  # a folder of that name, no model in it
    done = subprocess.run(without_torch_command("-L", library, "search", "a red circle", "--json"), cwd=work,
                          capture_output=True, text=True, env=without_torch_env(env), timeout=120)
    assert done.returncode == 0 and len(search_hits(done)) == 2, done.stderr[-2000:]

    folder = _copy(tmp_path, "my-model")
    moved = tmp_path / "folders-library"
    assert without_torch("-L", moved, "index", photos(2, "more"), "--model", folder).returncode == 0
    folder.rename(tmp_path / "elsewhere")
    status = json.loads(without_torch("-L", moved, "status", "--json").stdout)
    assert not status["prepared"] and f"model folder {folder} is gone" in status["unprepared_because"]
    gone = without_torch("-L", moved, "search", "a red circle")
    assert gone.returncode == 1 and f"{folder} is gone (moved or removed)" in gone.stderr
    assert "open_clip name" not in gone.stderr


def test_the_store_refuses_vectors_of_another_length_or_norm_before_writing_any(tmp_path: Path) -> None:
    from clipdex.retrieval.errors import Refused
    from clipdex.retrieval.library import Library
    from clipdex.retrieval.models.identity import ModelIdentity
    from clipdex.retrieval.storage.store import IMAGE, NewItem

    library = Library(tmp_path / "library", create=True)
    library.store.bind_model(ModelIdentity("m", None, "files:m", 4))

    def item(path: str, vector) -> NewItem:
        return NewItem(IMAGE, path, np.asarray(vector, np.float32), size=1, mtime=0.0)

    unit = [1.0, 0.0, 0.0, 0.0]
    for bad in ([0.5, 0.5, 0.5, 0.5, 0.0], [[1.0, 0.0, 0.0, 0.0]], [2.0, 0.0, 0.0, 0.0], [np.nan, 0, 0, 0]):
        with pytest.raises(Refused):
            library.store.write(inserts=[item("/a.png", unit), item("/b.png", bad)])
    assert library.store.counts()["image"] == 0
    library.store.write(inserts=[item("/a.png", unit), item("/b.png", [0.6, 0.8, 0.0, 0.0])])
    assert library.store.counts()["image"] == 2


def test_a_folder_not_saved_optimised_is_kept_optimised_in_the_cache_and_never_trusted_damaged(tmp_path: Path,
                                                                                               monkeypatch) -> None:
    from clipdex.retrieval.models.identity import ModelIdentity
    from clipdex.retrieval.models.model_folder import FolderModel

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    folder = _copy(tmp_path)
    identity = ModelIdentity(str(folder), None, folder_fingerprint(folder), 0)
    queries = ["a red circle", "two blue squares"]
    first = FolderModel(folder, identity).encode_texts(queries)
    kept = sorted((tmp_path / "cache" / "optimised").glob("*/model.onnx"))
    assert len(kept) == 1 and (kept[0].parent / "model.onnx.data").is_file()  # the text tower, weights beside it
    assert np.allclose(FolderModel(folder, identity).encode_texts(queries), first, atol=1e-5)
    kept[0].write_bytes(b"not a graph")  # damaged: made again, never used
    assert np.allclose(FolderModel(folder, identity).encode_texts(queries), first, atol=1e-5)
    assert kept[0].stat().st_size > 100
    kept[0].chmod(0o666)  # another user could have written it: not used, made again
    assert np.allclose(FolderModel(folder, identity).encode_texts(queries), first, atol=1e-5)
    assert kept[0].stat().st_mode & 0o022 == 0
