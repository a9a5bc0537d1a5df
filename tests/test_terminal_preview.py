"""--preview in a pseudo-terminal: each protocol (kitty, iTerm2, sixel) and the half-block fallback drawn under
each result, never into a pipe or with -f / --json, and file names still escaped beside the pictures."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipdex.cli.preview import protocol_for

pytest.importorskip("chafa") if not os.environ.get("CI") else None
SAMPLE = ("--model", "sample")
STARTS = {"kitty": b"\x1b_Ga=T", "iterm": b"\x1b]1337;File=inline=1", "sixel": b"\x1bP", "blocks": b"\x1b[38;2;"}


def _in_a_terminal(library: Path, *args: str, env: dict[str, str]) -> bytes:
    """What the command writes to a terminal (a pseudo-terminal as stdout, stdin closed)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "clipdex", "--library", str(library), *args],
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE,
                               env={**os.environ, **env})
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        assert ready, "the command wrote nothing for two minutes"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    return output


@pytest.fixture
def library(cli, photos, library_dir: Path) -> Path:
    folder = photos(6)
    shutil.copy(sorted(folder.iterdir())[0], folder / "same\x1b[31m.png")  # a hostile name; also a duplicate
    assert cli("index", folder, *SAMPLE).exit_code == 0
    return library_dir


@pytest.mark.parametrize("protocol", ["kitty", "iterm", "sixel", "blocks"])
def test_each_protocol_draws_under_each_result(library: Path, protocol: str) -> None:
    shown = _in_a_terminal(library, "search", "a red circle", "-k", "3", "--preview",
                           env={"CLIPDEX_PREVIEW": protocol, "TERM": "xterm-256color"})
    assert shown.count(STARTS[protocol]) >= 3 if protocol != "blocks" else shown.count(b"\xe2\x96\x84") > 20
    assert shown.count(b"\n1. ") + shown.startswith(b"1. ") == 1 and b"3. " in shown


def test_the_protocol_follows_the_terminal() -> None:
    assert protocol_for({"TERM": "xterm-kitty"}) == "kitty"
    assert protocol_for({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}) == "kitty"
    assert protocol_for({"TERM_PROGRAM": "iTerm.app"}) == "iterm" == protocol_for({"LC_TERMINAL": "iTerm2"})
    assert protocol_for({"TERM": "foot"}) == "sixel"
    assert protocol_for({"TERM": "xterm-256color"}) == "blocks" == protocol_for({})
    assert protocol_for({"TERM": "xterm-kitty", "CLIPDEX_PREVIEW": "blocks"}) == "blocks"


def test_names_stay_escaped_and_duplicates_and_captions_preview_too(library: Path) -> None:
    env = {"CLIPDEX_PREVIEW": "kitty"}
    found = _in_a_terminal(library, "search", "a red circle", "-k", "7", "--preview", env=env)
    assert b"same\\x1b[31m.png" in found and b"same\x1b[31m" not in found
    groups = _in_a_terminal(library, "duplicates", "--preview", env=env)
    assert b"group 1" in groups and groups.count(STARTS["kitty"]) >= 2
    image = next(p for p in (library.parent / "photos").iterdir() if p.name.startswith("000"))
    described = _in_a_terminal(library, "captions", str(image), "-k", "2", "--preview", env=env)
    assert described.count(STARTS["kitty"]) == 1 and b"builtin" in described


def test_no_pictures_in_a_pipe_nor_with_paths_only_or_json(library: Path) -> None:
    base = [sys.executable, "-m", "clipdex", "--library", str(library)]
    env = {**os.environ, "CLIPDEX_PREVIEW": "kitty"}
    for extra in ([], ["-f"], ["--json"]):
        result = subprocess.run([*base, "search", "a red circle", "-k", "2", "--preview", *extra],
                                capture_output=True, env=env, timeout=120)
        assert result.returncode == 0 and b"\x1b_G" not in result.stdout and b"00" in result.stdout
    in_terminal = _in_a_terminal(library, "search", "a red circle", "-k", "2", "--preview", "--json", env=env)
    assert b"\x1b_G" not in in_terminal and in_terminal.lstrip().startswith(b"[")


def test_paths_only_on_a_screen_are_escaped_and_exact_in_a_pipe(library: Path) -> None:
    on_screen = _in_a_terminal(library, "search", "a red circle", "-k", "7", "-f", env={})
    assert b"same\\x1b[31m.png" in on_screen and b"same\x1b[31m" not in on_screen
    piped = subprocess.run([sys.executable, "-m", "clipdex", "--library", str(library), "search", "a red circle",
                            "-k", "7", "-f"], capture_output=True, timeout=120)
    assert b"same\x1b[31m.png" in piped.stdout  # for xargs, the name as it is
