"""The store's staging area for a re-embed (mixed into `Store`): vectors from the new model wait here, each with
the content it was computed from, until every item has one and they are swapped in at once."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Sequence

import numpy as np

from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.identity import ModelIdentity

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class StagingStore:
    """Writes through SQLAlchemy (imported by the first of them), like every write of the store."""

    db: Engine

    def stage(self, fingerprint: str, rows: Sequence[tuple[int, str, np.ndarray]]) -> None:
        """Keep re-embedded vectors aside, each with the content it was computed from (item id, source, vector);
        the library keeps answering with its current model meanwhile."""
        from clipdex.retrieval.storage.schema import staged_table, to_blob

        with self.db.begin() as conn:
            conn.execute(
                staged_table.insert(),
                [{"id": int(i), "fingerprint": fingerprint, "source": src, "vector": to_blob(v)} for i, src, v in rows],
            )

    def _current_staged(self, fingerprint: str):
        """Staged rows still valid: for `fingerprint`, of an item that exists with the content they were made from."""
        from clipdex.retrieval.storage.schema import items_table, staged_table
        from sqlalchemy import func, select

        c, s = items_table.c, staged_table.c
        return (
            select(s.id, s.vector)
            .join(items_table, c.id == s.id)
            .where(s.fingerprint == fingerprint, s.source == func.coalesce(c.sha256, ""))
        )

    def staged_ids(self, fingerprint: str) -> set[int]:
        """Ids already re-embedded for `fingerprint` from their current content (an interrupted re-embed
        resumes); vectors of another model, or of content that changed since, are dropped and made again."""
        from clipdex.retrieval.storage.schema import staged_table
        from sqlalchemy import delete

        s = staged_table.c
        valid = self._current_staged(fingerprint).with_only_columns(s.id)
        with self.db.begin() as conn:
            conn.execute(delete(staged_table).where(s.id.not_in(valid.scalar_subquery())))
            return set(conn.execute(valid).scalars())

    def swap_in_staged(self, identity: ModelIdentity) -> None:
        """In one transaction: staged vectors replace the current ones and the library is bound to the new
        model. Refused, with nothing changed, unless every item has a valid staged vector: a library never
        mixes two models' vectors, and nothing is deleted to make it fit."""
        from clipdex.retrieval.storage.schema import items_table, staged_table
        from sqlalchemy import delete, func, select, update

        c = items_table.c
        with self.db.begin() as conn:
            generation = self._next_generation(conn)
            staged = conn.execute(self._current_staged(identity.fingerprint)).all()
            missing = (conn.execute(select(func.count()).select_from(items_table)).scalar() or 0) - len(staged)
            if missing:
                raise ClipdexError(
                    f"{missing} image(s) changed on disk since they were indexed: run `clipdex index` on their "
                    f"folders, then the re-embed again (the vectors already made are kept)"
                )
            for item_id, vector in staged:
                conn.execute(update(items_table).where(c.id == item_id).values(vector=vector, generation=generation))
            conn.execute(delete(staged_table))
            self._set_meta(conn, "model", json.dumps(identity.__dict__))
