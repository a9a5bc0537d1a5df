"""A library folder: the store (source of truth), the model it is bound to, and the FAISS caches per kind."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.factory import ModelIdentity
from clipdex.retrieval.store import Store
from clipdex.retrieval.vector_index import FLAT, IndexState, VectorIndex, kind_for


class Library:
    def __init__(self, root: Path, database_url: str | None = None, create: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        if not self.root.is_dir():
            if not create:
                raise ClipdexError(f"no library at {self.root}: run `clipdex index PATH` first")
            self.root.mkdir(parents=True, mode=0o700)
        url, remember = self._database_url(database_url)
        self.store = Store(url)
        if remember:  # only once the database has answered: a mistyped URL must not stick
            settings = self.root / config.LIBRARY_CONFIG_FILE
            settings.write_text(json.dumps({"database": remember}, indent=2))
        self._indexes: dict[str, tuple[VectorIndex, IndexState]] = {}
        self._encoder = None
        self._text_encoder = None
        self.gpu_search = False  # set when the model runs on CUDA: FAISS then searches there too, if it can

    def _database_url(self, given: str | None) -> tuple[str, str | None]:
        """(URL to open, URL to remember or None): the URL the library was created with, remembered in its
        config file; SQLite in the folder by default. The remembered URL carries no password: libpq reads
        PGPASSWORD or ~/.pgpass."""
        settings_path = self.root / config.LIBRARY_CONFIG_FILE
        remembered = json.loads(settings_path.read_text()).get("database") if settings_path.is_file() else None
        if given is None:
            return remembered or f"sqlite:///{self.root / config.DATABASE_FILE}", None
        from sqlalchemy.engine import make_url

        try:
            url = make_url(given)
        except Exception:
            raise ClipdexError(f"not a database URL: {given!r} (e.g. postgresql+psycopg://user@host/db)") from None
        safe = url._replace(password=None).render_as_string(hide_password=False)  # set() keeps it on None
        if remembered and remembered != safe:
            raise ClipdexError(f"the library at {self.root} uses {remembered}, not {safe}")
        return url.render_as_string(hide_password=False), None if remembered else safe

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Only one writer (index, add-captions, re-embed) per library at a time; readers never wait.

        An OS file lock, so a writer killed with -9 releases it with its process."""
        path = self.root / config.LOCK_FILE
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ClipdexError(
                    f"the library at {self.root} is being written by {holder}; wait for it to finish"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"clipdex (pid {os.getpid()})")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------------------ model

    @property
    def identity(self) -> ModelIdentity | None:
        return self.store.model_identity()

    def require_identity(self) -> ModelIdentity:
        identity = self.identity
        if identity is None:
            raise ClipdexError(f"the library at {self.root} is empty: run `clipdex index PATH` first")
        return identity

    def check_model(self, identity: ModelIdentity) -> None:
        """Refuse a model other than the one the library's vectors came from."""
        bound = self.identity
        if bound is not None and (bound.fingerprint, bound.dim) != (identity.fingerprint, identity.dim):
            raise ClipdexError(
                f"this library was built with {bound.describe()}, not {identity.describe()}; "
                f"use the library's model, or re-embed with `clipdex index PATH --model ... --reembed`"
            )

    def encoder(self, device: str = "auto", precision: str = "fp32"):
        """The library's own model, loaded once and checked against the binding."""
        if self._encoder is None:
            from clipdex.retrieval.factory import load_encoder

            bound = self.require_identity()
            encoder = load_encoder(bound.name, bound.pretrained, device)
            self.check_model(encoder.identity)
            self._encoder = encoder
            self.gpu_search = encoder.device == "cuda"
        self._encoder.set_precision(precision)
        return self._encoder

    def text_encoder(self, device: str = "auto", precision: str = "fp32"):
        """The encoder for text queries: the library model's ONNX text tower when it was exported and the query
        runs in fp32 off the GPU (no torch import: what makes a one-off query start fast), else the model."""
        if self._encoder is None and precision == "fp32" and device in ("auto", "cpu"):
            if self._text_encoder is None:
                from clipdex.retrieval.onnx_text import OnnxTextEncoder

                self._text_encoder = OnnxTextEncoder.for_model(self.require_identity())
            if self._text_encoder is not None:
                return self._text_encoder
        return self.encoder(device, precision)

    def use_encoder(self, encoder) -> None:
        """Use an already-loaded model (checked against the binding, which it sets on a new library)."""
        self.check_model(encoder.identity)
        if self.identity is None:
            self.store.bind_model(encoder.identity)
        self._encoder = encoder

    def forget_model(self) -> None:
        """Drop the loaded model and cached indexes after the binding changed underneath them."""
        self._encoder = self._text_encoder = None
        self._indexes.clear()

    # ------------------------------------------------------------------------------------------ index

    def index_path(self, kind: str) -> Path:
        return self.root / f"{kind}s.faiss"

    @property
    def index_preference(self) -> str:
        return self.store.get_meta("index_type") or "auto"

    def set_index_preference(self, preference: str) -> None:
        if preference not in config.INDEX_TYPES:
            raise ClipdexError(f"unknown index type {preference!r}: use one of {', '.join(config.INDEX_TYPES)}")
        self.store.set_meta("index_type", preference)

    def vector_index(self, kind: str) -> VectorIndex:
        """The FAISS index for `kind`, brought up to the store's current generation first, and rebuilt when
        the library's size (or the user's choice) calls for another kind of index."""
        identity = self.require_identity()
        generation = self.store.generation()
        cached = self._indexes.get(kind)
        if cached is None or (cached[0].mapped and cached[1].generation != generation):
            cached = self._load_index(kind, identity, generation)
        index, state = cached
        changed = state.generation != generation
        if changed:
            index.remove(self.store.deleted_since(kind, state.generation))
            for ids, vectors in self.store.vectors(kind, identity.dim, since=state.generation):
                index.add(ids, vectors)
        wanted = kind_for(index.count, self.index_preference)
        if index.kind != wanted:
            index, changed = self._build(kind, identity.dim, wanted), True
        if changed:
            state = IndexState(generation, identity.fingerprint, identity.dim)
            try:
                index.save(self.index_path(kind), state)
            except OSError:
                pass  # a read-only library still answers from the in-memory index
        if self.gpu_search:
            index.to_gpu()
        self._indexes[kind] = (index, state)
        return index

    def _build(self, kind: str, dim: int, wanted: str) -> VectorIndex:
        """A new index of the wanted kind over everything the store holds."""
        if wanted != FLAT:
            return VectorIndex.build_ivf(dim, self.store.counts()[kind], lambda: self.store.vectors(kind, dim))
        index = VectorIndex(dim)
        for ids, vectors in self.store.vectors(kind, dim):
            index.add(ids, vectors, replace=False)
        return index

    def _load_index(self, kind: str, identity: ModelIdentity, generation: int) -> tuple[VectorIndex, IndexState]:
        """The saved index when it belongs to this model and store state, else an empty one to fill.

        An index that is already current is memory-mapped (a one-off query reads only what it touches); one
        that needs a top-up is read into memory, where it can change."""
        path = self.index_path(kind)
        loaded = VectorIndex.load(path, mapped=True)
        if loaded is not None:
            state = loaded[1]
            if (state.fingerprint, state.dim) == (identity.fingerprint, identity.dim) and state.generation <= generation:
                return loaded if state.generation == generation else VectorIndex.load(path) or self._empty(identity)
        return self._empty(identity)

    @staticmethod
    def _empty(identity: ModelIdentity) -> tuple[VectorIndex, IndexState]:
        return VectorIndex(identity.dim), IndexState(0, identity.fingerprint, identity.dim)
