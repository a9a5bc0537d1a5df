"""The library database's schema: every table and column, and the version a database records.

Rows hold everything the library knows; the FAISS files and full-text indexes are derived from them. The store
(store.py) is the only module that reads or writes these tables.
"""

from __future__ import annotations

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

SCHEMA_VERSION = 3  # 2: staged vectors record the content they were computed from; 3: OCR text, full-text index
IMAGE, CAPTION = "image", "caption"  # the kinds of item

metadata = MetaData()
meta_table = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
items_table = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("key", Text, nullable=False),  # what identifies the item within its kind: image path, caption text
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
    UniqueConstraint("kind", "key"),
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
failures_table = Table(
    "failures",
    metadata,
    Column("path", Text, primary_key=True),
    Column("error", Text, nullable=False),
    Column("seen_at", Float, nullable=False),
)
