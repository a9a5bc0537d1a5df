"""A library folder: the store (source of truth), the model it is bound to, its writer lock and its index cache.

A `Library` is a handle, not a worker: indexing lives in `clipdex.indexer`, queries in `query.py`, the FAISS
cache's lifecycle in `index_cache.py`. What it owns is what every one of those needs to agree on.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from clipdex.retrieval import config
from clipdex.retrieval.storage.database_url import database_url_for
from clipdex.retrieval.errors import ClipdexError, NotFound, Refused
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.storage.index_cache import IndexCache
from clipdex.retrieval.storage.store import IMAGE, Store
from clipdex.retrieval.storage.vector_index import VectorIndex

if TYPE_CHECKING:  # (the interface imports PIL: not needed to open a library)
    from clipdex.retrieval.models.interface import ImageTextEncoder


def leaves_no_empty_library(function: Callable) -> Callable:
    """A first index that fails before a model is bound (a model that cannot run here, a bad path) takes back
    the library it would have created: a failed command writes nothing."""

    @functools.wraps(function)
    def run(library: "Library", *args, **kwargs):
        try:
            return function(library, *args, **kwargs)
        except ClipdexError:
            library.discard_if_unused()
            raise

    return run


class Library:
    def __init__(self, root: Path, database_url: str | None = None, create: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        if self.root.exists() and not self.root.is_dir():
            raise ClipdexError(f"the library path {self.root} is a file, not a folder")
        self.created = not self.root.is_dir()  # by this handle: discard_if_unused may take it back
        if self.created:
            if not create:
                raise NotFound(f"no library at {self.root}: run `clipdex index PATH` first")
            self.root.mkdir(parents=True, mode=0o700)
        settings_path = self.root / config.LIBRARY_CONFIG_FILE
        remembered = _read_settings(settings_path).get("database")
        if not (create or remembered or database_url or (self.root / config.DATABASE_FILE).exists()):
            # a folder that holds no library (`-L .` by mistake) is left as it is: nothing made private, no database
            raise NotFound(f"no library at {self.root}: run `clipdex index PATH` first")
        _make_private(self.root)
        url, remember = database_url_for(self.root, remembered, database_url)
        self.store = Store(url)
        if remember:  # only once the database has answered: a mistyped URL must not stick
            _write_private(settings_path, json.dumps({"database": remember}, indent=2))
        for path in self.root.iterdir():  # the database, FAISS files, their state, the lock, thumbnails
            if not path.is_symlink():
                _make_private(path)
        self.indexes = IndexCache(self.root, self.store)
        self._encoder = None
        self._encoder_settings: tuple[str, str] | None = None  # (device, precision) it was loaded for
        self._text_encoder = None
        self._vocabulary = None  # (encoder, concepts, Vocabulary): made again when either changes
        self._floor = None  # (encoder, what the floor was measured on, floor): measured again when either changes
        self._writing = 0

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Only one writer (index, add-captions, re-embed, a cache save) per library at a time; readers never
        wait. Re-entrant within this object, so a writer may call another.

        An OS file lock, so a writer killed with -9 releases it with its process; with PostgreSQL also an
        advisory lock in the database, which excludes writers on other machines sharing it."""
        if self._writing:
            self._writing += 1
            try:
                yield
            finally:
                self._writing -= 1
            return
        path = self.root / config.LOCK_FILE
        with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = handle.read().strip() or "another process"
                raise ClipdexError(
                    f"the library at {self.root} is being written by {holder}; wait for it to finish"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"clipdex (pid {os.getpid()})")
            handle.flush()
            try:
                with self.store.writer_lock():
                    self._writing = 1
                    yield
            finally:
                self._writing = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    def discard_if_unused(self) -> None:
        """Take back a library this handle created when nothing was put in it (the first index failed before
        binding a model, or before its first photo was stored: a model whose towers disagree with their folder):
        a failed command leaves no library behind."""
        if not (self.created and self.store.is_sqlite):
            return
        counts = self.store.counts() if self.identity is not None else {}
        if any(counts.get(kind) for kind in ("image", "video", "caption")):
            return
        self.store.close()
        for name in (config.DATABASE_FILE, config.DATABASE_FILE + "-wal", config.DATABASE_FILE + "-shm",
                     config.LOCK_FILE, config.LIBRARY_CONFIG_FILE):
            (self.root / name).unlink(missing_ok=True)
        try:
            self.root.rmdir()
        except OSError:  # something else was put there meanwhile: left alone
            pass

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
        if bound is None or bound.same_model(identity):
            return
        if bound.describe() == identity.describe():
            raise Refused(
                f"the weights of {bound.describe()} changed since this library was built with them (their "
                f"fingerprint differs): restore them, or re-embed with `clipdex index PATH --model ... --reembed`"
            )
        raise Refused(
                f"this library was built with {bound.describe()}, not {identity.describe()}; "
                f"use the library's model, or re-embed with `clipdex index PATH --model ... --reembed`"
            )

    def follow_binding(self) -> ModelIdentity:
        """The bound model, dropping loaded encoders first when another process re-embedded the library since
        they were loaded (a long-running server must never embed queries with the old model)."""
        bound = self.require_identity()
        for loaded in (self._encoder, self._text_encoder):
            if loaded is not None and not bound.same_model(loaded.identity):
                self.forget_model()
                break
        return bound

    def encoder(self, device: str = "auto", precision: str = "fp32", progress=None) -> ImageTextEncoder:
        """The library's own model, loaded once per setting and checked against the binding: prepared (no torch)
        where the settings allow, prepared now if it was not yet (`progress` shows that step)."""
        bound = self.follow_binding()
        if self._encoder is None or self._encoder_settings != (device, precision):
            from clipdex.retrieval.models.loading import load_model

            encoder = load_model(bound.name, bound.pretrained, device, precision, progress)
            self.check_model(encoder.identity)
            self._encoder, self._encoder_settings = encoder, (device, precision)
            self.indexes.use_gpu = encoder.device == "cuda"
        return self._encoder

    def text_encoder(self, device: str = "auto", precision: str = "fp32") -> ImageTextEncoder:
        """The encoder for text queries: the model's exported ONNX text tower whenever the query runs in fp32 (or
        int8, which changes only the image tower) off the GPU and an export exists (no torch import: what makes a
        one-off query start fast), else the model."""
        from clipdex.retrieval.models.prepared import runs_prepared

        if runs_prepared(device, precision):
            bound = self.follow_binding()
            if self._text_encoder is None:
                from clipdex.retrieval.models.loading import text_model

                self._text_encoder = text_model(bound, self._encoder)
            if self._text_encoder is not None:
                return self._text_encoder
        return self.encoder(device, precision)

    def vocabulary(self, device: str = "auto", precision: str = "fp32", progress=None):
        """The concepts this library describes and tags images with (its own list, given with `index --tags
        --vocabulary`, else the built-in one) in its model's space; needs only the text tower."""
        from clipdex.retrieval.describe.vocabulary import load_vocabulary

        concepts = self.store.tag_concepts()
        encoder = self.text_encoder(device, precision)
        held = self._vocabulary
        if held is None or held[0] is not encoder or held[1] != concepts:
            self._vocabulary = (encoder, concepts, load_vocabulary(encoder, concepts, progress))
        return self._vocabulary[2]

    def relevance_floor(self, device: str = "auto", precision: str = "fp32") -> float | None:
        """The cosine a text query's hit must reach to be a strong match in this library (relevance.py); None for
        an empty library. Measured again whenever the library changed."""
        from clipdex.retrieval.search.relevance import measure_floor, probe_vectors, remembered_floor

        encoder, index = self.text_encoder(device, precision), self.vector_index(IMAGE)
        if index.count == 0:
            return None
        key = {"model": encoder.identity.fingerprint, "images": index.count, "generation": self.store.generation(),
               "database": self.store.database_id()}  # (a database moved aside and made again counts from 1 too)
        if self._floor is None or self._floor[0] is not encoder or self._floor[1] != key:
            measure = lambda: measure_floor(index, probe_vectors(encoder))  # noqa: E731
            # a database with no id yet (made before ids were given) trusts no floor kept beside it, nor keeps one
            floor = measure() if key["database"] is None else remembered_floor(self.root / config.RELEVANCE_FILE,
                                                                                key, measure)
            self._floor = (encoder, key, floor)
        return self._floor[2]

    def use_encoder(self, encoder, settings: tuple[str, str] | None = None) -> None:
        """Use an already-loaded model (checked against the binding, which it sets on a new library); `settings`
        (device, precision) are what it was loaded for, so a later `encoder()` with them reuses it."""
        self.check_model(encoder.identity)
        if self.identity is None:
            self.store.bind_model(encoder.identity)
        self._encoder, self._encoder_settings = encoder, settings

    def forget_model(self) -> None:
        """Drop the loaded model and cached indexes: after the binding changed underneath them, or so that a
        process idling between batches (watch) holds only what its next batch loads again."""
        self._encoder = self._text_encoder = self._vocabulary = self._floor = None
        self.indexes.clear()

    # ------------------------------------------------------------------------------------------ index

    @property
    def index_preference(self) -> str:
        return self.store.get_meta("index_type") or "auto"

    def set_index_preference(self, preference: str) -> None:
        if preference not in config.INDEX_TYPES:
            raise ClipdexError(f"unknown index type {preference!r}: use one of {', '.join(config.INDEX_TYPES)}")
        with self.writer():
            self.store.set_meta("index_type", preference)

    def vector_index(self, kind: str) -> VectorIndex:
        """The FAISS index for `kind`, current with the store (refreshed in memory; readers never save)."""
        return self.indexes.current(kind, self.follow_binding(), self.index_preference)

    def save_index(self, kind: str) -> None:
        """Write the index cache of `kind` for the next process (writers only)."""
        with self.writer():
            self.indexes.save(kind, self.require_identity(), self.index_preference)


def _read_settings(path: Path) -> dict:
    """The library's config.json, or a one-line error when it is damaged (never a traceback)."""
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ClipdexError(f"cannot read {path}: {exc}; fix or delete it (it only remembers --database)") from None
    if not isinstance(settings, dict):
        raise ClipdexError(f"cannot read {path}: expected a JSON object; fix or delete it")
    return settings


def _make_private(path: Path) -> None:
    """Folder 0700, files 0600: a photo library says a lot about a person. Best effort on what we don't own."""
    try:
        if path.is_dir():
            path.chmod(0o700)
        elif path.is_file():
            path.chmod(0o600)
    except OSError:
        pass


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
