"""Regenerate a captioned set: `python -m sample_data OUT_DIR [--set sample|train|heldout]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sample_data.synth import (
    SAMPLE_COUNT,
    SAMPLE_SEED,
    TRAIN_COUNT,
    heldout_scenes,
    sample_scenes,
    write_set,
    HELDOUT_SEED,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write images/ and captions.csv into")
    parser.add_argument(
        "--set",
        choices=("sample", "train", "heldout"),
        default="sample",
        help="sample: the committed set; train: the sample model's training stream; heldout: evaluation",
    )
    args = parser.parse_args()
    if args.set == "heldout":
        scenes, seed = heldout_scenes(), HELDOUT_SEED
    else:
        scenes, seed = sample_scenes(SAMPLE_SEED, SAMPLE_COUNT if args.set == "sample" else TRAIN_COUNT), SAMPLE_SEED
    print(write_set(args.out, scenes, seed))


if __name__ == "__main__":
    main()
