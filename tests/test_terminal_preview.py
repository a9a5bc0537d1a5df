"""--preview in a pseudo-terminal: each protocol (kitty, iTerm2, sixel) and the half-block fallback drawn under
each result, never into a pipe or with -f / --json, and file names still escaped beside the pictures."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
from pathlib import Path

import pytest

from clipdex.cli.preview import protocol_for
from tests.helpers import SAMPLE, clipdex_command

pytest.importorskip("chafa") if not os.environ.get("CI") else None
STARTS = {"kitty": b"\x1b_Ga=T", "iterm": b"\x1b]1337;File=inline=1", "sixel": b"\x1bP", "blocks": b"\x1b[38;2;"}


def _in_a_terminal(library: Path, *args: str, env: dict[str, str]) -> bytes:
    """What the command writes to a terminal (a pseudo-terminal as stdout, stdin closed)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(clipdex_command(library, *args),
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
    folder = photos(11)
    shutil.copy(sorted(folder.iterdir())[0], folder / "same\x1b[31m.png")  # a hostile name; also a duplicate
    assert cli("index", folder, *SAMPLE).exit_code == 0
    return library_dir


@pytest.mark.slow
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


@pytest.mark.slow
def test_names_stay_escaped_and_duplicates_and_captions_preview_too(library: Path) -> None:
    env = {"CLIPDEX_PREVIEW": "kitty"}
    found = _in_a_terminal(library, "search", "a red circle", "-k", "7", "--preview", env=env)
    assert b"same\\x1b[31m.png" in found and b"same\x1b[31m" not in found
    groups = _in_a_terminal(library, "duplicates", "--preview", env=env)
    assert b"group 1" in groups and groups.count(STARTS["kitty"]) >= 2
    image = next(p for p in (library.parent / "photos").iterdir() if p.name.startswith("000"))
    described = _in_a_terminal(library, "captions", str(image), "-k", "2", "--preview", env=env)
    assert described.count(STARTS["kitty"]) == 1 and b"builtin" in described


@pytest.mark.slow
def test_no_pictures_in_a_pipe_nor_with_paths_only_or_json(library: Path) -> None:
    base = clipdex_command(library)
    env = {**os.environ, "CLIPDEX_PREVIEW": "kitty"}
    for extra in ([], ["-f"], ["--json"]):
        result = subprocess.run([*base, "search", "a red circle", "-k", "2", "--preview", *extra],
                                capture_output=True, env=env, timeout=120)
        assert result.returncode == 0 and b"\x1b_G" not in result.stdout and b"00" in result.stdout
    in_terminal = _in_a_terminal(library, "search", "a red circle", "-k", "2", "--preview", "--json", env=env)
    assert b"\x1b_G" not in in_terminal and in_terminal.lstrip().startswith(b"{")


@pytest.mark.slow
def test_paths_only_on_a_screen_are_escaped_and_exact_in_a_pipe(library: Path) -> None:
    on_screen = _in_a_terminal(library, "search", "a red circle", "-k", "7", "-f", env={})
    assert b"same\\x1b[31m.png" in on_screen and b"same\x1b[31m" not in on_screen
    piped = subprocess.run(clipdex_command(library, "search", "a red circle", "-k", "7", "-f"),
                           capture_output=True, timeout=120)
    assert b"same\x1b[31m.png" in piped.stdout  # for xargs, the name as it is


@pytest.mark.slow
def test_ten_half_block_results_fit_forty_lines_of_a_wide_terminal(library: Path) -> None:
    shown = _in_a_terminal(library, "search", "a red circle", "-k", "10", "--preview",
                           env={"CLIPDEX_PREVIEW": "blocks", "COLUMNS": "160"})
    assert shown.count(b"\n") <= 40 and shown.count(b"\xe2\x96\x84") > 200
    assert all(f"#{n} ".encode() in shown for n in range(1, 11)) and b"\n10. " in shown  # each tile, each path
    narrow = _in_a_terminal(library, "search", "a red circle", "-k", "10", "--preview",
                            env={"CLIPDEX_PREVIEW": "blocks", "COLUMNS": "30"})
    assert narrow.count(b"\n") > shown.count(b"\n") and b"\n10. " in narrow  # one a row: still every result


@pytest.mark.slow
def test_kitty_gets_compressed_pngs_sized_to_their_cells(library: Path) -> None:
    import base64
    import re

    shown = _in_a_terminal(library, "search", "a red circle", "-k", "10", "--preview", env={"CLIPDEX_PREVIEW": "kitty"})
    assert len(shown) <= 600_000
    images = re.findall(rb"\x1b_Ga=T,f=100,q=2,c=(\d+),r=(\d+),m=[01];(.*?)\x1b\\", shown)
    assert len(images) == 10 and base64.b64decode(images[0][2])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(int(columns) <= 24 and int(rows) <= 12 for columns, rows, _ in images)  # its cells, tall or wide
    assert max(len(chunk) for chunk in re.findall(rb"\x1b_G[^;]*;(.*?)\x1b\\", shown)) <= 4096


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_inside_tmux_pictures_pass_through_when_allowed_else_half_blocks(library: Path, tmp_path: Path) -> None:
    server = str(tmp_path / "tmux.sock")
    subprocess.run(["tmux", "-S", server, "-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "30"],
                   check=True, timeout=30)
    try:
        env = {"TMUX": f"{server},0,0", "TERM": "tmux-256color", "KITTY_WINDOW_ID": "1"}
        for allowed in ("on", "off"):
            subprocess.run(["tmux", "-S", server, "set-option", "-g", "allow-passthrough", allowed], check=True,
                           timeout=30)
            shown = _in_a_terminal(library, "search", "a red circle", "-k", "2", "--preview", env=env)
            if allowed == "on":
                assert shown.count(b"\x1bPtmux;\x1b\x1b_Ga=T") == 2
            else:
                assert b"\x1b_G" not in shown and shown.count(b"\xe2\x96\x84") > 20
    finally:
        subprocess.run(["tmux", "-S", server, "kill-server"], timeout=30)
