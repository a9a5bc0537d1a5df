"""The FAISS indexes of a library as a cache of its store: loaded, topped up and checked by anyone, saved only by
writers.

Each kind (images, captions) has one state file, `{kind}s.faiss.json`, naming the index file it describes and the
store generation, model and item count that file reflects, and the id of the database it was built from. A
writer saves the index under a fresh, unique file name and then replaces the state file in one atomic rename, so
the pair is always consistent: a reader sees either the old index with its old state or the new one with its new
state. Readers bring what they loaded up to the store's current generation in memory and never write, and any
doubt (a missing or unreadable file, another model, a count that disagrees with the store, another database's id
or a database with none) means a rebuild from the store. The database's id matters: a database moved aside and
indexed again counts generations and ids from 1 again, so without it an old cache can match the new database by
coincidence and answer with another photo's vector.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.storage.store import Store
from clipdex.retrieval.storage.vector_index import FLAT, IVFPQ, VectorIndex, index_type_for


@dataclass
class IndexState:
    """What a saved index reflects; written beside it and checked before it is trusted."""

    generation: int
    fingerprint: str
    dim: int
    count: int = -1
    file: str = ""
    ids_check: str = ""  # of the ids in `file`: a state paired with another index file is noticed on load
    type: str = ""  # flat, ivf or ivfpq ("" in states written before it was recorded)
    rerank: int = 0  # IVF-PQ's tuned shortlist length
    database: str = ""  # the id of the database it was built from ("": states written before it was recorded)


def _made_by(state: IndexState, identity: ModelIdentity) -> bool:
    """Whether a saved or loaded index holds vectors of `identity`'s model (the one same-model test)."""
    return identity.same_model(ModelIdentity(identity.name, identity.pretrained, state.fingerprint, state.dim))


def _of_database(state: IndexState, store: Store) -> bool:
    """Whether a saved index was built from this very database (one with no id yet trusts no saved index)."""
    found = store.database_id()
    return found is not None and state.database == found


def ids_check(index: VectorIndex) -> str:
    """An order-free summary of the ids an index holds (count, sum, xor): O(n) and cheap even at 10M."""
    ids = index.ids()
    return f"{len(ids)}:{int(ids.sum(dtype=np.uint64))}:{int(np.bitwise_xor.reduce(ids)) if len(ids) else 0}"


