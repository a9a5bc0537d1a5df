"""What a query asks and answers, as plain values: the filters, each hit, the ranked hits with their notes. Light on
purpose (no numpy, no database): a CLI query answered by a running server is read back into these."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Sequence

from clipdex.retrieval.config import IMAGE
from clipdex.retrieval.errors import ClipdexError


@dataclass
class Hit:
    id: int
    kind: str  # IMAGE or CAPTION
    score: float
    path: str | None = None  # an image's file
    caption: str | None = None  # a caption's text
    ocr: str | None = None  # the part of the image's recognised text that matched the query's words
    time: float | None = None  # a video's best-matching moment, in seconds (its path is the video's)
    taken: float | None = None  # an image's date: EXIF DateTimeOriginal, else the file's mtime (POSIX seconds)
    width: int | None = None
    height: int | None = None
    tags: list[str] | None = None  # an image's tags, when the library tags its images (index --tags)
    strong: bool | None = None  # a text query's image hit: whether it beats the library's floor (relevance.py)
    why: list[str] | None = None  # an image hit's reasons for being there: "picture", "file name", "folder name",
    # "text in the photo" (query.py)
    rank_score: float | None = None  # in hybrid mode when words matched: the fused score the order follows (1.0:
    # first in both rankings), the cosine still under `score`
    source: str = "corpus"  # a caption's: the library's corpus, "builtin" (a concept of the built-in vocabulary)
    # or "vocabulary" (of the library's own, given with index --tags --vocabulary)

    @property
    def label(self) -> str:
        """What a person reads for this hit: the path of an image, the text of a caption."""
        return self.path if self.kind == IMAGE else self.caption

    def as_json(self) -> dict:
        if self.kind != IMAGE:
            return {"id": self.id if self.source == "corpus" else None, "caption": self.caption,
                    "score": round(self.score, 6), "source": self.source}
        found = {"id": self.id, "path": self.path, "score": round(self.score, 6), "taken": iso_date(self.taken),
                 "width": self.width, "height": self.height}
        if self.time is not None:
            found["time"] = self.time
        if self.tags is not None:
            found["tags"] = self.tags
        if self.strong is not None:
            found["strong"] = self.strong
        if self.why is not None:
            found["why"] = self.why
        if self.rank_score is not None:
            found["rank_score"] = round(self.rank_score, 6)
        return {**found, "ocr": self.ocr} if self.ocr is not None else found


def iso_date(seconds: float | None) -> str | None:
    """ISO 8601 in local time with its offset, as a photo's date is read (EXIF dates carry no zone); None for a date
    no calendar shows here (past the year 9999 in this time zone)."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def iso_seconds(text: str) -> float:
    """POSIX seconds of an ISO 8601 date (a date alone is local midnight; one this machine's clock cannot place in
    its own zone, such as 0001-01-01, is read as UTC). ValueError when `text` is no date."""
    moment = datetime.fromisoformat(text)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return (aware - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()


@dataclass
class Filters:
    """Exact restrictions: the search runs only over items that pass them."""

    folder: str | None = None  # absolute; items under it
    after: float | None = None  # photo date (EXIF, else mtime), POSIX seconds, inclusive
    before: float | None = None  # exclusive
    min_score: float | None = None
    tags: tuple[str, ...] = ()  # items holding every one of these tags (index --tags)
    place: tuple[str, str, str] | None = None  # (city, region, country) taken in; "" for any (places/)
    cameras: tuple[str, ...] = ()  # taken with any of these cameras, as the library holds their names
    near: tuple[float, float, float] | None = None  # (latitude, longitude, km): taken within km of there

    def __post_init__(self) -> None:
        self.tags, self.cameras = tuple(self.tags), tuple(self.cameras)  # (lists, read back from JSON)
        if self.place is not None:
            self.place = tuple(str(part) for part in self.place)
            if len(self.place) != 3:
                raise ClipdexError("a place is (city, region, country)")
        if self.near is not None:
            self.near = tuple(float(part) for part in self.near)
            if len(self.near) != 3 or not all(map(math.isfinite, self.near)) or abs(self.near[0]) > 90 \
                    or abs(self.near[1]) > 180 or not 0 < self.near[2] <= 20_000:
                raise ClipdexError("near is (latitude, longitude, km): -90..90, -180..180, more than 0 km")
        if self.folder is not None:
            if "\0" in self.folder:
                raise ClipdexError("a folder name cannot hold a NUL character")
            self.folder = os.path.abspath(os.path.expanduser(self.folder))
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise ClipdexError(f"--min-score must be a finite number, not {self.min_score}")

    @property
    def folders(self) -> tuple[str, ...]:
        """The folder as given and as it really is (links resolved): a library indexed through a link matches
        either spelling, as does one indexed at the real place and filtered through a link."""
        if self.folder is None:
            return ()
        return tuple(dict.fromkeys((self.folder, os.path.realpath(self.folder))))

    @property
    def restricts_items(self) -> bool:
        return bool(self.tags or self.cameras) or any(v is not None for v in (self.folder, self.after, self.before,
                                                                               self.place, self.near))


UNDERSTOOD = ("text", "place", "after", "before", "camera")  # what a search's sentence was read as (sentence.py)


class Hits(list):
    """Ranked hits (a list), with `notes`: what the user should know about how the query was read; and for a
    search, `understood`: the words CLIP was given and the place, dates and camera read out of them (the dates as
    --after and --before take them; None for what the sentence did not name)."""

    def __init__(self, hits: Sequence = (), notes: Sequence[str] = (),
                 understood: dict[str, str | None] | None = None) -> None:
        super().__init__(hits)
        self.notes = list(notes)
        self.understood = understood

    def to_wire(self) -> dict:
        """As a server sends them to a client (`clipdex.answering`): every field, unrounded."""
        return {"hits": [asdict(hit) for hit in self], "notes": self.notes, "understood": self.understood}

    @classmethod
    def from_wire(cls, data) -> "Hits":
        understood = data.get("understood")
        return cls([Hit(**hit) for hit in data["hits"]], [str(note) for note in data["notes"]],
                   {name: understood[name] for name in UNDERSTOOD} if understood is not None else None)
