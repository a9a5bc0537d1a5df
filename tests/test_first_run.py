"""A newcomer's first run on the light install: `clipdex index PHOTOS` with no flags fetches the default model
folder once from the hub in use (a loopback hub here, reached by the real huggingface_hub client through
HF_ENDPOINT), says what it fetches and how much, then indexes and searches without torch; what can go wrong on the
way (no network, a kill half-way, a file served wrong, a cache emptied) ends in one line and never in a model used
half-fetched."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from clipdex.retrieval import config
from clipdex.retrieval.models import catalogue
from tests.helpers import without_torch, without_torch_command, without_torch_env, search_hits
from tests.hub_server import Hub, folder_repo

DEFAULT = catalogue.default_entry()


@pytest.fixture
def hub(tmp_path: Path):
    """A hub serving the sample model under the default's hub id and commit, and the environment that points the
    CLI at it with caches of this test's own."""
    with Hub() as server:
        server.repos[DEFAULT.hub_id] = folder_repo(config.SAMPLE_MODEL_FOLDER, DEFAULT.revision)
        server.env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(tmp_path / "hf"),
                      "CLIPDEX_CACHE": str(tmp_path / "clipdex-cache"), "HF_HUB_OFFLINE": ""}
        yield server


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _errors(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_the_first_index_fetches_the_default_folder_once_saying_its_size(hub, tmp_path: Path, photos) -> None:
    pictures = photos(4)
    done = without_torch("-L", tmp_path / "library", "index", pictures, env=hub.env)
    assert done.returncode == 0, done.stderr[-2000:]
    size_mb = sum(len(data) for data in hub.repos[DEFAULT.hub_id].files.values()) / 1e6
    assert (f"fetching the default model ViT-B-32 (laion2b-s34b-b79k), {size_mb:,.0f} MB, once"
            in done.stderr), done.stderr
    assert "Fetching" not in done.stderr and "it/s" not in done.stderr  # huggingface's own bars are not shown
    assert "added 4" in done.stderr
    assert all(DEFAULT.revision in r for r in hub.requests if "/resolve/" in r)  # the pinned commit, nothing else
    status = json.loads(without_torch("-L", tmp_path / "library", "status", "--json", env=hub.env).stdout)
    assert status["model"] == f"{DEFAULT.hub_id} (at {DEFAULT.revision[:12]})" and status["prepared"]
    hits = search_hits(without_torch("-L", tmp_path / "library", "search", "a red circle", "--json",
                                    env=hub.env))
    assert len(hits) == 4

    asked = len(hub.requests)  # a second library, offline: from the cache, the hub never asked
    offline = without_torch("-L", tmp_path / "second", "index", pictures, env={**hub.env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and "added 4" in offline.stderr and "fetching" not in offline.stderr
    assert len(hub.requests) == asked


@pytest.mark.slow
def test_offline_with_nothing_cached_is_one_line_naming_the_ways_out_and_writes_nothing(tmp_path: Path,
                                                                                       photos) -> None:
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "CLIPDEX_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": ""}
    started = time.perf_counter()
    done = without_torch("-L", tmp_path / "library", "index", photos(2), env=env)
    assert time.perf_counter() - started < 10  # the process's start included; the hub check itself is ≤ 1.5 s
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = _errors(done)
    assert "ViT-B-32 (laion2b-s34b-b79k)" in line and "cannot be reached" in line and env["HF_ENDPOINT"] in line
    assert "clipdex models pull" in line and "--model PATH" in line and "--model sample" in line
    assert not (tmp_path / "library").exists()

    flagged = without_torch("-L", tmp_path / "library", "index", photos(1, "more"),
                            env={**env, "HF_HUB_OFFLINE": "1"})
    assert flagged.returncode == 1 and "HF_HUB_OFFLINE is set" in _errors(flagged)[0]
    assert not (tmp_path / "library").exists()


@pytest.mark.slow
def test_a_download_killed_half_way_is_never_used_and_the_next_run_finishes_it(hub, tmp_path: Path, photos) -> None:
    hub.bytes_per_second = 2_000_000  # the sample's 16 MB take about 8 s: time to be killed in the middle
    pictures = photos(2)
    blobs = Path(hub.env["HF_HUB_CACHE"]) / f"models--{DEFAULT.hub_id.replace('/', '--')}" / "blobs"
    text_tower = hub.repos[DEFAULT.hub_id].entry("textual/model.onnx")["lfs"]["oid"]  # 10 MB: 5 s to arrive
    process = subprocess.Popen(without_torch_command("-L", tmp_path / "library", "index", pictures),
                               env=without_torch_env(hub.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(blobs.glob(f"{text_tower}.*.incomplete")) and time.monotonic() < deadline:
        assert process.poll() is None
        time.sleep(0.05)
    time.sleep(1)  # in the middle of the text tower
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(blobs.glob("*.incomplete"))

    offline = without_torch("-L", tmp_path / "library", "index", pictures, env={**hub.env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1 and "is not in the local Hugging Face cache" in _errors(offline)[0]

    hub.bytes_per_second = None
    hub.requests.clear()
    done = without_torch("-L", tmp_path / "library", "index", pictures, env=hub.env)
    assert done.returncode == 0 and "added 2" in done.stderr, done.stderr[-2000:]
    assert not list(blobs.glob("*.incomplete"))
    assert any("/resolve/" in r for r in hub.requests)


@pytest.mark.slow
def test_a_file_the_hub_serves_wrong_is_never_used(hub, tmp_path: Path, photos) -> None:
    hub.repos[DEFAULT.hub_id].corrupt.add("visual/model.onnx")
    pictures = photos(2)
    done = without_torch("-L", tmp_path / "library", "index", pictures, env=hub.env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = _errors(done)
    assert "served visual/model.onnx" in line and "checksum" in line and "not used" in line
    assert not (tmp_path / "library").exists()
    snapshot = Path(hub.env["HF_HUB_CACHE"]) / f"models--{DEFAULT.hub_id.replace('/', '--')}" / "snapshots"
    assert not list(snapshot.glob("*/visual/model.onnx"))  # removed from the cache, not left to be found later

    hub.repos[DEFAULT.hub_id].corrupt.clear()
    again = without_torch("-L", tmp_path / "library", "index", pictures, env=hub.env)
    assert again.returncode == 0 and "added 2" in again.stderr, again.stderr[-2000:]


@pytest.mark.slow
def test_a_library_whose_folder_left_the_cache_fetches_it_again_or_says_so_offline(hub, tmp_path: Path,
                                                                                     photos) -> None:
    import shutil

    library = tmp_path / "library"
    assert without_torch("-L", library, "index", photos(3), env=hub.env).returncode == 0
    shutil.rmtree(hub.env["HF_HUB_CACHE"])
    status = json.loads(without_torch("-L", library, "status", "--json", env=hub.env).stdout)
    assert not status["prepared"] and "fetches it" in status["unprepared_because"]  # status itself fetches nothing
    assert not Path(hub.env["HF_HUB_CACHE"]).exists()
    offline = without_torch("-L", library, "search", "a red circle", env={**hub.env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1 and "not in the local Hugging Face cache" in _errors(offline)[0]
    found = without_torch("-L", library, "search", "a red circle", "--json", env=hub.env)
    assert found.returncode == 0 and len(search_hits(found)) == 3, found.stderr[-2000:]


@pytest.mark.slow
def test_models_lists_the_catalogue_pulls_and_frees_one_but_not_the_librarys_own(hub, tmp_path: Path,
                                                                                 photos) -> None:
    listed = json.loads(without_torch("models", "--json", env=hub.env).stdout)
    names = {row["name"] for row in listed}
    assert {"vit-b-32-laion2b", "vit-b-32-openai", "vit-b-16-siglip2", "vit-b-32-siglip2-256",
            "xlm-roberta-base-vit-b-32", "nllb-clip-base-siglip"} <= names
    for row in listed:
        assert {"name", "hub_id", "size_mb", "languages", "default", "cached"} <= row.keys()
        assert isinstance(row["default"], bool) and isinstance(row["cached"], bool) and row["languages"]
    assert [row["name"] for row in listed if row["default"]] == ["vit-b-32-laion2b"]
    assert not any(row["cached"] for row in listed)
    assert all(len(row["languages"]) > 20 for row in listed if row["name"].startswith(("xlm", "nllb")))

    pulled = without_torch("models", "pull", "default", "--json", env=hub.env)
    assert pulled.returncode == 0 and json.loads(pulled.stdout)["revision"] == DEFAULT.revision
    assert "fetching the default model" in pulled.stderr
    library = tmp_path / "library"
    assert without_torch("-L", library, "index", photos(2), env={**hub.env, "HF_HUB_OFFLINE": "1"}).returncode == 0
    listed = json.loads(without_torch("-L", library, "models", "--json", env=hub.env).stdout)
    [default] = [row for row in listed if row["default"]]
    assert default["cached"] and default["in_use"]

    refused = without_torch("-L", library, "models", "rm", "default", env=hub.env)
    assert refused.returncode == 1 and "--force" in _errors(refused)[0]
    assert without_torch("-L", library, "models", "rm", "vit-b-32-laion2b", "--force", env=hub.env).returncode == 0
    assert not json.loads(without_torch("models", "--json", env=hub.env).stdout)[0]["cached"]
    unknown = without_torch("models", "pull", "no such model", env=hub.env)
    assert unknown.returncode == 1 and "unknown model" in _errors(unknown)[0]


@pytest.mark.slow
def test_any_other_hub_folder_works_by_its_name_through_a_mirror(hub, tmp_path: Path, photos) -> None:
    hub.repos["someone/their-export"] = folder_repo(config.SAMPLE_MODEL_FOLDER)
    hub.env["HF_ENDPOINT"] = hub.url + "/"  # as mirrors are often written
    done = without_torch("-L", tmp_path / "library", "index", photos(2), "--model", "someone/their-export",
                         env=hub.env)
    assert done.returncode == 0 and "fetching someone/their-export" in done.stderr, done.stderr[-2000:]
    assert not any(DEFAULT.hub_id in r for r in hub.requests)


@pytest.mark.slow
def test_a_library_bound_to_an_open_clip_model_is_told_how_to_move_and_moves_without_torch(hub, tmp_path: Path,
                                                                                          photos) -> None:
    from tests.helpers import clipdex_command

    library, pictures = tmp_path / "library", photos(3)
    made = subprocess.run(clipdex_command(library, "index", pictures, "--model", "clipdex-tiny"), capture_output=True,
                          text=True, env={**os.environ, "CLIPDEX_CACHE": str(tmp_path / "torch-cache")}, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    stuck = without_torch("-L", library, "search", "a red circle", env=hub.env)  # its prepared folder is elsewhere
    assert stuck.returncode == 1 and "Traceback" not in stuck.stderr
    [line] = _errors(stuck)
    assert "needs torch" in line and "--model default --reembed" in line

    moved = without_torch("-L", library, "index", pictures, "--model", "default", "--reembed", env=hub.env)
    assert moved.returncode == 0 and "re-embedded 3 images" in moved.stderr, moved.stderr[-2000:]
    status = json.loads(without_torch("-L", library, "status", "--json", env=hub.env).stdout)
    assert status["model"].startswith(DEFAULT.hub_id) and status["counts"]["image"] == 3
    assert len(search_hits(without_torch("-L", library, "search", "a red circle", "--json", env=hub.env))) == 3


@pytest.mark.slow
def test_a_private_folder_needs_hf_token_and_says_so(hub, tmp_path: Path, photos) -> None:
    hub.repos["someone/private"] = folder_repo(config.SAMPLE_MODEL_FOLDER)
    hub.repos["someone/private"].token = "hf_secret_for_tests"
    refused = without_torch("-L", tmp_path / "library", "index", photos(2), "--model", "someone/private", env=hub.env)
    assert refused.returncode == 1 and "HF_TOKEN" in _errors(refused)[0] and "Traceback" not in refused.stderr
    assert "hf_secret_for_tests" not in refused.stderr
    done = without_torch("-L", tmp_path / "library", "index", photos(2, "more"), "--model", "someone/private",
                         env={**hub.env, "HF_TOKEN": "hf_secret_for_tests"})
    assert done.returncode == 0 and "added 2" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("listed", ["textual/../../../escaped.json", "visual/./preprocess_cfg.json", "huge"])
def test_a_hub_listing_files_outside_the_folder_or_too_large_is_refused(hub, tmp_path: Path, photos, listed) -> None:
    repo = folder_repo(config.SAMPLE_MODEL_FOLDER)
    if listed == "huge":
        repo.files["visual/model.onnx.data"] = b"x"
        entry = repo.entry
        repo.entry = lambda path: {**entry(path), "size": 10**12} if path == "visual/model.onnx.data" else entry(path)
    else:
        repo.files[listed] = b"{}"
    hub.repos["someone/hostile"] = repo
    done = without_torch("-L", tmp_path / "library", "index", photos(1), "--model", "someone/hostile", env=hub.env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("no file of a model folder" if listed != "huge" else "more than any model folder") in _errors(done)[0]
    assert not (tmp_path / "escaped.json").exists() and not (tmp_path / "library").exists()


@pytest.mark.slow
def test_a_hub_that_answers_nothing_or_garbage_is_one_line_in_bounded_time(hub, tmp_path: Path, photos) -> None:
    hub.repos["someone/export"] = folder_repo(config.SAMPLE_MODEL_FOLDER)
    pictures = photos(1)
    for answers, said in (("silence", "did not list someone/export within 2 s"),
                          ("garbage", "did not answer as a Hugging Face hub does")):
        hub.api_answers = answers
        started = time.perf_counter()
        done = without_torch("-L", tmp_path / "library", "index", pictures, "--model", "someone/export",
                             env={**hub.env, "CLIPDEX_HUB_ANSWER_SECONDS": "2"}, timeout=60)
        assert time.perf_counter() - started < 30
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert said in _errors(done)[0], done.stderr[-2000:]
        assert not (tmp_path / "library").exists()


@pytest.mark.slow
def test_endpoint_credentials_are_never_printed_and_a_non_url_endpoint_is_said(tmp_path: Path, photos) -> None:
    env = {"HF_ENDPOINT": f"http://someone:hunter2secret@127.0.0.1:{_closed_port()}",
           "HF_HUB_CACHE": str(tmp_path / "hf"), "CLIPDEX_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": ""}
    done = without_torch("-L", tmp_path / "library", "index", photos(1), env=env)
    assert done.returncode == 1 and "hunter2secret" not in done.stderr and "cannot be reached" in done.stderr
    bad = without_torch("-L", tmp_path / "library", "index", photos(1, "more"), env={**env, "HF_ENDPOINT": "not a url"})
    assert bad.returncode == 1 and "HF_ENDPOINT is not an http(s) URL" in _errors(bad)[0]


@pytest.mark.slow
def test_an_org_name_that_is_a_place_here_is_never_asked_of_the_hub(hub, tmp_path: Path, photos) -> None:
    work = tmp_path / "work"
    (work / "Pictures" / "holiday").mkdir(parents=True)  # a folder here that is no model
    pictures = photos(1)
    for model, said in (("Pictures/my-secret-project", "no such model folder"),
                        ("Pictures/holiday", "is not a model folder")):
        done = subprocess.run(without_torch_command("-L", tmp_path / "library", "index", pictures, "--model", model),
                              cwd=work, capture_output=True, text=True, env=without_torch_env(hub.env), timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert said in _errors(done)[0], done.stderr
    assert not any("Pictures" in r for r in hub.requests)


@pytest.mark.slow
def test_a_cached_file_changed_in_place_is_never_used_and_fetched_again(hub, tmp_path: Path, photos) -> None:
    assert without_torch("models", "pull", "default", env=hub.env).returncode == 0
    snapshot = Path(hub.env["HF_HUB_CACHE"]) / f"models--{DEFAULT.hub_id.replace('/', '--')}" / "snapshots"
    [visual] = snapshot.glob("*/visual/model.onnx")
    blob = visual.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte, the same size
    blob.write_bytes(bytes(data))
    offline = without_torch("-L", tmp_path / "library", "index", photos(1), env={**hub.env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1 and "not in the local Hugging Face cache" in _errors(offline)[0]
    hub.requests.clear()
    done = without_torch("-L", tmp_path / "library", "index", photos(1, "again"), env=hub.env)
    assert done.returncode == 0 and any("visual/model.onnx" in r for r in hub.requests), done.stderr[-2000:]
    assert visual.resolve().read_bytes() == hub.repos[DEFAULT.hub_id].files["visual/model.onnx"]
