"""Warm text queries over the HTTP API: p50/p90 of GET /api/search against a running server.

    python bench/api_query.py [--images 100000] [--model ViT-B-32] [--queries 60] [--precision fp32] [--json]

The server is the one `clipdex serve` runs (uvicorn, the same app), in a thread of this process, asked over a real
socket by a keep-alive HTTP/1.1 client, as a page's script asks it. The library holds synthetic embedding-like
vectors under a real model binding (random weights): query cost does not depend on what the vectors show. Its
text tower is exported as indexing exports it. Every query is new text (no cache hit), except in the last line,
which asks the same sentences again (the query cache). The last line of stdout is one JSON object (--json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import fill_library  # noqa: E402
from clipdex.cli.web import create_app  # noqa: E402
from clipdex.retrieval import config
from clipdex.retrieval.models.openclip.factory import load_encoder  # noqa: E402
from clipdex.retrieval.library import Library  # noqa: E402
from clipdex.retrieval.models.prepared import prepare  # noqa: E402

QUERIES = ["a dog on a beach", "red car at night", "two people hiking in snow", "a bowl of ramen", "city skyline"]


def serve(app) -> tuple[int, object]:
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return port, server


TOKEN = "a-bench-token-0123456789"


def timed(connection: http.client.HTTPConnection, texts: list[str]) -> list[float]:
    times = []
    for text in texts:
        started = time.perf_counter()
        connection.request("GET", "/api/search?" + urllib.parse.urlencode({"q": text, "k": 20}),
                           headers={"Authorization": f"Bearer {TOKEN}"})  # as every request must (serve's default)
        response = connection.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200 and len(json.loads(body)) == 20, body[:200]
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    encoder = load_encoder(args.model, None, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[config.CACHE_ENV] = str(Path(tmp) / "cache")
        notes = prepare(encoder, "fp32")[1]
        library = Library(Path(tmp) / "lib", create=True)
        library.use_encoder(encoder)
        fill_library(library, encoder.identity.dim, args.images)
        library = Library(Path(tmp) / "lib", create=True)  # opened afresh, as `clipdex serve` opens it
        port, server = serve(create_app(library, "cpu", args.precision, token=TOKEN))
        connection = http.client.HTTPConnection("127.0.0.1", port)
        timed(connection, ["warm up", "and once more"])
        texts = [f"{QUERIES[i % len(QUERIES)]} {i}" for i in range(args.queries)]
        times = timed(connection, texts)
        again = timed(connection, texts[-10:])
        text_encoder = type(library.text_encoder("cpu", args.precision)).__name__
        description = library.vector_index("image").describe()
        server.should_exit = True
    p50, p90 = statistics.median(times), times[int(len(times) * 0.9)]
    print(f"{args.model} ({args.precision}, {text_encoder}: {'; '.join(notes) or 'prepared'}), {args.images:,} images "
          f"({description}), {args.queries} new warm text queries over HTTP")
    print(f"p50 {p50:.1f} ms   p90 {p90:.1f} ms   min {times[0]:.1f} ms;   a repeated query: p50 "
          f"{statistics.median(again):.1f} ms")
    if args.json:
        print(json.dumps({"p50_ms": round(p50, 2), "p90_ms": round(p90, 2), "images": args.images,
                          "repeated_p50_ms": round(statistics.median(again), 2)}))


if __name__ == "__main__":
    main()
