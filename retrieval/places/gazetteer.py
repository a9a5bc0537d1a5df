"""Places offline: a position named as city, region and country, and a place name found from what a person types.

The table (cities.tsv, made by build_cities.py from GeoNames) holds every place of 15,000 people or more. A
position is named after the largest place that claims it (a place claims a radius that grows with its people:
Paris's arrondissements and Lisbon's suburbs are Paris and Lisbon near their centres), else the nearest; the
search is a FAISS inner product over unit vectors on the sphere, the library clipdex already has."""

from __future__ import annotations

import csv
import math
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

EARTH_KM = 6371.0
_CANDIDATES = 8  # nearest places weighed for one position
_FOLDER = Path(__file__).parent


@dataclass(frozen=True)
class Place:
    city: str
    region: str
    country: str
    latitude: float = 0.0
    longitude: float = 0.0
    population: int = 0

    @property
    def label(self) -> str:
        """"Lisbon, Portugal"; a region only where it tells two places apart ("Paris, Texas, United States")."""
        return ", ".join(part for part in (self.city, self.country) if part)


def claimed_km(population: int) -> float:
    """How far from its centre a place names a position: 2 km for a town, 13 km for Paris, 26 km for Tokyo."""
    return 2.0 * math.sqrt(max(population, 1) / 50_000) if population > 50_000 else 2.0


def folded(name: str) -> str:
    """A name as a query is compared with it: case, accents and runs of spaces ignored ("münchen" = "Munchen")."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("-", " ").split())


def unit_vectors(latitudes: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latitudes), np.radians(longitudes)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1).astype(np.float32)


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


class Gazetteer:
    """The table, read once per process on first use (about 0.2 s)."""

    @cached_property
    def _table(self) -> tuple[list[Place], dict[tuple[str, str], list[str]]]:
        """The places, and the other names of each (by city and country)."""
        countries = dict(row for row in csv.reader((_FOLDER / "countries.tsv").open(encoding="utf-8"),
                                                   delimiter="\t") if len(row) == 2)
        places: list[Place] = []
        others: dict[tuple[str, str], list[str]] = {}
        with (_FOLDER / "cities.tsv").open(encoding="utf-8") as f:
            next(f)  # the source line
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                name, lat, lon, code, region, people, also = row
                place = Place(name, region, countries.get(code, code), float(lat), float(lon), int(people))
                places.append(place)
                if also:
                    others.setdefault((name, place.country), []).extend(also.split("|"))
        return places, others

    @cached_property
    def _index(self):
        import faiss

        places = self._table[0]
        index = faiss.IndexFlatIP(3)
        index.add(unit_vectors(np.array([p.latitude for p in places]), np.array([p.longitude for p in places])))
        return index

    def name(self, positions: Sequence[tuple[float, float]]) -> list[Place]:
        """The place each (latitude, longitude) is in."""
        if not positions:
            return []
        places = self._table[0]
        points = np.asarray(positions, dtype=np.float64)
        cosines, found = self._index.search(unit_vectors(points[:, 0], points[:, 1]), _CANDIDATES)
        named = []
        for cosine_row, row in zip(cosines, found):
            km = EARTH_KM * np.arccos(np.clip(cosine_row, -1.0, 1.0))
            claiming = [(places[i].population, i) for i, d in zip(row, km) if d <= claimed_km(places[i].population)]
            named.append(places[max(claiming)[1] if claiming else int(row[0])])
        return named

    def other_names(self, city: str, country: str) -> list[str]:
        """What else GeoNames calls a place of 100,000 people or more ("Lisboa", "Lissabon" for Lisbon)."""
        return self._table[1].get((city, country), [])


GAZETTEER = Gazetteer()
