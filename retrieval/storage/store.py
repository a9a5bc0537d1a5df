"""The metadata store: the one place that knows the schema, and the library's source of truth.

Every item's vector lives in its row, written in the same transaction as its metadata. Each write transaction
bumps a generation counter and stamps the rows it touches (and the ids it deletes) with it, so a FAISS file
that records the generation it reflects can be topped up with exactly what changed since.

Reads are plain SQL run by `reading.Reader` (on SQLite without SQLAlchemy: a query in a new process must not pay
for importing it); writes, the schema and migrations use SQLAlchemy, imported by the first write.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from clipdex.retrieval.config import CAPTION, IMAGE
from clipdex.retrieval.errors import ClipdexError, Refused, first_line
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.pause import pause_point
from clipdex.retrieval.storage import fulltext
from clipdex.retrieval.storage.database_id import DATABASE_ID, DatabaseIdStore, new_database_id
from clipdex.retrieval.storage.database_url import without_password
from clipdex.retrieval.storage.reading import SCHEMA_VERSION, Reader
from clipdex.retrieval.storage.facts import FactsStore
from clipdex.retrieval.storage.selection import SelectionStore
from clipdex.retrieval.storage.staging import StagingStore
from clipdex.retrieval.storage.tagging import TagStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["CAPTION", "IMAGE", "NewItem", "Store", "StoredImage"]

_ADVISORY_KEY = 0x636C6970646578  # "clipdex": the PostgreSQL advisory lock writers take


def _sqlalchemy_errors(name: str) -> tuple[type[Exception], ...]:
    """SQLAlchemy's exception class `name`, if this process imported SQLAlchemy (else nothing raised it)."""
    module = sys.modules.get("sqlalchemy.exc")
    return (getattr(module, name),) if module is not None else ()


@dataclass(frozen=True)
class StoredImage:
    id: int
    path: str
    sha256: str
    size: int
    mtime: float
    real: str | None  # the path with every link resolved when it was scanned (None: rows from before schema 4)


