"""Regenerate a captioned set: `python -m sample_data OUT_DIR [--set sample|train|heldout]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipdex.sample_data.synth import (
    SAMPLE_COUNT,
    SAMPLE_SEED,
    HELDOUT_SEED,
    VARIANT_COUNT,
    heldout_scenes,
    sample_scenes,
    training_scenes,
    write_set,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write images/ and captions.csv into")
    parser.add_argument(
        "--set",
        choices=("sample", "stream", "variants", "train", "heldout"),
        default="sample",
        help="sample: the committed set; stream: the training scenes alone; variants: only the scenes grouped with "
        "their shape variants; train: both (the stream, its start grouped with variants); heldout: evaluation",
    )
    args = parser.parse_args()
    if args.set == "heldout":
        print(write_set(args.out, heldout_scenes(), HELDOUT_SEED))
    elif args.set == "variants":
        print(write_set(args.out, training_scenes()[:VARIANT_COUNT], SAMPLE_SEED))
    elif args.set in ("stream", "train"):
        print(write_set(args.out, training_scenes(variants=args.set == "train"), SAMPLE_SEED))
    else:
        print(write_set(args.out, sample_scenes(SAMPLE_SEED, SAMPLE_COUNT), SAMPLE_SEED))


if __name__ == "__main__":
    main()
