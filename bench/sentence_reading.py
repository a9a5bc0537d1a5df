"""What reading places, dates and cameras out of a search sentence costs: `python bench/sentence_reading.py [--json]`.

Each sentence is read in a new process, as a cold query reads it (the modules imported, the regular expressions
compiled, the place table loaded only when a sentence needs it; numpy and FAISS, which every query loads, before
the clock starts), against a library holding photos in Lisbon and
Paris; the time is the import and the reading, the median of --runs. Then the naming of random positions (what
each `clipdex index` does for the photos that carry GPS), in one warm process, positions a second."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))

SENTENCES = {
    "no date or place words": "a red circle on a white wall",
    "a date": "a red circle last summer",
    "a place by its own name": "a red circle in Lisbon in 2024",
    "a place by another name": "a red circle in Lisboa",
    "a preposition, no place here": "a red circle in red",
}
READ = """
import sys, time
import numpy, faiss  # (a query has these already)
started = time.perf_counter()
from clipdex.retrieval.search.sentence import read_sentence
held = [("France", "Ile-de-France", "Paris", 3, 1), ("Portugal", "Lisbon", "Lisbon", 2, 4)]
reading = read_sentence(sys.argv[1], lambda: held, lambda: ["FUJIFILM X-T4"])
print(time.perf_counter() - started)
"""


def read_cold(sentence: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", READ, sentence], capture_output=True, text=True, check=True,
                              cwd=ROOT.parent)
        times.append(float(done.stdout))
    return statistics.median(times)


def naming_rate(count: int) -> tuple[float, float]:
    """(seconds to load the table and its index, positions named a second after that)."""
    import numpy as np

    from clipdex.retrieval.places.gazetteer import Gazetteer

    rng = np.random.default_rng(45)
    positions = np.column_stack([rng.uniform(-60, 70, count), rng.uniform(-180, 180, count)])
    gazetteer = Gazetteer()
    started = time.perf_counter()
    gazetteer.name(positions[:1].tolist())
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    gazetteer.name(positions.tolist())
    return loaded, count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = {f"read cold ms: {name}": round(read_cold(text, args.runs) * 1000, 1) for name, text in SENTENCES.items()}
    loaded, rate = naming_rate(args.positions)
    figures |= {"gazetteer load s": round(loaded, 3), "positions named a second": round(rate)}
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>50}: {value}")


if __name__ == "__main__":
    main()
