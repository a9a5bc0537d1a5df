"""`clipdex demo`: the whole loop offline on the bundled sample model and photos, in well under a minute."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError, NotFound

DEMO_QUERIES = (
    "a red circle",
    "a large blue square on a striped background",
    "two yellow stars",
    "a small purple triangle above a large orange circle",
)
DEMO_CAPTION_IMAGE = "images/00003.jpg"  # stored rotated with an EXIF tag: the demo shows it read upright
MARKER = ".clipdex-demo"  # written into a demo library: only a folder holding it is ever emptied by the demo
_LIBRARY_FILE_PATTERNS = (
    config.DATABASE_FILE, config.DATABASE_FILE + "-wal", config.DATABASE_FILE + "-shm", config.LOCK_FILE,
    config.LIBRARY_CONFIG_FILE, config.RELEVANCE_FILE, "*.faiss", "*.faiss.json", MARKER,
)


def default_demo_dir() -> Path:
    return config.default_cache_dir() / "demo-library"


def _fresh_folder(folder: Path) -> None:
    """Remove a previous demo library's own files, and only those: a folder that is not empty and not a demo
    library, or that holds anything clipdex did not write, is refused and left untouched."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ClipdexError(f"{folder} is a file; give the demo a folder")
    present = list(folder.iterdir())
    if not present:
        return
    ours = {p for pattern in _LIBRARY_FILE_PATTERNS for p in folder.glob(pattern) if p.is_file() and not p.is_symlink()}
    foreign = [p.name for p in present if p not in ours]
    # The default folder is clipdex's own (also from versions before the marker); any other must carry it.
    if foreign or not ((folder / MARKER).is_file() or folder == default_demo_dir()):
        shown = foreign[0] if foreign else present[0].name
        raise ClipdexError(f"{folder} holds files the demo did not write ({shown}, …); give the demo an empty folder")
    for path in ours:
        path.unlink()


def run_demo(folder: Path, device: str = "auto", progress: Callable | None = None) -> dict:
    """Index the sample photos into `folder` with the bundled model, search, describe a photo, and measure the
    model's recall on held-out photos; everything a person sees in `clipdex demo`, as data."""
    from clipdex import api
    from clipdex.indexer.options import IndexOptions
    from clipdex.retrieval.training.evaluate import evaluate_pairs
    from clipdex.retrieval.models.openclip.factory import SAMPLE_ALIAS
    from clipdex.retrieval.describe.pairs import read_pairs
    from clipdex.sample_data.synth import HELDOUT_SEED, heldout_scenes, write_set

    if not config.SAMPLE_MODEL.is_file():
        raise NotFound(f"the sample model is missing: {config.SAMPLE_MODEL}")
    _fresh_folder(folder)
    library = api.open_library(folder, create=True)
    (folder / MARKER).touch(mode=0o600)
    report = api.index(library, [config.SAMPLE_DATA_DIR / "images"], IndexOptions(model=SAMPLE_ALIAS, device=device),
                       progress)
    pairs = read_pairs(config.SAMPLE_CAPTIONS)
    api.add_captions(library, [p.caption for p in pairs], device)
    searches = [
        {"query": q, "results": [h.as_json() for h in api.search(library, q, 3, device=device)]} for q in DEMO_QUERIES
    ]
    image = config.SAMPLE_DATA_DIR / DEMO_CAPTION_IMAGE
    truth = next(p.caption for p in pairs if p.image == image.resolve())
    hits = api.captions(library, image, 3, device)
    described = {"image": str(image), "true_caption": truth, "results": [h.as_json() for h in hits]}
    encoder = library.encoder(device)
    with tempfile.TemporaryDirectory(prefix="clipdex-heldout-") as tmp:
        heldout = evaluate_pairs(encoder, read_pairs(write_set(Path(tmp), heldout_scenes(), HELDOUT_SEED)))
    return {
        "library": str(folder),
        "model": encoder.identity.describe(),
        "indexed": report.as_json(),
        "searches": searches,
        "captions": described,
        "heldout_recall": heldout,
    }
