"""Bad input gets one line and a non-zero exit, never a traceback: damaged databases and configs, hostile
checkpoints, odd queries and file names, malformed URLs and captions, usage errors; libraries stay private."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import given, HealthCheck, settings, strategies as st

from clipdex.cli.web import create_app
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library
from clipdex.retrieval.models.checkpoint import METADATA_KEY
from clipdex.retrieval.models.openclip.factory import load_encoder
from tests.conftest import SAMPLE_ROWS
from tests.helpers import LOCAL, SAMPLE, TINY, assert_one_line_error, limited, search_hits

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- broken library state


@pytest.mark.slow
def test_a_corrupt_or_random_database_is_one_line(cli, library_dir: Path, photos) -> None:
    cli("index", photos(2), *TINY)
    database = library_dir / config.DATABASE_FILE
    for damage in (b"this is not a database at all" * 100, os.urandom(8192)):
        for suffix in ("-wal", "-shm"):
            (library_dir / (config.DATABASE_FILE + suffix)).unlink(missing_ok=True)
        database.write_bytes(damage)
        for command in (("status",), ("search", "a red circle"), ("index", library_dir.parent)):
            assert_one_line_error(cli(*command), str(database))


def test_library_path_that_is_a_file_is_one_line(cli, library_dir: Path, photos) -> None:
    library_dir.write_text("I am a file")
    assert_one_line_error(cli("index", photos(1), *TINY), "is a file")
    assert_one_line_error(cli("status"), "is a file")


def test_malformed_config_json_is_one_line(cli, library_dir: Path, photos) -> None:
    cli("index", photos(1), *TINY)
    for bad in ("{not json", "[1, 2]"):
        (library_dir / config.LIBRARY_CONFIG_FILE).write_text(bad)
        assert_one_line_error(cli("status"), config.LIBRARY_CONFIG_FILE)


def _checkpoint_with_metadata(path: Path, metadata: dict[str, str]) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("metadata, needle", [
    ({METADATA_KEY: "{not json"}, "damaged clipdex metadata"),
    ({METADATA_KEY: json.dumps({"model_cfg": {}})}, "damaged clipdex metadata"),
    ({METADATA_KEY: json.dumps({"model_name": "no-such-arch", "model_cfg": {}})}, "unknown architecture"),
    ({METADATA_KEY: json.dumps({"model_name": "clipdex-tiny", "model_cfg": {}})}, "does not match"),
])
def test_bad_checkpoints_are_one_line(cli, photos, tmp_path: Path, metadata: dict, needle: str) -> None:
    checkpoint = _checkpoint_with_metadata(tmp_path / "bad.safetensors", metadata)
    assert_one_line_error(cli("index", photos(1), "--model", checkpoint), needle)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,caption\n")
    assert_one_line_error(cli("eval", pairs, "--model", checkpoint))


# ----------------------------------------------------------------------------------- literal user data


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=300))
def test_no_query_string_gives_a_traceback(cli, library_dir: Path, photos, query: str) -> None:
    if not (library_dir / config.DATABASE_FILE).exists():
        cli("index", photos(3), *TINY, "--no-export")
    result = cli("search", query, "-k", "3", "--json")
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert isinstance(search_hits(result), list) and "understood" in json.loads(result.stdout)
    elif result.exit_code == 2:  # read as an option ("-1"): a usage error, said as typer says them
        assert query.startswith("-") and "Error: " in result.output
    else:
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


_NAME_CHARS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(_NAME_CHARS, min_size=1, max_size=60))
def test_no_file_name_gives_a_traceback(cli, tmp_path_factory, name: str) -> None:
    if name in (".", "..") or len(name.encode()) > 200:
        return
    folder = tmp_path_factory.mktemp("names")
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"], folder / (name + ".png"))
    library = ("--library", folder / "lib")
    indexed = cli(*library, "index", folder, *TINY, "--hidden", "--no-export", "--json")
    assert indexed.exit_code == 0, indexed.output
    found = cli(*library, "search", "-f", "-0", "a photo")
    assert found.exit_code == 0 and found.stdout.split("\0")[:-1] == [str(folder / (name + ".png"))]


def test_a_folder_that_holds_no_library_is_left_as_it_is(tmp_path: Path) -> None:
    """`-L ~/Pictures` by mistake: a command that reads says there is no library there, and neither makes the
    folder's files private nor leaves a database in it."""
    from typer.testing import CliRunner

    from clipdex.cli.app import app

    folder = tmp_path / "Pictures"
    (folder / "sub").mkdir(parents=True, mode=0o755)
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    folder.chmod(0o755)
    (folder / "notes.txt").chmod(0o644)
    for command in (["status"], ["tags"], ["search", "a cat"], ["duplicates"], ["captions", str(folder / "x.jpg")]):
        result = CliRunner().invoke(app, ["--library", str(folder), *command])
        assert_one_line_error(result, "no library at")
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt", "sub"]
    assert [stat.S_IMODE(p.stat().st_mode) for p in (folder, folder / "sub", folder / "notes.txt")] == [0o755] * 2 + [0o644]


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(cli, library_dir: Path, photos) -> None:
    """`clipdex search … | true`: the reader closed its end before the first line; no "unexpected" error."""
    import subprocess

    assert cli("index", photos(4), *TINY).exit_code == 0
    for args in (("search", "a photo", "--json"), ("status",), ("duplicates", "--json")):
        command = [sys.executable, "-m", "clipdex", "--library", str(library_dir), *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        process.stdout.close()
        said = process.stderr.read()
        assert process.wait(timeout=120) == 1 and b"error" not in said and b"Traceback" not in said, (args, said)


def test_a_closed_or_full_standard_output_is_one_line_and_status_1(cli, library_dir: Path, photos,
                                                                    shapes: Path) -> None:
    """`clipdex status >&-` printed a traceback ('NoneType' object has no attribute 'flush'), `> /dev/full` an
    "unexpected OSError": an answer nobody got is a failure, said in one line."""
    import subprocess

    folder = photos(4)
    shutil.copy2(sorted(folder.iterdir())[0], folder / "copy.png")  # something for duplicates to print
    assert cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes).exit_code == 0
    commands = [("status",), ("search", "a red circle"), ("search", "-f", "a red circle"),
                ("search", "a red circle", "--json"), ("tags",), ("duplicates",),
                ("captions", folder / "copy.png")]
    for args in commands:
        command = [sys.executable, "-m", "clipdex", "--library", str(library_dir), *map(str, args)]
        with open("/dev/full", "w") as full:
            for how, run, where, needle in (
                    ("closed", limited(command, close_stdout=True), {}, "standard output is closed"),
                    ("full", command, {"stdout": full}, "cannot write to standard output: No space")):
                done = subprocess.run(run, stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT, **where)
                errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
                assert done.returncode == 1 and "Traceback" not in done.stderr, (args, how, done.stderr)
                assert len(errors) == 1 and needle in errors[0], (args, how, done.stderr)


