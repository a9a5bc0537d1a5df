"""clipdex: search your photos by sentence.

The names below are the library API (see `clipdex.api`); they are imported on first use, so `import clipdex`
stays instant and pulls in neither torch nor FAISS until a function needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "open_library", "load_model", "index", "search", "nearest", "captions", "tags", "export_xmp", "add_captions",
    "remove_captions", "duplicates", "finetune", "evaluate", "status", "export_text_tower", "export_model",
    "Library", "Filters", "Hit", "Hits", "FinetuneOptions", "IndexOptions", "ClipdexError",
]

_HOMES = {
    "Library": "clipdex.retrieval.library",
    "Filters": "clipdex.retrieval.search.hits",
    "Hit": "clipdex.retrieval.search.hits",
    "FinetuneOptions": "clipdex.retrieval.training.options",
    "IndexOptions": "clipdex.indexer.options",
    "ClipdexError": "clipdex.retrieval.errors",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'clipdex' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES.get(name, "clipdex.api")), name)


def __dir__() -> list[str]:
    return sorted(__all__)
