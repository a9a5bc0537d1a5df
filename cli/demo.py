"""`clipdex demo`: the whole loop offline on the bundled sample model and photos, in well under a minute."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError

DEMO_QUERIES = (
    "a red circle",
    "a large blue square on a striped background",
    "two yellow stars",
    "a small purple triangle above a large orange circle",
)
DEMO_CAPTION_IMAGE = "images/00003.jpg"  # stored rotated with an EXIF tag: the demo shows it read upright
_LIBRARY_FILES = (config.DATABASE_FILE, config.LOCK_FILE)


def default_demo_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("clipdex", appauthor=False)) / "demo-library"


def _fresh_folder(folder: Path) -> None:
    """Empty a previous demo library; refuse to delete anything that is not clipdex's own files."""
    if folder.exists():
        foreign = [p.name for p in folder.iterdir() if not p.name.startswith(_LIBRARY_FILES) and ".faiss" not in p.name]
        if foreign:
            raise ClipdexError(f"{folder} holds other files ({foreign[0]}, …); give the demo an empty folder")
        shutil.rmtree(folder)


def run_demo(folder: Path, device: str, progress: Callable) -> dict:
    from clipdex.indexer.pipeline import index_folders
    from clipdex.retrieval.captions import add_captions
    from clipdex.retrieval.evaluate import evaluate_pairs
    from clipdex.retrieval.factory import SAMPLE_ALIAS, load_encoder
    from clipdex.retrieval.library import Library
    from clipdex.retrieval.pairs import read_pairs
    from clipdex.retrieval.query import QueryEngine
    from clipdex.sample_data.synth import HELDOUT_SEED, heldout_scenes, write_set

    if not config.SAMPLE_MODEL.is_file():
        raise ClipdexError(f"the sample model is missing: {config.SAMPLE_MODEL}")
    _fresh_folder(folder)
    encoder = load_encoder(SAMPLE_ALIAS, None, device)
    library = Library(folder)
    report = index_folders(library, [config.SAMPLE_DATA_DIR / "images"], encoder, progress=progress)
    pairs = read_pairs(config.SAMPLE_CAPTIONS)
    add_captions(library, encoder, [p.caption for p in pairs])
    engine = QueryEngine(library, device)
    searches = [
        {"query": q, "results": [h.as_json() for h in engine.search_text(q, 3)]} for q in DEMO_QUERIES
    ]
    image = config.SAMPLE_DATA_DIR / DEMO_CAPTION_IMAGE
    truth = next(p.caption for p in pairs if p.image == image.resolve())
    described = {"image": str(image), "true_caption": truth, "results": [h.as_json() for h in engine.captions(image, 3)]}
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
