"""Thumbnails in the terminal (`--preview`): kitty's graphics protocol (a PNG sized to its cells), iTerm2's inline
images, sixel, or Unicode half-blocks where a terminal shows no pictures, laid out several to a row when the
terminal is wide enough. chafa (its Python binding) draws all but kitty's.

The protocol is told from the environment the terminal sets (TERM, TERM_PROGRAM, KITTY_WINDOW_ID, LC_TERMINAL),
never by querying the terminal, which would block or print when it does not answer; CLIPDEX_PREVIEW names one
(kitty, iterm, sixel, blocks) to override it. Inside tmux, pictures pass through to the outer terminal when tmux
lets them (`allow-passthrough`), else half-blocks are drawn. Nothing is drawn unless stdout is a terminal."""

from __future__ import annotations

import base64
import functools
import io
import os
import shutil
import subprocess
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
GAP = 2  # columns between two half-block thumbnails of a row
KITTY_CHUNK = 4096  # kitty takes base64 data in chunks of at most this many bytes


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


def tmux_passes_pictures(env: Mapping[str, str]) -> bool:
    """Whether the tmux this runs in (if any) hands escape sequences on to the outer terminal."""
    if not env.get("TMUX"):
        return True
    try:
        answer = subprocess.run(["tmux", "show-options", "-gv", "allow-passthrough"], capture_output=True,
                                text=True, timeout=2, env=dict(env)).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return answer in ("on", "all")


def through_tmux(sequence: bytes) -> bytes:
    """An escape sequence wrapped for tmux's passthrough: tmux sends its content on as it is."""
    return b"\x1bPtmux;" + sequence.replace(b"\x1b", b"\x1b\x1b") + b"\x1b\\"


