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


def human_size(size: int | None) -> str:
    """A file size as a person reads it: 512 B, 60 kB, 1.4 MB (decimal units, as file managers show them)."""
    if size is None:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{size} B"


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

    table = Table(title=Text(shown(title)), title_justify="left", show_header=bool(columns))
    for column in columns or [""] * max((len(row) for row in rows), default=0):  # no columns: no header row
        numeric = column in ("score", "picture score", "size", "#", "id", "R@1", "R@5", "R@10")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")  # never cut a path short
    for row in rows:
        table.add_row(*(Text(f"{v:.4f}" if isinstance(v, float) else shown(str(v))) for v in row))
    console.print(table)


@contextmanager
def progress_tasks(enabled: bool = True) -> Iterator[Callable[..., Callable[..., None]]]:
    """Progress bars on stderr, so stdout stays clean for --json and pipes.

    Yields start(description, total, unit="") -> advance(n=1, note=""), one bar per phase of the work. A phase
    counted in "bytes" (a download) is said in one line first, since it is the one a person waits on, then
    shown as bytes with their speed; so is one of unit "once" (a step done once per model, such as embedding
    the vocabulary), then counted as items.
    """
    if not enabled:  # (a download is still said: it is what a person waits on, even behind --json)

        def said(description: str, total: int | None, unit: str = "") -> Callable[..., None]:
            if unit in ("bytes", "once"):
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
            if task.fields.get("unit") != "bytes":  # (a count not known yet: what is done, never "0/?")
                return self.items.render(task) if task.total is not None else Text(f"{int(task.completed)}")
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
            if unit in ("bytes", "once"):
                progress.console.print(Text(shown(description)), soft_wrap=True)
                description = "downloading" if unit == "bytes" else description
            task = progress.add_task(description, total=total, note="", unit=unit)
            return lambda n=1, note="": progress.update(task, advance=n, note=note)

        yield start


def print_hits(hits, as_json: bool, title: str, dated: bool = False) -> None:
    """Search hits or captions: JSON, or a table with the columns the hits have (where a caption came from, the
    recognised text that matched, whether a match is strong, why it is there, its date when sorted by date). In
    hybrid mode, when words matched, the order follows the fused score: it is the "score" shown, the cosine beside
    it as "picture score", so the numbers never contradict the order."""
    if as_json:
        listed = [hit.as_json() for hit in hits]
        print_json(listed if getattr(hits, "understood", None) is None else {"understood": hits.understood,
                                                                                "hits": listed})
        return
    if not hits:
        say("no results")
        return
    from clipdex.retrieval.search.hits import iso_date

    extra = []
    fused = hits[0].kind == "image" and any(hit.rank_score is not None for hit in hits)
    if fused:
        extra.append(("picture score", lambda hit: hit.score))
    if dated:
        extra.append(("date", lambda hit: (iso_date(hit.taken) or "")[:16].replace("T", " ")))
    if hits[0].kind != "image" and any(hit.source != "corpus" for hit in hits):
        extra.append(("from", lambda hit: hit.source))
    if any(hit.ocr for hit in hits):  # the words found in the photo, beside it
        extra.append(("text", lambda hit: hit.ocr or ""))
    if any(hit.strong is False for hit in hits):  # weak matches told apart (retrieval/search/relevance.py)
        extra.append(("match", lambda hit: "strong" if hit.strong else "weak"))
    if any(hit.why for hit in hits if hit.kind == "image"):  # what brought each hit (query.py)
        extra.append(("why", lambda hit: ", ".join(hit.why or ())))
    label = "path" if hits[0].kind == "image" else "caption"
    score = (lambda hit: hit.rank_score if hit.rank_score is not None else 0.0) if fused else (lambda hit: hit.score)
    print_table(title, ["#", "score", label, *(name for name, _ in extra)],
                [[n, score(hit), hit.label, *(value(hit) for _, value in extra)] for n, hit in enumerate(hits, 1)])


def recall_rows(result: dict, label: str = "") -> list[list[Any]]:
    return [
        [f"{label}{direction.replace('_', ' ')}", *(result[direction][f"R@{k}"] for k in (1, 5, 10))]
        for direction in ("text_to_image", "image_to_text")
    ]
