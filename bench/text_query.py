"""One text query through the text tower: all 77 padded positions vs the exact trim to the real tokens.

    python bench/text_query.py [--model ViT-B-32] [--repeat 30] [--json]

The last line of stdout is one JSON object with the figures (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipdex.retrieval.models.openclip.factory import load_encoder  # noqa: E402

QUERY = "a dog running on a beach at sunset"


def per_query_ms(encoder, trim: bool, repeat: int) -> float:
    encoder.encode_texts([QUERY], trim=trim)
    started = time.perf_counter()
    for _ in range(repeat):
        encoder.encode_texts([QUERY], trim=trim)
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    encoder = load_encoder(args.model, None, "cpu")
    full, trimmed = per_query_ms(encoder, False, args.repeat), per_query_ms(encoder, True, args.repeat)
    difference = np.abs(encoder.encode_texts([QUERY], trim=True) - encoder.encode_texts([QUERY], trim=False)).max()
    print(f"{args.model}, random weights, query {QUERY!r}")
    print(f"full context: {full:.1f} ms   trimmed: {trimmed:.1f} ms   speed-up {full / trimmed:.2f}×   max |Δ| {difference:.1e}")
    if args.json:
        print(json.dumps({"full_ms": round(full, 2), "trimmed_ms": round(trimmed, 2), "max_difference": float(difference)}))


if __name__ == "__main__":
    main()
