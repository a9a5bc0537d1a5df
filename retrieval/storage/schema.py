"""The library database's schema: every table and column, and the version a database records.

Rows hold everything the library knows; the FAISS files and full-text indexes are derived from them. The store
(store.py) is the only module that reads or writes these tables.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from clipdex.retrieval.config import CAPTION, IMAGE  # noqa: F401 (the kinds of item, named with the tables)
from clipdex.retrieval.storage.reading import SCHEMA_VERSION  # noqa: F401 (the version these tables are)

metadata = MetaData()
meta_table = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
items_table = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("key", Text, nullable=False),  # what identifies the item within its kind: image path, caption text
    # An image file's path with every link resolved, taken when it was scanned: what the server opens (the key is
    # the path as the user reached it, kept for display and filters). NULL (rows from before version 4, until the
    # next index run): the key itself, reached through no link.
    Column("real_path", Text),
    Column("frame", Integer, nullable=False, server_default="0"),  # a video's frames: 0, 1, …; photos: 0
    Column("frame_time", Float),  # a video frame's moment, in seconds from the start; photos: NULL
    Column("sha256", String(64), index=True),
    Column("size", BigInteger),
    Column("mtime", Float),
    Column("width", Integer),
    Column("height", Integer),
    Column("taken_at", Float),
    Column("ocr_text", Text),  # text read in the image: NULL until OCR ran on this content, "" when it found none
    Column("ocr_words", Text),  # what the full-text index reads of it (fulltext.searchable_words)
    Column("vector", LargeBinary, nullable=False),
    Column("generation", BigInteger, nullable=False, index=True),
    Column("tags_key", String(64)),  # the vocabulary (in the model's space) its tags came from; NULL: not tagged
    # What the file says of where and with what it was taken (media/facts.py), and the place its position is in
    # (places/); read from the content `facts_key` (its sha256) names: NULL, or another content, means unread.
    Column("latitude", Float),
    Column("longitude", Float),
    Column("camera", Text),
    Column("lens", Text),
    Column("exposure", Text),
    Column("city", Text),
    Column("region", Text),
    Column("country", Text),
    Column("facts_key", String(64)),
    UniqueConstraint("kind", "key", "frame"),
    sqlite_autoincrement=True,  # a deleted item's id is never given to another (bookmarked /api/items/N links)
)
tombstones_table = Table(
    "tombstones",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("generation", BigInteger, nullable=False, index=True),
)
staged_table = Table(  # vectors from a model the library is being re-embedded with, until they are swapped in
    "staged_vectors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("fingerprint", String(128), nullable=False),
    Column("source", String(64), nullable=False),  # sha256 of the image bytes embedded ("" for captions)
    Column("vector", LargeBinary, nullable=False),
)
tags_table = Table(  # index --tags: an image's (a video frame's) likeliest concepts of the library's vocabulary
    "tags",
    metadata,
    Column("item_id", Integer, primary_key=True, autoincrement=False),
    Column("tag", Text, primary_key=True, index=True),
    Column("score", Float, nullable=False),  # its probability under CLIP's softmax over the vocabulary
)
failures_table = Table(
    "failures",
    metadata,
    Column("path", Text, primary_key=True),
    Column("error", Text, nullable=False),
    Column("seen_at", Float, nullable=False),
)


def to_blob(vector: np.ndarray) -> bytes:
    """How a vector is stored: float32 bytes in the row."""
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def check_storable(vectors: list[np.ndarray], dim: int) -> None:
    """What may be stored: finite unit vectors of the library's length (`dim`; 0: the first one's). NaN matches
    nothing, for good; a wrong length or norm would make every later query, index and status fail, or score past
    1. Refused before anything of the batch is written."""
    from clipdex.retrieval.errors import Refused

    if not vectors:
        return
    if not all(np.isfinite(v).all() for v in vectors):
        raise Refused("refusing to store vectors with non-finite numbers (NaN or infinity): the model's "
                      "files are damaged; prepare or download the model again")
    dim = dim or vectors[0].size
    if any(v.ndim != 1 or v.size != dim for v in vectors):
        raise Refused(f"refusing to store vectors that are not {dim} numbers long (the library's length): the "
                      f"model disagrees with its own config; nothing was written")
    if np.abs(np.linalg.norm(np.stack(vectors).astype(np.float64), axis=1) - 1).max() > 1e-3:
        raise Refused("refusing to store vectors whose length is not 1 (they would score past 1): the model "
                      "gives unnormalised embeddings; nothing was written")