class Previewer:
    """Draws thumbnails to stdout with one protocol; `draw` returns False when stdout is not a terminal."""

    def __init__(self, env: Mapping[str, str] | None = None, columns: int = config.PREVIEW_COLUMNS) -> None:
        try:
            import chafa
        except ImportError:
            raise ClipdexError("--preview needs chafa: pip install chafa.py") from None
        env = os.environ if env is None else env
        self.chafa = chafa
        self.protocol = protocol_for(env)
        self.tmux = bool(env.get("TMUX")) and self.protocol != "blocks"
        if self.tmux and not env.get(PREVIEW_ENV) and not tmux_passes_pictures(env):
            self.protocol, self.tmux = "blocks", False
        self.columns = columns

    def cells_for(self, image: Image.Image) -> tuple[int, int]:
        """The cells (columns, rows) the picture fills: `columns` wide, or less for a tall one, which is fitted
        into a square of that width (half as many rows, cells being about twice as tall as wide)."""
        most = max(1, self.columns * CELL[0] // CELL[1])
        rows = max(1, round(self.columns * image.height / image.width * CELL[0] / CELL[1]))
        if rows <= most:
            return self.columns, rows
        return max(1, round(most * image.width / image.height * CELL[1] / CELL[0])), most

    def kitty(self, image: Image.Image) -> list[bytes]:
        """kitty's graphics protocol with a PNG (a 256-colour one: a tenth of raw RGBA's bytes) scaled into its
        cells, in escape sequences of at most KITTY_CHUNK bytes of data; q=2 keeps kitty from answering on stdin."""
        png = io.BytesIO()
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(png, "PNG", optimize=True)
        data = base64.standard_b64encode(png.getvalue())
        chunks = [data[at:at + KITTY_CHUNK] for at in range(0, len(data), KITTY_CHUNK)]
        columns, rows = self.cells_for(image)
        sequences = []
        for n, chunk in enumerate(chunks):
            keys = f"a=T,f=100,q=2,c={columns},r={rows}," if n == 0 else ""
            sequences.append(b"\x1b_G" + f"{keys}m={int(n < len(chunks) - 1)}".encode() + b";" + chunk + b"\x1b\\")
        return sequences

    @staticmethod
    def available() -> bool:
        return sys.stdout.isatty()

    def fitted(self, image: Image.Image) -> Image.Image:
        """`image` as RGBA at most the pixels of `columns` cells square: what every protocol is given."""
        image = image.convert("RGBA")
        image.thumbnail((self.columns * CELL[0], self.columns * CELL[0]))
        return image

    def render(self, image: Image.Image) -> bytes:
        """The escape sequences (or coloured half-blocks) that draw `image` `columns` cells wide."""
        chafa = self.chafa
        image = self.fitted(image)
        if self.protocol == "kitty":
            return b"".join(through_tmux(sequence) if self.tmux else sequence for sequence in self.kitty(image))
        canvas_config = chafa.CanvasConfig()
        canvas_config.width, canvas_config.height = self.cells_for(image)
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
        drawn = canvas.print(fallback=True)
        return through_tmux(drawn) if self.tmux else drawn

    def thumbnail(self, path: str | Path, moment: float | None = None) -> Image.Image | None:
        """A library file's picture (a video's frame at `moment`); None for one that cannot be read now."""
        from clipdex.retrieval.media.images import read_image
        from clipdex.retrieval.media.video import frame_at

        side = self.columns * CELL[0]
        try:
            return frame_at(path, moment, side) if moment is not None else read_image(Path(path), side).image
        except (ClipdexError, OSError):
            return None

    def draw(self, path: str | Path, moment: float | None = None) -> None:
        """The thumbnail of a library file on its own lines (skipped when it cannot be read now: the line above
        it already names it)."""
        image = self.thumbnail(path, moment)
        if image is not None:
            self._write(self.render(image) + b"\n")

    def draw_row(self, tiles: list[tuple[str, str | Path, float | None]]) -> None:
        """Half-block thumbnails side by side, each with its label (at most `columns` wide) under it."""
        drawn = []  # (lines, their width in cells)
        for _, path, moment in tiles:
            image = self.thumbnail(path, moment)
            fitted = self.fitted(image) if image is not None else None
            drawn.append((self.render(fitted).decode().split("\n"), self.cells_for(fitted)[0]) if fitted else ([], 0))
        lines = [(" " * GAP).join(tile[n] + "\x1b[0m" + " " * (self.columns - width) if n < len(tile)
                                  else " " * self.columns for tile, width in drawn)
                 for n in range(max(len(tile) for tile, _ in drawn))]
        labels = (" " * GAP).join(shown(label)[:self.columns].ljust(self.columns) for label, _, _ in tiles)
        self._write("\n".join([*lines, labels.rstrip(), ""]).encode())

    @staticmethod
    def _write(data: bytes) -> None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


@functools.lru_cache(maxsize=1)
def terminal_previewer() -> Previewer | None:
    """The terminal's previewer, or None where stdout is not a terminal (a pipe, a file): then text alone."""
    return Previewer() if Previewer.available() else None


def print_previews(hits) -> bool:
    """Thumbnails of the hits with their numbers, then a line a hit (number, score, path); pictures drawn as
    half-blocks go several to a row. False (nothing printed) when there is no terminal."""
    previewer = terminal_previewer()
    if previewer is None or not hits:
        return False

    def line(n: int, hit) -> str:
        return f"{n}. {hit.score:.4f}  {shown(hit.path)}" + (f"  at {hit.time:.0f} s" if hit.time else "")

    if previewer.protocol != "blocks":
        for n, hit in enumerate(hits, 1):
            console.print(line(n, hit), soft_wrap=True)
            previewer.draw(hit.path, hit.time)
        return True
    width = shutil.get_terminal_size((80, 24)).columns
    per_row = max(1, (width + GAP) // (previewer.columns + GAP))
    tiles = [(f"#{n} {hit.score:.3f}", hit.path, hit.time) for n, hit in enumerate(hits, 1)]
    for start in range(0, len(tiles), per_row):
        previewer.draw_row(tiles[start:start + per_row])
    for n, hit in enumerate(hits, 1):
        console.print(line(n, hit), soft_wrap=True)
    return True
