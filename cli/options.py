"""Options several commands share, with their help text written once, and how long commands stop."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import typer

from clipdex.retrieval import config

T = TypeVar("T")

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
ModelOption = typer.Option(
    None, "--model", "-m",
    help="A model from `clipdex models` (e.g. vit-b-32-laion2b; 'default' fetches the default once from the hub, "
    "$HF_ENDPOINT honoured), a hub ORG/NAME model folder, a model folder's path, 'sample' (the bundled model, "
    "offline), or with the torch extra an open_clip name, hf-hub:ID or .safetensors checkpoint (default: the "
    "library's model, else the default).",
)
PretrainedOption = typer.Option(
    None, "--pretrained", help=f"Pretrained tag or weights file of an open_clip model (default: "
    f"{config.OPENCLIP_DEFAULT_PRETRAINED} for {config.OPENCLIP_DEFAULT_MODEL}), or the commit of a hub folder."
)
LangOption = typer.Option(
    None, "--lang", help="The query's language (de, ja, zh-TW…) for models that must be told it (NLLB; default: "
    "the locale's); other models read any query as it is.",
)
PreviewOption = typer.Option(
    False, "--preview", help="Show thumbnails in the terminal (kitty, iTerm2, sixel, else half-blocks; "
    "CLIPDEX_PREVIEW=kitty|iterm|sixel|blocks to choose); not in a pipe, nor with -f or --json.",
)
DeviceOption = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")
PrecisionOption = typer.Option(
    "fp32", "--precision", help="fp32, or bf16 (CPU/CUDA), int8 (CPU: the image tower, 2.4× fp32 here) or fp16 "
    "(CUDA): faster, used only if it matches fp32."
)


def library_of(ctx: typer.Context, create: bool = False):
    """The library the global --library / --database options name."""
    from clipdex.api import open_library

    return open_library(ctx.obj["library"], ctx.obj["database"], create=create)


def asked(ctx: typer.Context, op: str, arguments: dict, read: Callable[[object], T]) -> T | None:
    """The answer of a `watch` or `serve` running over this library, read with `read`; None when this process
    must answer (none runs, or it cannot be trusted: `clipdex.asking`). A --database named on the command line
    is this process's own business: asked nothing."""
    from clipdex.asking import ask

    if ctx.obj["database"] is not None:
        return None
    root = Path(ctx.obj["library"] if ctx.obj["library"] is not None else config.default_library_dir())
    return ask(root.expanduser().absolute(), op, arguments, read)


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM stops a long command as Ctrl-C does (the batch in flight is dropped, everything before it kept,
    decode workers ended, exit 130) instead of killing it with its workers left behind."""

    def interrupt(_signum, _frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
