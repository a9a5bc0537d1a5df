"""The store's own id (mixed into `Store`): a random id each database is given when it is made, or, for one made
before ids were given, with its next write.

It is what binds the caches kept in the library folder (the FAISS files, the relevance floor) to this database and
no other: a database moved aside (or emptied, or deleted) and indexed again counts its generations and ids from 1
too, so generation, count and ids alone can match an old cache by coincidence. A database with no id yet trusts no
cache kept beside it."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

DATABASE_ID = "database_id"  # the meta key


def new_database_id() -> str:
    return uuid.uuid4().hex


class DatabaseIdStore:
    db: Engine  # writes

    get_meta: Callable[[str], str | None]
    _set_meta: Callable[["Connection", str, str], None]

    def database_id(self) -> str | None:
        """This database's id; None for a database made before ids were given, until its next write."""
        return self.get_meta(DATABASE_ID) or None

    def ensure_database_id(self) -> str | None:
        """The database's id, given to it now when it has none (writers only: under the library's writer lock);
        None when it has none and cannot be written to (a read-only library)."""
        found = self.database_id()
        if found is None:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                with self.db.begin() as conn:
                    found = self._give_id(conn)
            except SQLAlchemyError:
                return None
        return found

    def _give_id(self, conn: Connection) -> str:
        """The id of the database `conn` writes to, given in that transaction when it has none (every write
        transaction calls this: the first write of an older database gives it its id)."""
        from clipdex.retrieval.storage.schema import meta_table
        from sqlalchemy import select

        found = conn.execute(select(meta_table.c.value).where(meta_table.c.key == DATABASE_ID)).scalar()
        if not found:
            found = new_database_id()
            self._set_meta(conn, DATABASE_ID, found)
        return found
