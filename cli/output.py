"""Printing for the CLI: rich tables and progress for people, JSON for programs.

User data (paths, queries, captions, error messages that quote them) is printed literally: both consoles have
rich markup switched off, so a file called `[red]x[/].jpg` is shown as it is named, never styled or dropped.
Styling is applied with explicit `Text` styles instead.
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.text import Text

console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)


# What must never reach a terminal as it is: C0 controls (ESC starts a command sequence; a newline would forge an
# output line), DEL and C1 controls (U+009B is a one-character CSI), line and paragraph separators, and the bidi
# controls that reorder what is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LEFT_BY_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")  # json.dumps escapes C0 itself


def shown(text: str) -> str:
    """User data (a file name, a caption) as a terminal may show it: control characters are written as \\xNN or
    \\uNNNN instead of being sent to the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


def print_json(data: Any) -> None:
    """JSON as it is, with the controls json.dumps lets through (DEL, C1, separators, bidi) written as \\u
    escapes: the same data for a program, nothing a terminal would obey."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    sys.stdout.write(_LEFT_BY_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


def print_error(message: str) -> None:
    err_console.print(Text.assemble(("error:", "red"), " ", shown(message)), soft_wrap=True)


def print_warning(message: str) -> None:
    err_console.print(Text.assemble(("warning:", "yellow"), " ", shown(message)), soft_wrap=True)


def print_notes(notes: Sequence[str]) -> None:
    for note in notes:
        err_console.print(Text(f"note: {shown(note)}"), soft_wrap=True)


def say(message: str) -> None:
    """One line of information for a person, on stderr (stdout is for data)."""
    err_console.print(Text(shown(message)), soft_wrap=True)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table  # (here: a query answered by a running server is 0.1 s, imports count)

    table = Table(title=Text(shown(title)), title_justify="left")
    for column in columns:
        numeric = column in ("score", "#", "id", "R@1", "R@5", "R@10")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")  # never cut a path short
    for row in rows:
        table.add_row(*(Text(f"{v:.4f}" if isinstance(v, float) else shown(str(v))) for v in row))
    console.print(table)


@contextmanager
def progress_tasks(enabled: bool = True) -> Iterator[Callable[..., Callable[..., None]]]:
    """Progress bars on stderr, so stdout stays clean for --json and pipes.

    Yields start(description, total, unit="") -> advance(n=1, note=""), one bar per phase of the work. A phase
    counted in "bytes" (a download) is said in one line first, since it is the one a person waits on, then
    shown as bytes with their speed.
    """
    if not enabled:  # (a download is still said: it is what a person waits on, even behind --json)

        def said(description: str, total: int | None, unit: str = "") -> Callable[..., None]:
            if unit == "bytes":
                say(description)
            return lambda n=1, note="": None

        yield said
        return
    from rich.progress import (
        BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn,
        TransferSpeedColumn,
    )

    class Counted(ProgressColumn):
        """Items as n/total, bytes as MB/MB and MB/s."""

        items, size, speed = MofNCompleteColumn(), DownloadColumn(), TransferSpeedColumn()

        def render(self, task):
            if task.fields.get("unit") != "bytes":
                return self.items.render(task)
            return Text.assemble(self.size.render(task), " ", self.speed.render(task))

    progress = Progress(
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        Counted(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        console=err_console,
        transient=True,
    )
    with progress:

        def start(description: str, total: int | None, unit: str = "") -> Callable[..., None]:
            if unit == "bytes":
                progress.console.print(Text(shown(description)), soft_wrap=True)
                description = "downloading"
            task = progress.add_task(description, total=total, note="", unit=unit)
            return lambda n=1, note="": progress.update(task, advance=n, note=note)

        yield start


def print_hits(hits, as_json: bool, title: str) -> None:
    """Search hits or captions: JSON, or a table with the columns the hits have (where a caption came from, the
    recognised text that matched, whether a match is strong)."""
    if as_json:
        print_json([hit.as_json() for hit in hits])
        return
    if not hits:
        say("no results")
        return
    extra = []
    if hits[0].kind != "image" and any(hit.source != "corpus" for hit in hits):
        extra.append(("from", lambda hit: hit.source))
    if any(hit.ocr for hit in hits):  # the words found in the photo, beside it
        extra.append(("text", lambda hit: hit.ocr or ""))
    if any(hit.strong is False for hit in hits):  # weak matches told apart (retrieval/search/relevance.py)
        extra.append(("match", lambda hit: "strong" if hit.strong else "weak"))
    label = "path" if hits[0].kind == "image" else "caption"
    print_table(title, ["#", "score", label, *(name for name, _ in extra)],
                [[n, hit.score, hit.label, *(value(hit) for _, value in extra)] for n, hit in enumerate(hits, 1)])


def recall_rows(result: dict, label: str = "") -> list[list[Any]]:
    return [
        [f"{label}{direction.replace('_', ' ')}", *(result[direction][f"R@{k}"] for k in (1, 5, 10))]
        for direction in ("text_to_image", "image_to_text")
    ]
