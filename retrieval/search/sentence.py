"""One search box: the place, date and camera a sentence names, read out of it as exact filters; the rest is what
CLIP sees. "a red circle in Lisbon in 2024" is "a red circle", taken in Lisbon, Portugal, in 2024.

A phrase becomes a filter only when it is clearly one: a place after "in", "at", "near" or "from" that the
library's own photos were taken in (so "a jersey in red" or "nice shoes" never filter; "near Kyoto" is within
NEAR_KM of it), a date (sentence_dates.py: "in 2019", "July 2019", "last summer", "yesterday"), or a camera after
"taken with", "shot on" or "on my" that the library's photos were taken with. Anything else stays in the
sentence. Quotes around the whole query, or --literal, keep it whole."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Callable, Sequence

from clipdex.retrieval import config
from clipdex.retrieval.places.gazetteer import GAZETTEER, folded
from clipdex.retrieval.search.sentence_dates import read_date

_PLACE_WORD = re.compile(r"\b(in|at|near|from)\s+", re.IGNORECASE)
_CAMERA_WORD = re.compile(r"\b(taken with|shot (?:on|with)|on my)\s+(?:an?\s+|my\s+|the\s+)?", re.IGNORECASE)
_LONGEST_PLACE = 4  # words in a place name read after its preposition ("Rio de Janeiro", "Saint Paul de Vence")


@dataclass
class Reading:
    """What a sentence was read as: the text CLIP gets, and the filters its phrases gave (None: not named)."""

    text: str
    place: tuple[str, str, str] | None = None  # (city, region, country), "" for any
    place_label: str | None = None  # "in Lisbon, Portugal", "near Kyoto, Japan"
    near: tuple[float, float, float] | None = None  # (latitude, longitude, km) for "near" a city
    after: float | None = None
    before: float | None = None
    date_label: str | None = None
    cameras: tuple[str, ...] = ()
    camera_label: str | None = None
    phrases: list[str] = field(default_factory=list)  # the words taken out, as typed

    def line(self) -> str:
        """"a red circle · in Lisbon, Portugal · 2024 · taken with FUJIFILM X-T4"."""
        parts = [self.text] + [self.place_label] * bool(self.place_label) + \
            [self.date_label] * bool(self.date_label) + [f"taken with {self.camera_label}"] * bool(self.camera_label)
        return " · ".join(part for part in parts if part)


def _held_places(places: list[tuple[str, str, str, int, int]], others: bool) -> dict[str, tuple[tuple[str, str, str], str]]:
    """Each name a held place is called (folded) → its filter and how it is shown; with `others`, the names it
    has in other languages too (that reads the gazetteer: only when its own names found nothing)."""
    named: dict[str, tuple[tuple[str, str, str], str]] = {}
    for country, region, city, *_ in places:
        named.setdefault(folded(country), (("", "", country), country))
        if region and folded(region) != folded(city):
            named.setdefault(folded(region), (("", region, country), f"{region}, {country}"))
        named[folded(city)] = ((city, "", country), f"{city}, {country}")
        for other in GAZETTEER.other_names(city, country) if others else ():
            named.setdefault(folded(other), ((city, "", country), f"{city}, {country}"))
    return named


def _take(text: str, start: int, end: int) -> str:
    return " ".join((text[:start] + " " + text[end:]).split())


def _read_place(reading: Reading, held: Callable[[], list[tuple[str, str, str, int, int]]]) -> None:
    if not _PLACE_WORD.search(reading.text):
        return
    places = held()
    for others in (False, True):
        if places and _read_place_named(reading, _held_places(places, others)):
            return


def _read_place_named(reading: Reading, named: dict[str, tuple[tuple[str, str, str], str]]) -> bool:
    for match in _PLACE_WORD.finditer(reading.text):
        words = list(re.finditer(r"[\w'’.-]+", reading.text[match.end():]))
        for n in range(min(_LONGEST_PLACE, len(words)), 0, -1):
            spoken = reading.text[match.end():match.end() + words[n - 1].end()].rstrip(".,")
            found = named.get(folded(spoken))
            if found:
                (city, region, country), label = found
                position = GAZETTEER.position(city, country) if city and match.group(1).casefold() == "near" else None
                if position:
                    reading.near, reading.place_label = (*position, config.NEAR_KM), f"near {label}"
                else:
                    reading.place, reading.place_label = found[0], f"in {label}"
                reading.phrases.append(reading.text[match.start():match.end() + len(spoken)])
                reading.text = _take(reading.text, match.start(), match.end() + len(spoken))
                return True
    return False


def _read_date(reading: Reading, today: date) -> None:
    span = read_date(reading.text, today)
    if span is None:
        return
    reading.after = datetime.combine(span.first, time()).timestamp()  # (the photo's own clock: local days)
    reading.before = datetime.combine(span.end, time()).timestamp()
    reading.date_label = span.label
    reading.phrases.append(reading.text[span.start:span.stop])
    reading.text = _take(reading.text, span.start, span.stop)


def _read_camera(reading: Reading, held: Callable[[], list[str]]) -> None:
    """"taken with a Fuji" is every held camera whose name has a word starting "fuji" (FUJIFILM X-T4)."""
    cameras = held() if _CAMERA_WORD.search(reading.text) else []
    for match in _CAMERA_WORD.finditer(reading.text):
        said = re.match(r"[\w-]+(?:\s+[\w-]+)?", reading.text[match.end():])
        if not said:
            continue
        for spoken in (said.group(0), said.group(0).split()[0]):
            wanted = folded(spoken).split()
            found = tuple(camera for camera in cameras if _names_camera(wanted, folded(camera).split()))
            if found:
                reading.cameras = found
                reading.camera_label = found[0] if len(found) == 1 else spoken
                end = match.end() + len(spoken)
                reading.phrases.append(reading.text[match.start():end])
                reading.text = _take(reading.text, match.start(), end)
                return


def _names_camera(wanted: list[str], words: list[str]) -> bool:
    """Whether the words said start words of the camera's name, in order ("iphone" → "Apple iPhone 13")."""
    for n in range(len(words) - len(wanted) + 1):
        if all(words[n + i].startswith(w) and (len(w) >= 3 or words[n + i] == w) for i, w in enumerate(wanted)):
            return True
    return False


def read_sentence(text: str, places: Callable[[], list[tuple[str, str, str, int, int]]],
                  cameras: Callable[[], list[str]], today: date | None = None,
                  unread: Sequence[str] = ()) -> Reading:
    """`text` read against the places and cameras the library holds (store.places(), store.cameras()), asked
    only when the text has a word that could lead to one; relative dates count from `today` (by default, this
    machine's); `unread` names kinds of phrase (config.READ_KINDS) left as words."""
    reading = Reading(" ".join(text.split()))
    if "camera" not in unread:
        _read_camera(reading, cameras)
    if "place" not in unread:
        _read_place(reading, places)
    if "date" not in unread:
        _read_date(reading, today or date.today())
    if not reading.text:  # "in Lisbon" alone: every photo there, in CLIP's order for "a photo"
        reading.text = "a photo"
    return reading
