"""Caption files. Pairs: CSV with header `image,caption`, or JSONL with those keys, image paths relative to the
file so a folder of pairs can be moved as a whole; an optional `group` field marks pairs that training keeps in
one batch (hard negatives of each other). Corpora: captions alone, for image→text search."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError, NotFound, first_line


@dataclass(frozen=True)
class Pair:
    image: Path
    caption: str
    group: str | None = None

    @property
    def batch_key(self) -> str:
        """Pairs with one key train in the same batch and are held out together."""
        return f"group:{self.group}" if self.group else f"image:{self.image}"


def read_pairs(path: Path) -> list[Pair]:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"pairs file not found: {path}")
    try:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ClipdexError(f"cannot read pairs file {path}: {exc}") from None
    pairs = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("image") or not row.get("caption"):
            raise ClipdexError(f"{path}: entry {number} needs non-empty 'image' and 'caption' fields")
        group = str(row.get("group") or "").strip() or None
        pairs.append(Pair((path.parent / row["image"]).resolve(), str(row["caption"]).strip(), group))
    if not pairs:
        raise ClipdexError(f"{path} holds no pairs")
    missing = [p.image for p in pairs if not p.image.is_file()]
    if missing:
        raise NotFound(f"{path}: {len(missing)} image(s) not found, first: {missing[0]}")
    return pairs


@dataclass
class CaptionFile:
    captions: list[str]  # valid, stripped, each once, in order
    skipped: list[str]  # why each refused entry was refused ("line 3: the caption is a number, not text")


def read_captions(path: Path) -> CaptionFile:
    """A caption corpus: .txt (one caption a line), or .csv/.jsonl with a `caption` field."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"captions file not found: {path}")
    try:
        return parse_captions(path.read_text(encoding="utf-8"), path.suffix.lower())
    except UnicodeDecodeError as exc:
        raise ClipdexError(f"cannot read captions file {path}: {exc}") from None


def parse_captions(text: str, suffix: str) -> CaptionFile:
    """Captions from the text of a corpus file whose name ends in `suffix`, first occurrence kept. An entry that
    is not a caption (a number, null, a list; text JSON escapes cannot encode; a NUL; over
    config.MAX_CAPTION_CHARS) is skipped with its reason, never stored as its Python spelling."""
    if suffix == ".json":
        raise ClipdexError("captions come as .txt (one a line), .csv or .jsonl (one JSON object a line), not .json")
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        else:
            rows = [{"caption": line} for line in text.splitlines()]
    except (ValueError, RecursionError, csv.Error) as exc:  # ValueError: bad JSON, or an integer of 5,000 digits
        raise ClipdexError(f"cannot read the captions: {first_line(exc)}") from None
    if suffix in (".csv", ".jsonl") and rows and not all(isinstance(r, dict) and "caption" in r for r in rows):
        raise ClipdexError("every caption entry needs a 'caption' field")
    captions, skipped = [], []
    for number, row in enumerate(rows, 1):
        reason = _not_a_caption(row["caption"])
        if reason:
            skipped.append(f"entry {number}: {reason}")
        elif row["caption"].strip():
            captions.append(row["caption"].strip())
    return CaptionFile(list(dict.fromkeys(captions)), skipped)


def _not_a_caption(value: object) -> str | None:
    if not isinstance(value, str):
        return f"the caption is {type(value).__name__ if value is not None else 'null'}, not text"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "the caption holds a lone surrogate (\\ud800–\\udfff), which is not text"
    if "\0" in value:
        return "the caption holds a NUL character, which is not text"
    if len(value) > config.MAX_CAPTION_CHARS:
        return f"the caption is {len(value):,} characters long, over {config.MAX_CAPTION_CHARS:,}"
    return None