@dataclass
class NewItem:
    kind: str
    key: str
    vector: np.ndarray
    sha256: str | None = None
    size: int | None = None
    mtime: float | None = None
    width: int | None = None
    height: int | None = None
    taken_at: float | None = None
    ocr_text: str | None = None  # new content: not read yet
    tags_key: str | None = None  # … nor tagged
    ocr_words: str | None = None
    frame: int = 0  # a video's frames share its key: 0, 1, … with their moment in seconds
    frame_time: float | None = None
    real_path: str | None = None  # an image file's path with every link resolved


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint, never corrupt
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Store(fulltext.TextStore, StagingStore, TagStore, SelectionStore, FactsStore, DatabaseIdStore):
    """Items (images and captions) with their vectors, the model binding and the write generation."""

    def __init__(self, url: str) -> None:
        import sqlite3

        self.url = url
        self.reads = Reader(url, lambda: self.db)
        try:
            self._check_schema()
        except (sqlite3.OperationalError, ModuleNotFoundError) + _sqlalchemy_errors("OperationalError") as exc:
            shown = without_password(url)
            raise ClipdexError(f"cannot open the library database {shown}: {first_line(exc)}") from None
        except (sqlite3.DatabaseError,) + _sqlalchemy_errors("DatabaseError") as exc:  # a damaged or foreign file
            raise ClipdexError(
                f"{without_password(url)} is not a readable clipdex database ({first_line(exc)}); restore it from a backup, "
                f"or move it aside and index again"
            ) from None

    @functools.cached_property
    def db(self) -> Engine:
        """SQLAlchemy's engine (the connection pool), made when first needed: by a write, or any read of a
        database other than a plain SQLite file."""
        from sqlalchemy import create_engine, event

        engine = create_engine(self.url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    @property
    def is_sqlite(self) -> bool:
        return self.reads.dialect == "sqlite"

    def close(self) -> None:
        """Let go of the database (this thread's reading connection and the engine's pool)."""
        self.reads.close()
        if "db" in self.__dict__:
            self.db.dispose()

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Held for as long as a writer runs. SQLite: nothing to add (the library's file lock covers the one
        machine that can open the file). PostgreSQL: a session advisory lock, so writers on different machines
        sharing one database take turns too."""
        if self.is_sqlite:
            yield
            return
        from sqlalchemy import func, select

        with self.db.connect() as conn:
            locked = conn.execute(select(func.pg_try_advisory_lock(_ADVISORY_KEY))).scalar()
            conn.commit()
            if not locked:
                raise ClipdexError(
                    f"the library database {without_password(self.url)} is being written by another clipdex "
                    f"process (maybe on another machine); wait for it to finish"
                )
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(_ADVISORY_KEY)))
                conn.commit()

    def _check_schema(self) -> None:
        """Tables made for a new database, an older one migrated (both through SQLAlchemy), a current one only
        read (without it)."""
        if not self.reads.exists():
            from clipdex.retrieval.storage.schema import meta_table, metadata

            with self.db.begin() as conn:
                metadata.create_all(conn)
                fulltext.create(conn)
                conn.execute(meta_table.insert(), [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "generation", "value": "0"},
                    {"key": DATABASE_ID, "value": new_database_id()},  # (database_id.py)
                ])
            return
        found = self.get_meta("schema_version")
        if found in ("1", "2", "3", "4", "5"):
            from clipdex.retrieval.storage.migrations import migrate

            with self.db.begin() as conn:
                migrate(conn, found)
                self._set_meta(conn, "schema_version", str(SCHEMA_VERSION))
                self._give_id(conn)
            return
        if found != str(SCHEMA_VERSION):
            raise ClipdexError(
                f"library database has schema version {found}, this clipdex reads version {SCHEMA_VERSION}; "
                f"use a matching clipdex or index into a new library"
            )

    # ------------------------------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        return self.reads.value("SELECT value FROM meta WHERE key = :key", {"key": key})

    def set_meta(self, key: str, value: str) -> None:
        with self.db.begin() as conn:
            self._set_meta(conn, key, value)

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        from clipdex.retrieval.storage.schema import meta_table
        from sqlalchemy import update

        if conn.execute(update(meta_table).where(meta_table.c.key == key).values(value=value)).rowcount == 0:
            conn.execute(meta_table.insert().values(key=key, value=value))

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def _next_generation(self, conn: Connection) -> int:
        """The row lock makes concurrent writers (PostgreSQL) take turns; SQLite's writer lock already does."""
        from clipdex.retrieval.storage.schema import meta_table
        from sqlalchemy import select

        query = select(meta_table.c.value).where(meta_table.c.key == "generation").with_for_update()
        generation = int(conn.execute(query).scalar() or 0) + 1
        self._set_meta(conn, "generation", str(generation))
        self._give_id(conn)  # a database from before ids were given gets its own with its first write
        return generation

    def model_identity(self) -> ModelIdentity | None:
        raw = self.get_meta("model")
        return ModelIdentity(**json.loads(raw)) if raw else None

    def bind_model(self, identity: ModelIdentity) -> None:
        """Record which model the library's vectors come from; every later query and index run is checked
        against it."""
        self.set_meta("model", json.dumps(identity.__dict__))

    # ------------------------------------------------------------------------------------------ writes

    def write(
        self,
        inserts: Sequence[NewItem] = (),
        updates: Sequence[tuple[int, NewItem]] = (),
        moves: Sequence[tuple[int, str, str, int, float]] = (),
        deletes: Sequence[int] = (),
        relinks: Sequence[tuple[str, str]] = (),
    ) -> int:
        """Apply one batch of changes in one transaction; returns the generation it wrote. Deletes, moves
        (id, path, real path, size, mtime) name a file by the id of its first row and apply to all of its rows;
        relinks (path, real path) record that an image file's path now leads elsewhere (a re-pointed link, a disk
        mounted in another place). A vector that is not finite is never stored: it would match nothing, for good."""
        from clipdex.retrieval.storage.schema import check_storable, items_table, tags_table, tombstones_table
        from sqlalchemy import bindparam, delete, select, update

        bound = self.model_identity()
        check_storable([item.vector for item in [*inserts, *(item for _, item in updates)]], bound.dim if bound else 0)
        from sqlalchemy.exc import SQLAlchemyError

        c = items_table.c
        try:
            with self.db.begin() as conn:
                generation = self._next_generation(conn)
                if deletes:  # a file's rows: a photo's one, or every frame of a video
                    found = select(c.id, c.kind).where(c.id.in_(self._rows_of_files(deletes)))
                    kinds = dict(conn.execute(found).all())
                    conn.execute(delete(tombstones_table).where(tombstones_table.c.id.in_(list(kinds))))
                    conn.execute(delete(items_table).where(c.id.in_(list(kinds))))
                    conn.execute(delete(tags_table).where(tags_table.c.item_id.in_(list(kinds))))
                    if kinds:
                        conn.execute(
                            tombstones_table.insert(),
                            [{"id": i, "kind": k, "generation": generation} for i, k in kinds.items()],
                        )
                for item_id, path, real, size, mtime in moves:
                    conn.execute(
                        update(items_table)
                        .where(c.id.in_(self._rows_of_files([item_id])))
                        .values(key=path, real_path=real, size=size, mtime=mtime, generation=generation)
                    )
                if relinks:  # what the server opens; no vector changes, so the generation stays
                    conn.execute(
                        update(items_table).where(c.kind == IMAGE, c.key == bindparam("path"))
                        .values(real_path=bindparam("real")),
                        [{"path": path, "real": real} for path, real in relinks],
                    )
                if updates:  # new content: its tags described the old one
                    conn.execute(delete(tags_table).where(tags_table.c.item_id.in_([i for i, _ in updates])))
                for item_id, item in updates:
                    conn.execute(
                        update(items_table).where(items_table.c.id == item_id).values(**self._row(item, generation))
                    )
                if inserts:
                    conn.execute(items_table.insert(), [self._row(item, generation) for item in inserts])
                pause_point("store-write")  # written, not committed: a kill here must leave no trace
                return generation
        except SQLAlchemyError as exc:  # a full disk, say: the database's own words, never the SQL or its URL
            raise ClipdexError(f"could not write to the library database: {first_line(exc)}; nothing of this batch "
                               f"was written") from None

    @staticmethod
    def _rows_of_files(ids: Sequence[int]):
        """The ids of every row sharing a kind and key with one of `ids` (a video's frames)."""
        from clipdex.retrieval.storage.schema import items_table
        from sqlalchemy import select

        c = items_table.c
        first = items_table.alias("first")
        return (
            select(c.id)
            .join(first, (first.c.kind == c.kind) & (first.c.key == c.key))
            .where(first.c.id.in_([int(i) for i in ids]))
            .scalar_subquery()
        )

    @staticmethod
    def _row(item: NewItem, generation: int) -> dict:
        from clipdex.retrieval.storage.schema import to_blob

        row = {k: v for k, v in item.__dict__.items() if k != "vector"}
        return {**row, "vector": to_blob(item.vector), "generation": generation}

    def touch(self, stats: Iterable[tuple[int, int, float]]) -> None:
        """Record a new size/mtime for files whose bytes did not change; vectors and generation stay."""
        from clipdex.retrieval.storage.schema import items_table
        from sqlalchemy import update

        with self.db.begin() as conn:
            for item_id, size, mtime in stats:
                rows = items_table.c.id.in_(self._rows_of_files([item_id]))
                conn.execute(update(items_table).where(rows).values(size=size, mtime=mtime))

    def record_failures(self, failures: Sequence[tuple[str, str]]) -> None:
        if not failures:
            return
        from clipdex.retrieval.storage.schema import failures_table
        from sqlalchemy import delete

        with self.db.begin() as conn:
            paths = [p for p, _ in failures]
            conn.execute(delete(failures_table).where(failures_table.c.path.in_(paths)))
            conn.execute(
                failures_table.insert(), [{"path": p, "error": e, "seen_at": time.time()} for p, e in failures]
            )

    def clear_failures(self, paths: Sequence[str]) -> None:
        if paths:
            from clipdex.retrieval.storage.schema import failures_table
            from sqlalchemy import delete

            with self.db.begin() as conn:
                conn.execute(delete(failures_table).where(failures_table.c.path.in_(list(paths))))

    # ------------------------------------------------------------------------------------------ reads

    def captions(self) -> list[tuple[int, str]]:
        return self.reads.rows("SELECT id, key FROM items WHERE kind = :kind", {"kind": CAPTION})

    def images(self) -> list[StoredImage]:
        rows = self.reads.rows("SELECT id, key, sha256, size, mtime, real_path FROM items "
                               "WHERE kind = :kind AND frame = 0", {"kind": IMAGE})
        return [StoredImage(*row) for row in rows]

    def caption_ids(self, captions: Sequence[str] | None = None) -> list[int]:
        """Ids of these captions (of every caption with None)."""
        sql = "SELECT id FROM items WHERE kind = :kind"
        if captions is None:
            rows = self.reads.rows(sql, {"kind": CAPTION})
        else:
            rows = self.reads.rows_in(sql + " AND key IN ({values})", list(captions), {"kind": CAPTION})
        return [i for (i,) in rows]

    def caption_keys(self) -> set[str]:
        return {key for (key,) in self.reads.rows("SELECT key FROM items WHERE kind = :kind", {"kind": CAPTION})}

    def vectors(self, kind: str, dim: int, since: int = 0, chunk: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of items of `kind` written after generation `since`, in chunks."""
        sql = "SELECT id, vector FROM items WHERE kind = :kind AND generation > :since ORDER BY id"
        for part in self.reads.chunks(sql, {"kind": kind, "since": since}, chunk):
            ids = np.fromiter((row[0] for row in part), dtype=np.int64, count=len(part))
            matrix = np.frombuffer(b"".join(row[1] for row in part), dtype=np.float32).reshape(len(part), dim)
            yield ids, matrix

    def deleted_since(self, kind: str, since: int) -> np.ndarray:
        rows = self.reads.rows("SELECT id FROM tombstones WHERE kind = :kind AND generation > :since",
                               {"kind": kind, "since": since})
        return np.asarray([i for (i,) in rows], dtype=np.int64)

    def vector(self, item_id: int) -> tuple[str, np.ndarray] | None:
        """(kind, vector) of one item, or None when there is no such item."""
        rows = self.reads.rows("SELECT kind, vector FROM items WHERE id = :id", {"id": int(item_id)})
        return (rows[0][0], np.frombuffer(rows[0][1], dtype=np.float32)) if rows else None

    def frame_files(self) -> dict[int, str]:
        """Video frame rows: id → the video's path."""
        return dict(self.reads.rows("SELECT id, key FROM items WHERE frame_time IS NOT NULL"))

    def vectors_of(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        rows = self.reads.rows_in("SELECT id, vector FROM items WHERE id IN ({values})", [int(i) for i in ids])
        return {int(i): np.frombuffer(v, dtype=np.float32) for i, v in rows}

    def items(self, ids: Sequence[int]) -> dict[int, dict]:
        columns = ("id", "kind", "key", "sha256", "size", "mtime", "width", "height", "taken_at", "ocr_text", "frame",
                   "frame_time", "real_path")
        rows = self.reads.rows_in(f"SELECT {', '.join(columns)} FROM items WHERE id IN ({{values}})",
                                  [int(i) for i in ids])
        return {row[0]: dict(zip(columns, row)) for row in rows}

    def count(self, kind: str) -> int:
        return self.reads.value("SELECT count(*) FROM items WHERE kind = :kind", {"kind": kind}) or 0