@pytest.mark.parametrize("name", ["lib?x", "lib%3Fx", "lib%x#1"])
def test_a_library_folder_of_any_name_keeps_its_database_inside(cli, tmp_path: Path, photos, name: str) -> None:
    """A database URL gives `?` and `%` a meaning: a folder named `lib?x` once put its database in a file `lib`
    beside it."""
    root = tmp_path / "libraries" / name
    assert cli("--library", root, "index", photos(2), *TINY).exit_code == 0
    assert sorted(path.name for path in root.parent.iterdir()) == [name]
    assert (root / "library.db").is_file()
    found = cli("--library", root, "search", "-f", "a photo")
    assert found.exit_code == 0 and len(found.stdout.splitlines()) == 2


# ----------------------------------------------------------------------------------- pipes, secrets, modes


def test_existing_library_is_made_private(cli, library_dir: Path, photos) -> None:
    cli("index", photos(2), *TINY)
    (library_dir / "thumbnails").mkdir(mode=0o755)  # as an older clipdex left them
    made = sorted(path.name for path in library_dir.iterdir())
    assert {"library.db", "images.faiss.json", config.LOCK_FILE, "thumbnails"} <= set(made), made
    assert any(name.endswith(".faiss") for name in made), made
    for path in [library_dir, *library_dir.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert cli("status").exit_code == 0
    for path in [library_dir, *library_dir.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path.name


def test_a_malformed_database_url_is_never_echoed(cli, tmp_path: Path) -> None:
    for url in ("postgresql+psycopg://me:s3cret@host:notaport/db", "::s3cret::", "postgresql://u:s3cret@[bad/x"):
        result = cli("--database", url, "status")
        assert result.exit_code == 1 and "s3cret" not in result.output + result.stderr


@pytest.mark.slow
def test_captions_that_are_not_text_are_skipped_with_their_reason(cli, photos, library_dir: Path, tmp_path) -> None:
    assert cli("index", photos(2), *SAMPLE).exit_code == 0
    corpus = tmp_path / "corpus.jsonl"
    lines = ['{"caption": "a red circle"}', '{"caption": "\\ud800"}', '{"caption": 5}', '{"caption": null}',
             '{"caption": ["a", "b"]}', '{"caption": {"x": 1}}', json.dumps({"caption": "x" * 5000})]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("add-captions", corpus, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 1 and len(report["skipped"]) == 6
    assert "lone surrogate" in report["skipped"][0] and "int" in report["skipped"][1]
    stored = {h["caption"] for h in json.loads(cli("captions", next(photos(1, "q").iterdir()), "--json").stdout)}
    assert stored == {"a red circle"}  # never "5", "None" or "['a', 'b']"

    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL)
    refused = client.post("/api/captions", files={"file": ("c.jsonl", b'{"caption": "\\ud800"}\n')})
    assert refused.status_code == 400 and "surrogate" in refused.text
    too_many = "\n".join(f"caption {i}" for i in range(config.WEB_MAX_CAPTIONS + 1)).encode()
    assert client.post("/api/captions", files={"file": ("c.txt", too_many)}).status_code == 413

    removed = cli("remove-captions", "--all", "--json")
    assert json.loads(removed.stdout) == {"removed": 1}
    assert json.loads(cli("status", "--json").stdout)["counts"].get("caption", 0) == 0


@pytest.mark.slow
def test_caption_files_that_hold_no_captions_are_refused_in_one_line(cli, photos, library_dir: Path,
                                                                      tmp_path: Path) -> None:
    """JSON nested deeper than Python recurses, an integer of 5,000 digits, a .json file, a NUL in a caption: a
    one-line refusal or a skip with its reason, on the command line and over HTTP (the first two were a traceback
    and a 500, a .json file was stored as one caption of its text, a NUL was stored)."""
    assert cli("index", photos(1), *SAMPLE).exit_code == 0
    bodies = {"deep.jsonl": b"[" * 100_000 + b"]" * 100_000 + b"\n",
              "digits.jsonl": b'{"caption": "x", "n": ' + b"9" * 5000 + b"}\n",
              "list.json": b'[{"caption": "a json file"}]\n'}
    client = TestClient(create_app(Library(library_dir), "cpu"), base_url=LOCAL, raise_server_exceptions=False)
    for name, body in bodies.items():
        (tmp_path / name).write_bytes(body)
        assert_one_line_error(cli("add-captions", tmp_path / name), "captions")
        answer = client.post("/api/captions", files={"file": (name, body)})
        assert answer.status_code == 400 and "captions" in answer.json()["detail"], (name, answer.text)
    (tmp_path / "nul.txt").write_bytes(b"a red circle\nnul\x00inside\n")
    report = json.loads(cli("add-captions", tmp_path / "nul.txt", "--json").stdout)
    assert report["added"] == 1 and "NUL" in report["skipped"][0]
    assert client.post("/api/captions", files={"file": ("nul.txt", b"nul\x00inside\n")}).status_code == 400
    assert json.loads(cli("status", "--json").stdout)["counts"]["caption"] == 1
    early = cli("search", "a red circle", "--after", "0001-01-01", "--json")  # before this zone's calendar
    assert early.exit_code == 0 and len(search_hits(early)) == 1, early.output


def test_usage_errors_are_usage_errors(cli) -> None:
    for args in (["search", "--bogus"], ["search", "x", "-k", "abc"], ["search", "x", "-k", "0"],
                 ["finetune", "x", "--mix", "1.5"], ["watch", "x", "--settle", "inf"]):
        result = cli(*args)
        assert result.exit_code == 2 and "unexpected" not in result.output, args
    result = cli("search", "x", "--min-score", "nan")
    assert result.exit_code == 1 and "--min-score must be a finite number" in result.stderr


def test_strange_queries(cli, photos, tmp_path: Path) -> None:
    cli("index", photos(3), *TINY)
    too_long = cli("search", "a red circle " * 800, "-k", "2", "--json")
    assert too_long.exit_code == 1 and "1,000" in too_long.stderr.replace("1000", "1,000")
    long = cli("search", "a red circle " * 70, "-k", "2", "--json")
    assert long.exit_code == 0 and len(search_hits(long)) == 2
    assert "query truncated to the model's 32 tokens" in long.stderr
    assert "query text is empty" in cli("search", "   ").stderr
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    result = cli("search", "--image", not_image)
    assert result.exit_code == 1 and "cannot read image" in result.stderr


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_a_payload_is_refused(cli, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": _Payload(marker)}, evil)
    with pytest.raises(ClipdexError, match="refusing to load"):
        load_encoder("clipdex-tiny", str(evil), "cpu")
    result = cli("index", tmp_path, "--model", "clipdex-tiny", "--pretrained", evil)
    assert result.exit_code == 1 and "refusing to load" in result.stderr
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(evil.read_bytes())
    with pytest.raises(ClipdexError, match="not a readable safetensors checkpoint"):
        load_encoder(str(fake), None, "cpu")
    assert not marker.exists()


def test_library_folder_is_private_and_schema_is_checked(cli, library_dir: Path, photos) -> None:
    cli("index", photos(2), *TINY)
    assert library_dir.stat().st_mode & 0o077 == 0
    with sqlite3.connect(library_dir / config.DATABASE_FILE) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    result = cli("status")
    assert result.exit_code == 1
    assert "schema version 99" in result.stderr and "Traceback" not in result.output
