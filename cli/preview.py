"""Thumbnails in the terminal (`--preview`): kitty's graphics protocol, iTerm2's inline images, sixel, or
Unicode half-blocks where a terminal shows no pictures. chafa (its Python binding) draws all four.

The protocol is told from the environment the terminal sets (TERM, TERM_PROGRAM, KITTY_WINDOW_ID, LC_TERMINAL),
never by querying the terminal, which would block or print when it does not answer; CLIPDEX_PREVIEW names one
(kitty, iterm, sixel, blocks) to override it. Nothing is drawn unless stdout is a terminal."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Mapping

from PIL import Image

from clipdex.cli.output import console, shown
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError

PROTOCOLS = ("kitty", "iterm", "sixel", "blocks")
PREVIEW_ENV = "CLIPDEX_PREVIEW"
CELL = (10, 20)  # a terminal cell's pixels, as pixel protocols are told (most fonts are about twice as tall)


def protocol_for(env: Mapping[str, str]) -> str:
    """The protocol the terminal in `env` draws pictures with."""
    forced = env.get(PREVIEW_ENV, "").lower()
    if forced:
        if forced not in PROTOCOLS:
            raise ClipdexError(f"{PREVIEW_ENV} takes one of {', '.join(PROTOCOLS)}, not {forced!r}")
        return forced
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    if env.get("KITTY_WINDOW_ID") or term in ("xterm-kitty", "xterm-ghostty"):
        return "kitty"
    if program in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    if term.startswith(("foot", "mlterm", "contour")):
        return "sixel"
    return "blocks"


class Previewer:
    """Draws thumbnails to stdout with one protocol; `draw` returns False when stdout is not a terminal."""

    def __init__(self, env: Mapping[str, str] | None = None, columns: int = config.PREVIEW_COLUMNS) -> None:
        try:
            import chafa
        except ImportError:
            raise ClipdexError("--preview needs chafa: pip install chafa.py") from None
        self.chafa = chafa
        self.protocol = protocol_for(os.environ if env is None else env)
        self.columns = columns

    @staticmethod
    def available() -> bool:
        return sys.stdout.isatty()

    def render(self, image: Image.Image) -> bytes:
        """The escape sequences (or coloured half-blocks) that draw `image` `columns` cells wide."""
        chafa = self.chafa
        image = image.convert("RGBA")
        image.thumbnail((self.columns * CELL[0], self.columns * CELL[0]))
        canvas_config = chafa.CanvasConfig()
        canvas_config.width = self.columns
        canvas_config.height = max(1, round(self.columns * image.height / image.width * CELL[0] / CELL[1]))
        canvas_config.cell_width, canvas_config.cell_height = CELL
        modes = {"kitty": "CHAFA_PIXEL_MODE_KITTY", "iterm": "CHAFA_PIXEL_MODE_ITERM2", "sixel": "CHAFA_PIXEL_MODE_SIXELS",
                 "blocks": "CHAFA_PIXEL_MODE_SYMBOLS"}
        canvas_config.pixel_mode = getattr(chafa.PixelMode, modes[self.protocol])
        if self.protocol == "blocks":
            canvas_config.canvas_mode = chafa.CanvasMode.CHAFA_CANVAS_MODE_TRUECOLOR
            symbols = chafa.SymbolMap()
            symbols.add_by_tags(chafa.SymbolTags.CHAFA_SYMBOL_TAG_VHALF | chafa.SymbolTags.CHAFA_SYMBOL_TAG_SPACE)
            canvas_config.set_symbol_map(symbols)
        canvas = chafa.Canvas(canvas_config)
        canvas.draw_all_pixels(chafa.PixelType.CHAFA_PIXEL_RGBA8_UNASSOCIATED, image.tobytes(), image.width,
                               image.height, image.width * 4)
        return canvas.print(fallback=True)

    def draw(self, path: str | Path, moment: float | None = None) -> None:
        """The thumbnail of a library file (of a video: its frame at `moment`); a file that cannot be read
        now is skipped (the line above it already names it)."""
        from clipdex.retrieval.images import read_image
        from clipdex.retrieval.video import frame_at

        side = self.columns * CELL[0]
        try:
            image = frame_at(path, moment, side) if moment is not None else read_image(Path(path), side).image
        except (ClipdexError, OSError):
            return
        sys.stdout.flush()
        sys.stdout.buffer.write(self.render(image) + b"\n")
        sys.stdout.buffer.flush()


@functools.lru_cache(maxsize=1)
def terminal_previewer() -> Previewer | None:
    """The terminal's previewer, or None where stdout is not a terminal (a pipe, a file): then text alone."""
    return Previewer() if Previewer.available() else None


def print_previews(hits) -> bool:
    """Each hit on a line with its thumbnail below it; False (nothing printed) when there is no terminal."""
    previewer = terminal_previewer()
    if previewer is None or not hits:
        return False
    for n, hit in enumerate(hits, 1):
        console.print(f"{n}. {hit.score:.4f}  {shown(hit.path)}" + (f"  at {hit.time:.0f} s" if hit.time else ""),
                      soft_wrap=True)
        previewer.draw(hit.path, hit.time)
    return True
