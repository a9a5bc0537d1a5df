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
_CANDIDATES = 32  # nearest places weighed for one position (Paris has 40 places of 15,000 people within 13 km)
_FOLDER = Path(__file__).parent


@dataclass(frozen=True)
class Place:
    city: str
    region: str
    country: str
    latitude: float = 0.0
    longitude: float = 0.0
    population: int = 0


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


def haversine_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distances between (…, 2) arrays of degrees, broadcast."""
    lat1, lon1, lat2, lon2 = (np.radians(x) for x in (a[..., 0], a[..., 1], b[..., 0], b[..., 1]))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))


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
        index = faiss.IndexFlatL2(3)  # (float32 inner products cannot tell places a kilometre apart; L2 can)
        index.add(unit_vectors(np.array([p.latitude for p in places]), np.array([p.longitude for p in places])))
        return index

    def name(self, positions: Sequence[tuple[float, float]]) -> list[Place]:
        """The place each (latitude, longitude) is in."""
        if not positions:
            return []
        places = self._table[0]
        points = np.asarray(positions, dtype=np.float64)
        _, found = self._index.search(unit_vectors(points[:, 0], points[:, 1]), _CANDIDATES)
        coordinates, people = self._coordinates
        km = haversine_km(points[:, None, :], coordinates[found])  # (positions, candidates), in float64
        claims = np.where(km <= people[found][..., 1], people[found][..., 0], -1.0)
        best = np.where(claims.max(axis=1) >= 0, claims.argmax(axis=1), km.argmin(axis=1))
        return [places[i] for i in found[np.arange(len(found)), best]]

    @cached_property
    def _coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Each place's (latitude, longitude), and its (people, radius it claims in km)."""
        places = self._table[0]
        return (np.array([(p.latitude, p.longitude) for p in places]),
                np.array([(p.population, claimed_km(p.population)) for p in places], dtype=np.float64))

    def position(self, city: str, country: str) -> tuple[float, float] | None:
        """Where a place's centre is (its largest namesake in that country), or None for no such place."""
        found = [p for p in self._table[0] if p.city == city and p.country == country]
        best = max(found, key=lambda p: p.population, default=None)
        return (best.latitude, best.longitude) if best else None

    def called(self, name: str) -> Place | None:
        """The largest place called `name` in any of its names ("Kyoto", "Lisboa"; "Paris, France" or "Paris,
        Texas" for one country or region), or None."""
        wanted, _, within = (folded(part).strip() for part in name.partition(","))
        found = [p for p in self._by_name.get(wanted, ()) if within in ("", folded(p.country), folded(p.region))]
        return max(found, key=lambda p: p.population, default=None)

    @cached_property
    def _by_name(self) -> dict[str, list[Place]]:
        """Each name (folded) a place is called → the places called it."""
        places, others = self._table
        named: dict[str, list[Place]] = {}
        for place in places:
            for name in {place.city, *others.get((place.city, place.country), ())}:
                named.setdefault(folded(name), []).append(place)
        return named

    def other_names(self, city: str, country: str) -> list[str]:
        """What else GeoNames calls a place of 100,000 people or more ("Lisboa", "Lissabon" for Lisbon)."""
        return self._table[1].get((city, country), [])


GAZETTEER = Gazetteer()
