"""Errors, not tracebacks; user data printed literally; secrets and permissions; output for pipes."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.models.checkpoint import METADATA_KEY
from tests.conftest import SAMPLE_ROWS

TINY = ("--model", "clipdex-tiny")


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# ----------------------------------------------------------------------------------- broken library state


def test_a_corrupt_or_random_database_is_one_line(cli, library_dir: Path, photos) -> None:
    cli("index", photos(2), *TINY)
    database = library_dir / config.DATABASE_FILE
    for damage in (b"this is not a database at all" * 100, os.urandom(8192)):
        for suffix in ("-wal", "-shm"):
            (library_dir / (config.DATABASE_FILE + suffix)).unlink(missing_ok=True)
        database.write_bytes(damage)
        for command in (("status",), ("search", "a red circle"), ("index", library_dir.parent)):
            _one_line_error(cli(*command), str(database))


def test_library_path_that_is_a_file_is_one_line(cli, library_dir: Path, photos) -> None:
    library_dir.write_text("I am a file")
    _one_line_error(cli("index", photos(1), *TINY), "is a file")
    _one_line_error(cli("status"), "is a file")


def test_malformed_config_json_is_one_line(cli, library_dir: Path, photos) -> None:
    cli("index", photos(1), *TINY)
    for bad in ("{not json", "[1, 2]"):
        (library_dir / config.LIBRARY_CONFIG_FILE).write_text(bad)
        _one_line_error(cli("status"), config.LIBRARY_CONFIG_FILE)


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
    _one_line_error(cli("index", photos(1), "--model", checkpoint), needle)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,caption\n")
    _one_line_error(cli("eval", pairs, "--model", checkpoint))


# ----------------------------------------------------------------------------------- literal user data

MARKUP_NAMES = ("[red]alarm[/red].png", "x[/i].jpg", "[/].png", "[/b]bold.png", "plain [link=https:x]y.png")


def test_markup_in_file_names_and_queries_is_printed_literally(cli, library_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "marked"
    folder.mkdir()
    for n, name in enumerate(MARKUP_NAMES):  # a "/" in a name is a folder: "x[/i].jpg" is x[ / i].jpg
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"], folder / name)
    (folder / MARKUP_NAMES[0]).write_text("not an image: skipped, and its name printed")
    (folder / "broken[").mkdir()
    (folder / "broken[/i].jpg").write_bytes(b"\xff\xd8 truncated")
    indexed = cli("index", folder, *TINY)
    assert indexed.exit_code == 0, indexed.output
    assert f"skipped {folder / MARKUP_NAMES[0]}" in indexed.stderr and "broken[/i].jpg" in indexed.stderr
    table = cli("search", "a red circle", "-k", "10")
    assert table.exit_code == 0, table.output
    flat = table.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    for name in MARKUP_NAMES[1:]:
        assert name.replace(" ", "") in flat  # nothing bracketed dropped or styled away
    for query in ("[/]", "[red]", "[/b] a circle [bold]", "[link=x]y[/link]"):
        result = cli("search", query, "-k", "2")
        assert result.exit_code == 0 and query in result.stdout.replace("\n", "") + result.stderr, result.output
    missing = cli("search", "--image", tmp_path / "[/]nope.jpg")
    _one_line_error(missing, "[/]nope.jpg")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=300))
def test_no_query_string_gives_a_traceback(cli, library_dir: Path, photos, query: str) -> None:
    if not (library_dir / config.DATABASE_FILE).exists():
        cli("index", photos(3), *TINY, "--no-export")
    result = cli("search", query, "-k", "3", "--json")
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert isinstance(json.loads(result.stdout), list)
    elif result.exit_code == 2:  # read as an option ("-1"): a usage error, said as typer says them
        assert query.startswith("-") and "Error: " in result.output
    else:
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


_NAME_CHARS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))


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


# ----------------------------------------------------------------------------------- pipes, secrets, modes


def test_null_separated_paths_survive_newlines_in_names(cli, tmp_path: Path) -> None:
    folder = tmp_path / "nl"
    folder.mkdir()
    names = ["two\nlines.png", "plain.png"]
    for n, name in enumerate(names):
        shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[n]["image"], folder / name)
    cli("index", folder, *TINY)
    out = cli("search", "-f", "-0", "-k", "5", "a photo").stdout
    assert out.endswith("\0") and sorted(out.split("\0")[:-1]) == sorted(str(folder / n) for n in names)


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


def test_decoded_pixels_of_cmyk_sixteen_bit_and_heic_are_right(tmp_path: Path) -> None:
    import numpy as np
    import pillow_heif

    from clipdex.retrieval.media.images import read_image

    base = Image.open(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"]).convert("RGB")
    reference = np.asarray(base, dtype=np.float32)
    base.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(tmp_path / "sixteen.png")
    pillow_heif.from_pillow(base).save(tmp_path / "phone.heic", quality=95)
    cmyk = np.asarray(read_image(tmp_path / "cmyk.jpg").image, dtype=np.float32)
    assert np.abs(cmyk - reference).mean() < 8
    sixteen = np.asarray(read_image(tmp_path / "sixteen.png").image, dtype=np.float32)
    assert np.abs(sixteen[..., 0] - np.asarray(base.convert("L"), dtype=np.float32)).mean() < 2
    heic = np.asarray(read_image(tmp_path / "phone.heic").image, dtype=np.float32)
    assert heic.shape == reference.shape and np.abs(heic - reference).mean() < 8


def test_files_over_the_size_cap_are_refused_before_reading(cli, tmp_path: Path) -> None:
    folder = tmp_path / "huge"
    folder.mkdir()
    with open(folder / "huge.jpg", "wb") as sparse:  # no disk used: the size is only declared
        sparse.truncate(config.MAX_IMAGE_FILE_BYTES + 1)
    report = json.loads(cli("index", folder, *TINY, "--json", "--no-export").stdout)
    assert [f["error"] for f in report["failed"]] == [f"{folder / 'huge.jpg'}: file larger than 512 MB, refused before reading"]
