"""How well a model finds shapes from short queries: `python -m clipdex.sample_data.short_queries [--model M]`.

For every colour and shape, the query "a COLOUR SHAPE" ranks the 300 committed photos; the figure is the share
of the top 3 whose caption has that colour and shape (one of a pair counts, so does a group). Once the colour is
right, about 0.25 is chance. Full-caption recall (`clipdex eval`) does not show this: complete captions can be
told apart without shape.
"""

from __future__ import annotations

import argparse

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.training.evaluate import embed_image_files
from clipdex.retrieval.models.openclip.factory import load_encoder
from clipdex.retrieval.describe.pairs import read_pairs
from clipdex.sample_data.synth import COLOURS, SHAPES


def short_query_precision(model: str, top: int = 3) -> tuple[float, float]:
    """(shape-and-colour precision, colour precision) of the top `top` photos over every colour and shape."""
    encoder = load_encoder(model, None, "cpu")
    pairs = read_pairs(config.SAMPLE_CAPTIONS)
    images = embed_image_files(encoder, [p.image for p in pairs])
    both, colour_only = [], []
    for colour in COLOURS:
        vectors = encoder.encode_texts([f"a {colour} {shape}" for shape in SHAPES])
        for shape, vector in zip(SHAPES, vectors):
            for i in np.argsort(-(images @ vector))[:top]:
                both.append(f"{colour} {shape}" in pairs[i].caption)
                colour_only.append(f" {colour} " in f" {pairs[i].caption} ")
    return float(np.mean(both)), float(np.mean(colour_only))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="sample")
    args = parser.parse_args()
    both, colour = short_query_precision(args.model)
    print(f"{args.model}: top-3 precision over {len(COLOURS) * len(SHAPES)} queries: colour and shape {both:.2f}, "
          f"colour {colour:.2f}")


if __name__ == "__main__":
    main()
