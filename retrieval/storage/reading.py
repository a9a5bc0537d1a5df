"""Reading the library database in plain SQL, so that a query never imports SQLAlchemy.

Importing SQLAlchemy costs 0.15 s, a third of what a whole cold `clipdex search` may take, to read a few rows.
The store's reads are therefore written in SQL that both databases read (`:name` parameters) and run here: a
SQLite library through the standard `sqlite3` module, PostgreSQL through the store's SQLAlchemy engine. Writes,
the schema and migrations stay with SQLAlchemy (store.py), imported when a process first writes.

SQLite connections are one per thread and per process (a forked worker opens its own), in autocommit mode, so
that each statement reads the latest commit and a long-running server never holds an old snapshot, and with
`query_only` set: nothing read here can write.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import quote, unquote

# 2: staged vectors record their source; 3: OCR text, full-text index, video frames; 4: a file's real path, ids
# never reused (SQLite AUTOINCREMENT); 5: tags, words found inside recognised text (a trigram index)
SCHEMA_VERSION = 6  # the version of the schema (schema.py) this clipdex reads and writes

_SQLITE_PREFIX = "sqlite:///"
_IN_CHUNK = 500  # values one IN list binds: well below SQLite's and PostgreSQL's limits on parameters


def sqlite_file(url: str) -> str | None:
    """The database file of a plain SQLite URL, as SQLAlchemy reads it (percent-escapes decoded); None for any
    other URL (another database, options after `?`, an in-memory database): those are read through SQLAlchemy."""
    if not url.startswith(_SQLITE_PREFIX):
        return None
    path = url[len(_SQLITE_PREFIX):]
    if not path or "?" in path or path == ":memory:":
        return None
    return unquote(path)


def sqlite_url(path: str) -> str:
    """The SQLAlchemy URL of a SQLite file: the two characters SQLAlchemy reads a meaning into (`%` escapes, `?`
    options) escaped, so that a library folder named `a?b` keeps its database inside it."""
    return _SQLITE_PREFIX + path.replace("%", "%25").replace("?", "%3F")


def in_list(name: str, values: Sequence) -> tuple[str, dict[str, Any]]:
    """`:name0, :name1, …` for an IN list, with its parameters."""
    params = {f"{name}{n}": value for n, value in enumerate(values)}
    return ", ".join(f":{key}" for key in params), params


class Reader:
    """Rows for SQL, on whichever database the library uses."""

    def __init__(self, url: str, engine: Callable[[], Any]) -> None:
        self.file = sqlite_file(url)
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._engine = engine  # the store's SQLAlchemy engine, made on first use (PostgreSQL, unusual URLs)
        self._local = threading.local()

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        if self.file is None:
            from sqlalchemy import text

            with self._engine().connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql), dict(params or {}))]
        return self._connection().execute(sql, dict(params or {})).fetchall()

    def value(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def rows_in(self, sql: str, values: Sequence, params: Mapping[str, Any] | None = None) -> list[tuple]:
        """Rows of `sql` whose `{values}` is filled with an IN list of `values`, read a bounded list at a time."""
        found: list[tuple] = []
        for start in range(0, len(values), _IN_CHUNK):
            listed, bound = in_list("v", values[start:start + _IN_CHUNK])
            found += self.rows(sql.format(values=listed), {**(params or {}), **bound})
        return found

    def chunks(self, sql: str, params: Mapping[str, Any], size: int) -> Iterator[list[tuple]]:
        """The rows of `sql` `size` at a time, without holding them all."""
        if self.file is None:
            from sqlalchemy import text

            with self._engine().connect() as conn:
                result = conn.execution_options(yield_per=size).execute(text(sql), dict(params))
                for part in result.partitions(size):
                    yield [tuple(row) for row in part]
            return
        cursor = self._connection().execute(sql, dict(params))
        try:
            while part := cursor.fetchmany(size):
                yield part
        finally:
            cursor.close()

    def exists(self) -> bool:
        """Whether the database holds clipdex's tables (a SQLite file that is missing or empty holds none)."""
        if self.file is not None and not os.path.isfile(self.file):
            return False
        if self.dialect == "sqlite":
            return self.value("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'") == 1
        return self.value("SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' "
                          "AND table_schema = current_schema()") == 1

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        held = getattr(self._local, "connection", None)
        if held is not None:
            held[1].close()
            self._local.connection = None

    def _connection(self) -> sqlite3.Connection:
        held = getattr(self._local, "connection", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        connection = sqlite3.connect(f"file:{quote(self.file)}?mode=rw", uri=True, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute("PRAGMA query_only = ON")
        self._local.connection = (os.getpid(), connection)
        return connection
