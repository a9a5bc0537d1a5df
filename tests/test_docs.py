"""The documentation keeps up with the code: the CLI reference is what the commands say of themselves, every
command has a guide that mentions it, the README stays a user's README, and its links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from clipdex.cli.app import app
from clipdex.cli.reference import reference

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDES = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}


def test_the_cli_reference_is_current() -> None:
    assert GUIDES["cli.md"] == reference(), "run `python -m clipdex.cli.reference > docs/cli.md`"


def test_every_command_and_option_is_documented() -> None:
    commands = typer.main.get_command(app).commands
    prose = README + "".join(text for name, text in GUIDES.items() if name != "cli.md")
    for name, command in commands.items():
        assert f"clipdex {name}" in prose or f"`{name}`" in prose, f"no guide mentions `clipdex {name}`"
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("--"):
                    assert f"`{option}`" in GUIDES["cli.md"], f"{name} {option} is missing from docs/cli.md"


def test_the_readme_is_a_users_readme_with_links_that_lead_somewhere() -> None:
    lines = README.splitlines()
    assert len(lines) <= 200
    commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(commands) == 2 and "clipdex demo" in commands[0] and "pytest" in commands[1]
    for folder, text in [(ROOT, README), *((ROOT / "docs", guide) for guide in GUIDES.values())]:
        for target in re.findall(r"\]\(([\w./-]+\.md)\)", text):  # links between pages, as GitHub follows them
            assert (folder / target).is_file(), target
