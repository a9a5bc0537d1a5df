"""Shared fixtures: the real tiny model, real libraries in temp folders, the real CLI."""

from __future__ import annotations

import csv
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipdex.retrieval import config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium as root in a sandbox with no network: without these it tries (and fails) to reach Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SAMPLE_ROWS = list(csv.DictReader(config.SAMPLE_CAPTIONS.open(encoding="utf-8")))


def pytest_configure() -> None:
    """A shell that starts CI in the background ignores SIGINT, and an ignored signal stays ignored across exec: the
    CLI processes tests Ctrl-C would then install no KeyboardInterrupt handler, and the signal would do nothing.
    A handler of the run's own is reset to the default in every child at exec, with no preexec_fn (which can
    deadlock a child forked from a process with threads: see tests/exec_limited.py)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from what a test needs: a browser, PostgreSQL or Ray, each also slow, so the quick loop
    (`pytest -m "not slow"`) needs none of them; tests slow on their own carry `@pytest.mark.slow`."""
    for item in items:
        needs = set(item.fixturenames)
        params = {str(value) for value in item.callspec.params.values()} if hasattr(item, "callspec") else set()
        found = {"browser": "browser" in needs, "postgres": "postgres_server" in needs or "postgresql" in params,
                 "ray": "local_ray" in needs}
        for marker in (name for name, needed in found.items() if needed):
            item.add_marker(marker)
            item.add_marker("slow")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Per-model exports go to one folder for the whole run (never the user's cache): each model is exported
    once, as on a real machine; a test about exporting points CLIPDEX_CACHE at a folder of its own."""
    folder = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get(config.CACHE_ENV)
    os.environ[config.CACHE_ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(config.CACHE_ENV, None)
    else:
        os.environ[config.CACHE_ENV] = previous


@pytest.fixture(scope="session")
def tiny():
    """clipdex-tiny with its seeded init: the same weights in every process, so CLI runs agree with it."""
    from clipdex.retrieval.models.openclip.factory import load_encoder

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
def database_url() -> str | None:
    """The library's database: None is the default SQLite file; modules that run on both override this."""
    return None


@pytest.fixture
def cli(library_dir: Path, database_url: str | None):
    """Run the real typer app against the temp library; returns the click Result."""
    from clipdex.cli.app import app

    runner = CliRunner()
    database = ["--database", database_url] if database_url else []

    def run(*args: str):
        return runner.invoke(app, ["--library", str(library_dir), *database, *map(str, args)], catch_exceptions=False)

    return run


def _postgres_tool(name: str) -> str | None:
    found = shutil.which(name)
    return found or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on a random loopback port, torn down after the session."""
    initdb, pg_ctl = _postgres_tool("initdb"), _postgres_tool("pg_ctl")
    if not (initdb and pg_ctl):
        message = "PostgreSQL server binaries not found: `apt-get install postgresql` to run these tests"
        if os.environ.get("CLIPDEX_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="clipdex-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True)  # noqa: E731
    run(initdb, "-D", data, "-U", "clipdex", "--auth=trust", "-E", "UTF8", "--locale=C")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", data, "-l", base / "server.log", "-w", "-o", options, "start")
    try:
        yield f"postgresql+psycopg://clipdex@127.0.0.1:{port}"
    finally:
        run(pg_ctl, "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def new_postgres_database(server: str) -> str:
    import psycopg

    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def both_databases(request) -> str | None:
    """For modules whose tests must hold on both stores: `database_url = both_databases` there."""
    if request.param == "sqlite":
        return None
    return new_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """A vocabulary of the sample images' own colours and shapes: where tags and descriptions must be right (the
    bundled model knows nothing else)."""
    path = tmp_path / "shapes.txt"
    colours, kinds = ("red", "blue", "green", "yellow", "purple", "orange"), ("circle", "square", "triangle", "star")
    path.write_text("# the sample images' colours and shapes\n" + "".join(f"{c} {k}\n" for c in colours for k in kinds),
                    encoding="utf-8")
    return path


@pytest.fixture
def browser():
    """Debian's Chromium through Playwright: a real browser for pages and reports."""
    if CHROMIUM is None:
        if os.environ.get("CLIPDEX_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (CLIPDEX_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
