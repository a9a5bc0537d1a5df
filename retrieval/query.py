"""Queries: a sentence or an image in, ranked items of one kind out (text→image, image→image, image→text)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.errors import ClipdexError
from retrieval.images import open_image
from retrieval.library import Library
from retrieval.store import CAPTION, IMAGE


@dataclass
class Hit:
    id: int
    kind: str
    text: str  # the image's path or the caption
    score: float

    def as_json(self) -> dict:
        return {"id": self.id, "path" if self.kind == IMAGE else "caption": self.text, "score": round(self.score, 6)}


class QueryEngine:
    def __init__(self, library: Library, device: str = "auto") -> None:
        self.library = library
        self.device = device

    @property
    def encoder(self):
        return self.library.encoder(self.device)

    def text_vector(self, text: str) -> np.ndarray:
        if not text.strip():
            raise ClipdexError("the query text is empty")
        return self.encoder.encode_texts([text])[0]

    def image_vector(self, image: Image.Image | Path | str) -> np.ndarray:
        if not isinstance(image, Image.Image):
            path = Path(image)
            if not path.is_file():
                raise ClipdexError(f"query image not found: {path}")
            image = open_image(path, self.encoder.image_size)
        return self.encoder.encode_images([image])[0]

    def nearest(self, vector: np.ndarray, kind: str, k: int) -> list[Hit]:
        """The k items of `kind` whose vectors have the highest cosine with `vector`, best first."""
        if k < 1:
            raise ClipdexError("-k must be at least 1")
        index = self.library.vector_index(kind)
        if index.count == 0:
            return []
        scores, ids = index.search(vector[None, :], k)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        rows = self.library.store.items([i for i, _ in found])
        return [Hit(i, kind, rows[i]["key"], s) for i, s in found if i in rows]

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        return self.nearest(self.text_vector(text), IMAGE, k)

    def search_image(self, image: Image.Image | Path | str, k: int = 10) -> list[Hit]:
        return self.nearest(self.image_vector(image), IMAGE, k)

    def captions(self, image: Image.Image | Path | str, k: int = 10) -> list[Hit]:
        return self.nearest(self.image_vector(image), CAPTION, k)
