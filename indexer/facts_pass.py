"""The facts pass of every `index` run: read each new or changed file's position, camera, lens and exposure,
and name the place its position is in.

Reading metadata opens a file's header, never its pixels, so it runs for every library without being asked,
and a library from before it gains its facts on its next `index` with nothing re-embedded. A batch per
transaction: a crash or Ctrl-C loses at most the batch in flight."""

from __future__ import annotations

from dataclasses import dataclass

from clipdex.retrieval import config
from clipdex.retrieval.library import Library
from clipdex.retrieval.media.facts import Facts, read_facts


@dataclass
class FactsReport:
    read: int = 0
    placed: int = 0
    interrupted: bool = False

    def summary(self) -> tuple[dict, bool]:
        """What an index run's report says of it, and whether it was interrupted."""
        return {"read": self.read, "placed": self.placed}, self.interrupted


def read_photo_facts(library: Library, progress=None, batch: int = config.FACTS_BATCH) -> FactsReport:
    """Read the facts of every file whose current content has none yet (holding the library's writer lock)."""
    from clipdex.retrieval.places.gazetteer import GAZETTEER

    report = FactsReport()
    with library.writer():
        store = library.store
        waiting = store.unread_facts_count()
        advance = progress("reading places and cameras", waiting) if progress and waiting else None
        done: set[str] = set()  # (a file its content changed under mid-pass is not read twice in one pass)
        try:
            while rows := [row for row in store.unread_facts(batch) if row[0] not in done]:
                done.update(row[0] for row in rows)
                found = []
                for path, opened, sha256 in rows:
                    try:
                        found.append((path, sha256, read_facts(opened)))
                    except Exception:  # gone, unreadable or damaged metadata: read, with nothing found
                        found.append((path, sha256, Facts()))
                placed = [facts for _, _, facts in found if facts.placed]
                places = iter(GAZETTEER.name([(f.latitude, f.longitude) for f in placed]) if placed else [])
                store.set_facts([(path, sha256, facts, next(places) if facts.placed else None)
                                 for path, sha256, facts in found])
                report.read += len(found)
                report.placed += len(placed)
                if advance:
                    advance(len(found))
        except KeyboardInterrupt:
            report.interrupted = True
    return report