class IndexCache:
    def __init__(self, root: Path, store: Store) -> None:
        self.root, self.store = root, store
        self._loaded: dict[str, tuple[VectorIndex, IndexState]] = {}
        self.use_gpu = False  # set when the model runs on CUDA: FAISS then searches there too, if it can

    def state_path(self, kind: str) -> Path:
        return self.root / f"{kind}s.faiss.json"

    def clear(self) -> None:
        self._loaded.clear()

    def current(self, kind: str, identity: ModelIdentity, preference: str = "auto") -> VectorIndex:
        """The index of `kind`, brought up to the store's current generation in memory (nothing is written), and
        rebuilt when it disagrees with the store or the library's size calls for another type of index."""
        generation = self.store.generation()
        cached = self._loaded.get(kind)
        if cached is not None and cached[1].generation == generation and _made_by(cached[1], identity) and (
            cached[1].type == index_type_for(cached[1].count, preference)
        ):
            return cached[0]  # every change of rows bumps the generation: nothing to check (a count costs ms)
        if cached is None or not _made_by(cached[1], identity) or (
            cached[0].mapped and cached[1].generation != generation
        ):
            cached = self._load(kind, identity, generation)
        index, state = cached
        if state.generation != generation:
            index.remove(self.store.deleted_since(kind, state.generation))
            for ids, vectors in self.store.vectors(kind, identity.dim, since=state.generation):
                index.add(ids, vectors)
        count = self.store.count(kind)
        wanted = index_type_for(count, preference)
        if index.count != count or index.type != wanted:
            index = self._build(kind, identity.dim, wanted, count)
        state = IndexState(generation, identity.fingerprint, identity.dim, index.count, type=index.type,
                           rerank=index.rerank)
        index.exact = self.store.vectors_of  # IVF-PQ re-ranks its shortlists with the stored vectors
        if self.use_gpu:
            index.to_gpu()
        self._loaded[kind] = (index, state)
        return index

    def _saved_is_current(self, kind: str, identity: ModelIdentity, preference: str) -> bool:
        """Whether the saved index reflects the store as it is now, told from its state file alone."""
        saved = self._read_state(self.state_path(kind))
        if saved is None or not _made_by(saved, identity) or not _of_database(saved, self.store) or not (
            self.root / saved.file
        ).is_file():
            return False
        count = self.store.count(kind)
        return (saved.generation, saved.count, saved.type) == (
            self.store.generation(), count, index_type_for(count, preference)
        )

    def save(self, kind: str, identity: ModelIdentity, preference: str = "auto") -> None:
        """Bring the index up to date and write it with its state (writers only, under the library's writer
        lock). A read-only library folder just keeps answering from memory."""
        database = self.store.ensure_database_id()  # (a database from before ids were given gets one now)
        if database is None:
            return  # a database that cannot be written to cannot be given its id: no cache can be bound to it
        if kind not in self._loaded and self._saved_is_current(kind, identity, preference):
            return  # nothing changed since it was saved: not even loaded (an unchanged `index` stays fast)
        index = self.current(kind, identity, preference)
        state = self._loaded[kind][1]
        path = self.state_path(kind)
        saved = self._read_state(path)
        if saved is not None and (saved.generation, saved.fingerprint, saved.count, saved.database) == (
            state.generation, state.fingerprint, state.count, database
        ) and (self.root / saved.file).is_file():
            return
        name = f"{kind}s-{state.generation}-{uuid.uuid4().hex[:12]}.faiss"
        tmp_state = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            index.save(self.root / name)
            os.chmod(self.root / name, 0o600)  # like every file in the library: for its owner only
            text = json.dumps({**state.__dict__, "file": name, "ids_check": ids_check(index), "database": database})
            with open(os.open(tmp_state, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(text)
            os.replace(tmp_state, path)
        except OSError:
            tmp_state.unlink(missing_ok=True)
            (self.root / name).unlink(missing_ok=True)
            return
        for old in self.root.glob(f"{kind}s-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)

    @staticmethod
    def _read_state(path: Path) -> IndexState | None:
        try:
            state = IndexState(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return state if state.file and "/" not in state.file and state.file.endswith(".faiss") else None

    def _load(self, kind: str, identity: ModelIdentity, generation: int) -> tuple[VectorIndex, IndexState]:
        """The saved index when it was built from this database, by this model, at an earlier or equal store
        state, else an empty one.

        An index that is already current is memory-mapped (a one-off query reads only what it touches); one
        that needs a top-up is read into memory, where it can change."""
        state = self._read_state(self.state_path(kind))
        if state is not None and _made_by(state, identity) and _of_database(state, self.store) and (
            state.generation <= generation
        ):
            index = VectorIndex.load(self.root / state.file, state.dim, mapped=state.generation == generation)
            if index is not None and index.count == state.count and ids_check(index) == state.ids_check:
                index.rerank = state.rerank or index.rerank
                return index, state
        return VectorIndex(identity.dim), IndexState(0, identity.fingerprint, identity.dim, 0)

    def _build(self, kind: str, dim: int, wanted: str, count: int) -> VectorIndex:
        """A new index of the wanted type over everything the store holds."""
        if wanted != FLAT:
            exact = self.store.vectors_of if wanted == IVFPQ else None
            return VectorIndex.build_ivf(dim, count, lambda: self.store.vectors(kind, dim), exact)
        index = VectorIndex(dim)
        for ids, vectors in self.store.vectors(kind, dim):
            index.add(ids, vectors, replace=False)
        return index
