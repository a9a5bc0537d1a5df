"""The date a search sentence names, as a span of days: "in 2019", "July 2019", "2019-07", and phrases that count
from today ("yesterday", "this week", "last month", "last summer", "last Christmas", "the summer of 2019").

A hand-written grammar rather than a date library: dateparser takes 200-300 ms to import and reads "what may
happen" as a date, timefhuman and ctparse match inside words (docs/search.md). A phrase is read only when it is
clearly a date: a year needs a preposition before it ("photos of 1999 things" is no year), a month alone is never
one ("a bus in May"), a season or holiday needs "this", "last" or a year ("a christmas tree" is not filtered).
Seasons are the northern hemisphere's astronomical ones (summer is 21 June - 22 September); weeks start on
Monday. English only."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta

_MONTHS = {name.casefold(): n for n, name in enumerate(calendar.month_name) if name} | {
    name.casefold(): n for n, name in enumerate(calendar.month_abbr) if name and name != "May"}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_SEASONS = {"spring": ((3, 20), (6, 21)), "summer": ((6, 21), (9, 23)), "autumn": ((9, 23), (12, 21)),
            "fall": ((9, 23), (12, 21)), "winter": ((12, 21), (3, 20))}  # [first day, day after) of each
_YEAR = r"(?:19|20)\d\d"
_LEAD = r"(?:\b(?:in|from|during|on|at|over)\s+)?(?:the\s+)?"
_DATE = re.compile(
    rf"{_LEAD}(?:\b(?P<month>{_MONTH})\.?\s+(?P<year>{_YEAR})\b"
    rf"|\b(?P<iso_year>{_YEAR})-(?P<iso_month>0[1-9]|1[0-2])\b"
    rf"|\b(?P<which>this|last)\s+(?P<unit>week|weekend|month|year|spring|summer|autumn|fall|winter|christmas"
    rf"|{_MONTH})\b"
    rf"|\b(?P<season>spring|summer|autumn|fall|winter|christmas)\s+(?:of\s+)?(?P<season_year>{_YEAR})\b"
    rf"|\b(?P<day>today|yesterday)\b"
    rf"|(?:\b(?:in|from|during)\s+)(?P<only_year>{_YEAR})\b)",
    re.IGNORECASE)


@dataclass(frozen=True)
class DateSpan:
    """Days from `first` up to, not including, `end`; where the phrase lay in the text, and how it is said."""

    first: date
    end: date
    start: int
    stop: int
    label: str


def read_date(text: str, today: date) -> DateSpan | None:
    """The first date phrase of `text`, counted from `today` where it is relative."""
    match = _DATE.search(text)
    if not match:
        return None
    first, end, label = _span(match, today)
    return DateSpan(first, end, match.start(), match.end(), label)


def _span(match: re.Match, today: date) -> tuple[date, date, str]:
    groups = {name: value.casefold() for name, value in match.groupdict().items() if value}
    if "only_year" in groups:
        year = int(groups["only_year"])
        return date(year, 1, 1), date(year + 1, 1, 1), str(year)
    if "iso_year" in groups or "year" in groups:
        year = int(groups.get("iso_year") or groups["year"])
        month = int(groups["iso_month"]) if "iso_month" in groups else _MONTHS[groups["month"]]
        return _month(year, month)
    if "day" in groups:
        day = today - timedelta(days=groups["day"] == "yesterday")
        return day, day + timedelta(days=1), _days(day, day + timedelta(days=1))
    if "season" in groups:
        return _named(groups["season"], int(groups["season_year"]))
    return _relative(groups["which"] == "last", groups["unit"], today)


def _month(year: int, month: int) -> tuple[date, date, str]:
    first = date(year, month, 1)
    return first, date(year + month // 12, month % 12 + 1, 1), f"{calendar.month_name[month]} {year}"


def _named(name: str, year: int) -> tuple[date, date, str]:
    """A season or Christmas of `year` (winter: the one that begins in December of that year)."""
    if name == "christmas":
        first, end = date(year, 12, 24), date(year, 12, 27)
    else:
        (m1, d1), (m2, d2) = _SEASONS[name]
        first, end = date(year, m1, d1), date(year + (m2 < m1), m2, d2)
    return first, end, _days(first, end)


def _relative(last: bool, unit: str, today: date) -> tuple[date, date, str]:
    """"this"/"last" week, weekend, month, year, season, Christmas or month name, from `today`: "last" is the
    latest one over before today, "this" the one today lies in (or, for a season, Christmas or a month, this
    year's)."""
    if unit in ("week", "weekend"):
        monday = today - timedelta(days=today.weekday() + 7 * last)
        first = monday + timedelta(days=5 if unit == "weekend" else 0)
        end = monday + timedelta(days=7)
        return first, end, _days(first, end)
    if unit == "month":
        month, year = (today.month - 1 or 12, today.year - (today.month == 1)) if last else (today.month, today.year)
        return _month(year, month)
    if unit == "year":
        year = today.year - last
        return date(year, 1, 1), date(year + 1, 1, 1), str(year)
    if unit in _MONTHS:
        month = _MONTHS[unit]
        return _month(today.year - (last and month >= today.month), month)
    year = today.year - (unit == "winter" and today.month < 6)  # "this winter" in February began in December
    if last:
        year = next(y for y in range(today.year, today.year - 3, -1) if _named(unit, y)[1] <= today)
    return _named(unit, year)


def _days(first: date, end: date) -> str:
    """"21 Jun – 22 Sep 2025", "21 Dec 2025 – 19 Mar 2026", "7 Dec 2026" (the last day shown is end's eve)."""
    last = end - timedelta(days=1)
    if last == first:
        return f"{first.day} {calendar.month_abbr[first.month]} {first.year}"
    year = "" if first.year == last.year else f" {first.year}"
    return f"{first.day} {calendar.month_abbr[first.month]}{year} – {last.day} {calendar.month_abbr[last.month]} " \
           f"{last.year}"
