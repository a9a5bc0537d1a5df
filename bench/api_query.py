"""Warm HTTP API text query on a 10k-image library: p50/p90 of GET /api/search, in process.

    python bench/api_query.py [--images 10000] [--model ViT-B-32] [--queries 50] [--precision bf16]

The library holds synthetic unit vectors under a real model binding (random weights): query cost does not
depend on what the vectors show. Its text tower is exported, as indexing does, so fp32 queries run through
ONNX Runtime; --precision bf16 runs the torch model with bf16 weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastapi.testclient import TestClient  # noqa: E402

from bench.synthetic import fill_library  # noqa: E402
from clipdex.cli.web import create_app  # noqa: E402
from clipdex.api import export_text_tower  # noqa: E402
from clipdex.retrieval.factory import load_encoder  # noqa: E402
from clipdex.retrieval.library import Library  # noqa: E402

QUERIES = ["a dog on a beach", "red car at night", "two people hiking in snow", "a bowl of ramen", "city skyline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    encoder = load_encoder(args.model, None, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLIPDEX_CACHE"] = str(Path(tmp) / "cache")
        export_text_tower(encoder)
        library = Library(Path(tmp) / "lib", create=True)
        library.use_encoder(encoder)
        fill_library(library, encoder.identity.dim, args.images, 5000)
        library = Library(Path(tmp) / "lib", create=True)  # opened afresh, as `clipdex serve` opens it
        client = TestClient(create_app(library, "cpu", args.precision), base_url="http://127.0.0.1:8765")
        client.get("/api/search", params={"q": "warm up"})
        text_encoder = type(library.text_encoder("cpu", args.precision)).__name__
        times = []
        for i in range(args.queries):
            started = time.perf_counter()
            response = client.get("/api/search", params={"q": QUERIES[i % len(QUERIES)] + f" {i}", "k": 20})
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and len(response.json()) == 20
    times.sort()
    print(f"{args.model} ({args.precision}, {text_encoder}), {args.images:,} images, {args.queries} warm text queries "
          f"over HTTP (in process)")
    print(f"p50 {statistics.median(times):.1f} ms   p90 {times[int(len(times) * 0.9)]:.1f} ms   min {times[0]:.1f} ms")


if __name__ == "__main__":
    main()
