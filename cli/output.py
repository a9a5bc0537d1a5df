"""Printing for the CLI: rich tables and progress for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in ("score", "#", "id", "R@1", "R@5", "R@10") else "left")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


@contextmanager
def progress_tasks(enabled: bool = True) -> Iterator[Callable[[str, int | None], Callable[..., None]]]:
    """Progress bars on stderr, so stdout stays clean for --json and pipes.

    Yields start(description, total) -> advance(n=1, note=""), one bar per phase of the work.
    """
    if not enabled:
        yield lambda description, total: (lambda n=1, note="": None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=err_console,
        transient=True,
    )
    with progress:

        def start(description: str, total: int | None) -> Callable[..., None]:
            task = progress.add_task(description, total=total, note="")
            return lambda n=1, note="": progress.update(task, advance=n, note=note)

        yield start


def recall_rows(result: dict, label: str = "") -> list[list[Any]]:
    return [
        [f"{label}{direction.replace('_', ' ')}", *(result[direction][f"R@{k}"] for k in (1, 5, 10))]
        for direction in ("text_to_image", "image_to_text")
    ]
