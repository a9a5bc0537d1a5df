"""The generator is deterministic, its captions are unique and say what is drawn, and the committed set is its
output."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clipdex.retrieval import config
from clipdex.retrieval.media.images import read_image
from clipdex.sample_data.synth import (
    COLOURS,
    heldout_scenes,
    SAMPLE_COUNT,
    sample_scenes,
    SAMPLE_SEED,
    SHAPES,
    TRAIN_COUNT,
    training_scenes,
    VARIANT_COUNT,
    write_set,
)
from tests.conftest import SAMPLE_ROWS


def test_same_seed_same_bytes_and_captions(tmp_path: Path) -> None:
    scenes = sample_scenes(SAMPLE_SEED, 24)
    a, b = write_set(tmp_path / "a", scenes, SAMPLE_SEED), write_set(tmp_path / "b", scenes, SAMPLE_SEED)
    assert a.read_bytes() == b.read_bytes()
    for image in sorted((tmp_path / "a" / "images").iterdir()):
        assert image.read_bytes() == (tmp_path / "b" / "images" / image.name).read_bytes()
    other = write_set(tmp_path / "c", sample_scenes(SAMPLE_SEED + 1, 24), SAMPLE_SEED + 1)
    assert other.read_bytes() != a.read_bytes()


def test_committed_sample_is_the_generators_output() -> None:
    assert [row["caption"] for row in SAMPLE_ROWS] == [s.caption for s in sample_scenes(SAMPLE_SEED, SAMPLE_COUNT)]
    suffixes = {Path(row["image"]).suffix for row in SAMPLE_ROWS}
    assert suffixes == {".png", ".jpg", ".webp"}


def test_captions_unique_and_heldout_disjoint_from_training() -> None:
    stream = training_scenes(variants=False)
    groups = [e if isinstance(e, tuple) else (e,) for e in training_scenes()]
    captions = {c for group in groups for s in group for c in (s.caption, replace(s, omit=frozenset()).caption)}
    heldout = [s.caption for s in heldout_scenes()]
    assert len(stream) == len(groups) == TRAIN_COUNT and len({s.caption for s in stream}) == TRAIN_COUNT
    assert [replace(g[0], omit=frozenset()) for g in groups] == stream  # the stream, some of it with variants
    assert len(set(heldout)) == len(heldout) and not captions & set(heldout)
    assert [s.caption for s in stream[:SAMPLE_COUNT]] == [r["caption"] for r in SAMPLE_ROWS]


def test_training_groups_differ_only_in_shape(tmp_path: Path) -> None:
    groups = [e for e in training_scenes() if isinstance(e, tuple)]
    assert len(groups) == VARIANT_COUNT and {len(g) for g in groups} <= {3, 4}
    assert sum(len(g) == 4 for g in groups) > VARIANT_COUNT * 0.8
    assert any("size" in g[0].omit for g in groups) and any(not g[0].omit for g in groups)
    for group in groups[:200]:
        words = [s.caption.split() for s in group]
        assert len({len(w) for w in words}) == 1 and len({s.caption for s in group}) == len(group)
        differing = {i for i in range(len(words[0])) if len({w[i] for w in words}) > 1}
        assert all(words[0][i].rstrip("s") in SHAPES for i in differing)
    csv_path = write_set(tmp_path, groups[:3], SAMPLE_SEED)
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "image,caption,group" and len(rows) == 1 + sum(len(g) for g in groups[:3])
    first = [read_image(tmp_path / r.split(",")[0]).image for r in rows[1:] if r.endswith(",0")]
    mask = [np.asarray(im).astype(int) for im in first]
    assert all(m.shape == mask[0].shape for m in mask)  # one layout: same canvas, shapes differ only
    assert all(0 < np.any(m != mask[0], axis=2).mean() < 0.2 for m in mask[1:])


# -------------------------------------------------------------------------- captions describe the pixels

_SHAPE = r"(?:a (?P<{0}size>small|large) )?(?P<{0}colour>\w+) (?P<{0}shape>circle|square|triangle|star)"
_PATTERNS = [
    ("single", re.compile(_SHAPE.format("a") + r" at the (?P<position>\w+) on a (?P<bg>\w+) background$")),
    ("pair", re.compile(_SHAPE.format("a") + r" (?P<relation>left of|above) " + _SHAPE.format("b") + r" on a (?P<bg>\w+) background$")),
    ("group", re.compile(r"(?P<count>two|three|four) (?P<acolour>\w+) (?P<ashape>\w+)s on a (?P<bg>\w+) background$")),
]


def _parse(caption: str) -> tuple[str, dict]:
    for kind, pattern in _PATTERNS:
        match = pattern.match(caption)
        if match:
            return kind, match.groupdict()
    raise AssertionError(f"caption does not parse: {caption}")


_AREA_FACTOR = {"circle": np.pi, "square": 1.7**2, "triangle": 1.8, "star": 5 * 0.45 * np.sin(np.pi / 5)}


def _colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return np.abs(pixels.astype(int) - np.array(COLOURS[colour])).sum(axis=2) < 60


def _blobs(mask: np.ndarray) -> int:
    """Shapes in a mask: 4-connected blobs at least a fifth the size of the largest, since the thin points of a
    small star can come apart from its body after resizing."""
    seen = np.zeros_like(mask)
    sizes = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        size, stack = 0, [(y, x)]
        while stack:
            cy, cx = stack.pop()
            if 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and mask[cy, cx] and not seen[cy, cx]:
                seen[cy, cx] = True
                size += 1
                stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
        sizes.append(size)
    return sum(size >= max(sizes) / 5 for size in sizes)


@pytest.mark.parametrize("row", SAMPLE_ROWS[:80], ids=lambda r: r["image"])
def test_caption_matches_pixels(row: dict) -> None:
    """Read each committed image as clipdex does (EXIF applied) and check the caption against its pixels."""
    decoded = read_image(config.SAMPLE_DATA_DIR / row["image"])
    image = decoded.image
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = np.asarray(image.crop((left, top, left + side, top + side)).resize((96, 96), 0))
    kind, parts = _parse(row["caption"])
    a = _colour_mask(square, parts["acolour"])
    assert a.sum() > 8, f"no {parts['acolour']} in {row['image']}"
    ys, xs = np.nonzero(a)
    if kind == "single":
        expected = {"left": xs.mean() < 48, "right": xs.mean() > 48, "top": ys.mean() < 48, "bottom": ys.mean() > 48}
        assert expected[parts["position"]], row
        # area / (radius² factor of the shape) estimates radius²; small and large radii are 0.09 and 0.17
        radius_sq = a.mean() / _AREA_FACTOR[parts["ashape"]]
        assert (radius_sq > 0.09 * 0.17) == (parts["asize"] == "large"), (row, radius_sq)
    elif kind == "pair" and parts["acolour"] != parts["bcolour"]:
        b = _colour_mask(square, parts["bcolour"])
        yb, xb = np.nonzero(b)
        if parts["relation"] == "left of":
            assert xs.mean() < xb.mean(), row
        else:
            assert ys.mean() < yb.mean(), row
    elif kind == "group":
        assert _blobs(a) == {"two": 2, "three": 3, "four": 4}[parts["count"]], row
    corner = np.asarray(image)[:4, :4].reshape(-1, 3).mean(axis=0)
    plain = {"white": 250, "black": 20, "grey": 128}
    if parts["bg"] in plain:
        assert abs(corner.mean() - plain[parts["bg"]]) < 12, row
