"""Seeded synthetic photos whose captions say exactly what is drawn.

Scenes are sampled first (cheap, one RNG, so a set of N is a prefix of a set of N+M with the same seed) and
rendered afterwards from a per-image RNG. That split lets the held-out set exclude every caption of a large
training set without rendering it.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SIZES = {"small": 0.09, "large": 0.17}  # radius as a fraction of the scene square
BACKGROUNDS = ("white", "black", "grey", "striped", "dotted", "checkered")
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75)}
RELATIONS = ("left of", "above")
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
KIND_WEIGHTS = {"single": 0.3, "pair": 0.5, "group": 0.2}
OMIT_RATES = {"size": 0.5, "background": 0.3}  # training captions that leave a detail out

# The committed sample is the first SAMPLE_COUNT scenes of the training stream the sample model learned from;
# that stream is its first TRAIN_COUNT scenes, the first VARIANT_COUNT of them grouped with their shape variants;
# the held-out set uses another seed and excludes every caption of the training set.
SAMPLE_SEED = 7
SAMPLE_COUNT = 300
TRAIN_COUNT = 6000
VARIANT_COUNT = 1500
HELDOUT_SEED = 1001
HELDOUT_COUNT = 200


@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    size: str

    def phrase(self, sized: bool = True) -> str:
        return f"a {self.size} {self.colour} {self.shape}" if sized else f"a {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    kind: str  # "single" | "pair" | "group"
    background: str
    shapes: tuple[Shape, ...]
    position: str = ""  # single: where the shape is
    relation: str = ""  # pair: first shape relative to second
    omit: frozenset[str] = frozenset()  # details the caption leaves out: "size", "background"

    @property
    def caption(self) -> str:
        bg = "" if "background" in self.omit else f" on a {self.background} background"
        sized = "size" not in self.omit
        if self.kind == "single":
            return f"{self.shapes[0].phrase(sized)} at the {self.position}{bg}"
        if self.kind == "pair":
            return f"{self.shapes[0].phrase(sized)} {self.relation} {self.shapes[1].phrase(sized)}{bg}"
        first = self.shapes[0]
        return f"{COUNT_WORDS[len(self.shapes)]} {first.colour} {first.shape}s{bg}"


def _random_shape(rng: random.Random, size: str | None = None) -> Shape:
    return Shape(rng.choice(SHAPES), rng.choice(sorted(COLOURS)), size or rng.choice(sorted(SIZES)))


def _random_scene(rng: random.Random) -> Scene:
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    background = rng.choice(BACKGROUNDS)
    if kind == "single":
        return Scene(kind, background, (_random_shape(rng),), position=rng.choice(sorted(POSITIONS)))
    if kind == "pair":
        a, b = _random_shape(rng), _random_shape(rng)
        while (a.shape, a.colour) == (b.shape, b.colour):
            b = _random_shape(rng)
        return Scene(kind, background, (a, b), relation=rng.choice(RELATIONS))
    shape = _random_shape(rng, size="small")
    return Scene(kind, background, (shape,) * rng.choice(sorted(COUNT_WORDS)))


def sample_scenes(seed: int, count: int, exclude: Iterable[str] = ()) -> list[Scene]:
    """`count` scenes with pairwise different captions, none of them in `exclude`."""
    rng = random.Random(seed)
    seen = set(exclude)
    scenes: list[Scene] = []
    while len(scenes) < count:
        scene = _random_scene(rng)
        if scene.caption not in seen:
            seen.add(scene.caption)
            scenes.append(scene)
    return scenes


def shape_variants(scene: Scene) -> tuple[Scene, ...]:
    """The scene, then the same scene with its first shape (every shape, in a group) of each other kind.

    Drawn with one layout, the variants differ from each other only in shape, so a batch holding them can be
    told apart by shape alone: the hard negatives that full captions otherwise never force a model to learn.
    A variant that would repeat the other shape of a pair exactly is left out."""
    first, rest = scene.shapes[0], scene.shapes[1:]
    variants = [scene]
    for kind in SHAPES:
        new = replace(first, shape=kind)
        if kind == first.shape or any((s.shape, s.colour) == (kind, first.colour) for s in rest):
            continue
        shapes = (new,) * len(scene.shapes) if scene.kind == "group" else (new, *rest)
        variants.append(replace(scene, shapes=shapes))
    return tuple(variants)


def training_scenes(variants: bool = True) -> list[Scene | tuple[Scene, ...]]:
    """The sample model's training set: the first TRAIN_COUNT scenes of the stream, the first VARIANT_COUNT of
    them as groups with their shape variants (`variants=False`: the stream alone, as the model first learned).

    Some grouped captions leave out sizes or the background (still true, rarely ambiguous within a batch), so
    that shape words also follow the colour directly, as in the short queries people type ("a red circle")."""
    scenes = sample_scenes(SAMPLE_SEED, TRAIN_COUNT)
    if not variants:
        return list(scenes)
    rng = random.Random(f"{SAMPLE_SEED}:phrasing")
    groups: list[Scene | tuple[Scene, ...]] = []
    for scene in scenes[:VARIANT_COUNT]:
        omit = frozenset(name for name, p in OMIT_RATES.items() if rng.random() < p)
        groups.append(tuple(replace(variant, omit=omit) for variant in shape_variants(scene)))
    return groups + scenes[VARIANT_COUNT:]


def heldout_scenes() -> list[Scene]:
    """The evaluation set: another seed, and no caption the sample model could have trained on."""
    grouped = [entry if isinstance(entry, tuple) else (entry,) for entry in training_scenes()]
    train = {c for group in grouped for s in group for c in (s.caption, replace(s, omit=frozenset()).caption)}
    return sample_scenes(HELDOUT_SEED, HELDOUT_COUNT, exclude=train)


# ----------------------------------------------------------------------------------------------- rendering

_BACKGROUND_FILL = {"white": (250, 250, 250), "black": (20, 20, 20), "grey": (128, 128, 128)}
_PATTERN_LIGHT, _PATTERN_DARK = (235, 235, 235), (170, 170, 170)


def _paint_background(draw: ImageDraw.ImageDraw, background: str, width: int, height: int, step: int) -> None:
    if background in _BACKGROUND_FILL:
        draw.rectangle((0, 0, width, height), fill=_BACKGROUND_FILL[background])
        return
    draw.rectangle((0, 0, width, height), fill=_PATTERN_LIGHT)
    if background == "striped":
        for x in range(0, width, 2 * step):
            draw.rectangle((x, 0, x + step - 1, height), fill=_PATTERN_DARK)
    elif background == "dotted":
        r = max(1, step // 4)
        for y in range(step // 2, height, step):
            for x in range(step // 2, width, step):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=_PATTERN_DARK)
    else:  # checkered
        for y in range(0, height, step):
            for x in range(0, width, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=_PATTERN_DARK)


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    import math

    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, cx: float, cy: float, r: float) -> None:
    fill = COLOURS[shape.colour]
    if shape.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape.shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    else:
        draw.polygon(_star_points(cx, cy, r), fill=fill)


def _layout(scene: Scene, rng: random.Random) -> list[tuple[float, float]]:
    """Shape centres in scene-square units (0..1)."""
    jitter = lambda: rng.uniform(-0.04, 0.04)  # noqa: E731 - tiny local helper
    if scene.kind == "single":
        x, y = POSITIONS[scene.position]
        return [(x + jitter(), y + jitter())]
    if scene.kind == "pair":
        a, b = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)
        if scene.relation == "left of":
            return [(0.27 + jitter(), a), (0.73 + jitter(), b)]
        return [(a, 0.27 + jitter()), (b, 0.73 + jitter())]
    slots = [(0.2 + 0.3 * (i % 3), 0.2 + 0.3 * (i // 3)) for i in range(9)]
    return [(x + jitter(), y + jitter()) for x, y in rng.sample(slots, len(scene.shapes))]


def render(scene: Scene, rng: random.Random) -> Image.Image:
    """Draw the scene in the centred square of a canvas of random size, so any centre crop keeps it whole."""
    width, height = rng.randrange(160, 385, 8), rng.randrange(160, 385, 8)
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    _paint_background(draw, scene.background, width, height, step=max(4, side // 16))
    for shape, (x, y) in zip(scene.shapes, _layout(scene, rng)):
        _draw_shape(draw, shape, left + x * side, top + y * side, SIZES[shape.size] * side)
    return image


# EXIF orientation -> the transpose that turns the upright image into the stored pixels (the inverse of what
# a viewer applies), so the file displays upright only when the tag is honoured.
_STORE_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _save(image: Image.Image, stem: Path, rng: random.Random) -> Path:
    fmt = rng.choices(("png", "jpg", "webp"), weights=(0.45, 0.4, 0.15))[0]
    path = stem.with_suffix("." + fmt)
    if fmt == "png":
        image.save(path, optimize=True)
    elif fmt == "webp":
        image.save(path, quality=85, method=4)
    elif rng.random() < 0.3:
        orientation = rng.choice(sorted(_STORE_TRANSPOSE))
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.transpose(_STORE_TRANSPOSE[orientation]).save(path, quality=88, exif=exif.tobytes())
    else:
        image.save(path, quality=88)
    return path


def write_set(out_dir: Path, scenes: Sequence[Scene | tuple[Scene, ...]], seed: int) -> Path:
    """Render `scenes` into out_dir/images and write out_dir/captions.csv (paths relative to it).

    An entry that is a tuple of scenes is a group: its scenes share one layout (they are drawn from the same
    per-entry RNG) and their rows share a `group` value, which `clipdex finetune` keeps in one batch."""
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    grouped = any(isinstance(entry, tuple) for entry in scenes)
    rows = []
    for i, entry in enumerate(scenes):
        members = entry if isinstance(entry, tuple) else (entry,)
        for j, scene in enumerate(members):
            rng = random.Random(f"{seed}:{i}")
            stem = images_dir / (f"{i:05d}" if j == 0 else f"{i:05d}-{j}")
            path = _save(render(scene, rng), stem, rng)
            rows.append((path.relative_to(out_dir).as_posix(), scene.caption, *([str(i)] if grouped else [])))
    csv_path = out_dir / "captions.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image", "caption", "group") if grouped else ("image", "caption"))
        writer.writerows(rows)
    return csv_path
