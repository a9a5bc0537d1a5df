"""The clipdex library API: everything the command line and the web server do, callable from Python.

    import clipdex
    library = clipdex.open_library("~/clipdex-library", create=True)
    clipdex.index(library, ["~/Photos"], clipdex.IndexOptions(model="sample"))
    for hit in clipdex.search(library, "a red circle"):
        print(hit.score, hit.path)

Functions that write (index, add_captions, the re-embed inside index) take the library's writer lock
themselves; readers (search, captions, duplicates, status) never write. The CLI and web layer only parse,
call these and print.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable, Sequence

from clipdex.indexer.options import IndexOptions
from clipdex.retrieval import config
from clipdex.retrieval.config import IMAGE
from clipdex.retrieval.errors import ClipdexError, NotFound
from clipdex.retrieval.search.hits import Hits
from clipdex.retrieval.library import Library, leaves_no_empty_library

# start(description, total, unit="") -> advance(n=1, note=""): one progress bar per phase of the work; unit is
# "bytes" for a download, "once" for a step done once per model (say it in a line), "" for items
Progress = Callable[..., Callable[..., None]]


def open_library(path: Path | str | None = None, database: str | None = None, create: bool = False) -> Library:
    """The library at `path` (default: $CLIPDEX_LIBRARY, else the user data folder); `create` makes a new one.
    `database` is a SQLAlchemy URL (PostgreSQL) used instead of the SQLite file, remembered by the library."""
    return Library(Path(path) if path is not None else config.default_library_dir(), database, create=create)


def load_model(
    library: Library | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    progress: Progress | None = None,
    prepare: bool = True,
):
    """The encoder a command should use: the library's bound model when none is named, else the named one (its
    default tag when none is given). The one place where that choice is made; on the CPU in fp32/int8 it is the
    prepared model (no torch), prepared first if it was not yet (unless `prepare` is False)."""
    from clipdex.retrieval.models.loading import load_model as load

    if model is None and library is not None and library.identity is not None:
        return library.encoder(device, precision, progress)
    name = model or config.DEFAULT_MODEL
    return load(name, config.pretrained_for(name, pretrained), device, precision, progress, prepare)


@leaves_no_empty_library
def index(
    library: Library,
    paths: Sequence[Path | str] = (),
    options: IndexOptions = IndexOptions(),
    progress: Progress | None = None,
):
    """Embed new and changed images under `paths` (and, with `options.reembed`, the whole library with
    `options.model` first); an IndexReport. See IndexOptions (indexer/options.py) for what each option does."""
    from clipdex.indexer.facts_pass import read_photo_facts
    from clipdex.indexer.ocr_pass import read_text_in_images
    from clipdex.indexer.tag_pass import tag_into
    from clipdex.retrieval.media.ocr import require_ocr
    from clipdex.indexer.pipeline import IndexReport, index_folders
    from clipdex.retrieval.describe.vocabulary import BUILTIN_NAME, read_concepts

    options.check(bool(paths))
    # A list given now replaces the library's (built-in: "builtin"); none keeps it, or starts with the built-in one.
    vocabulary = options.vocabulary
    concepts = read_concepts(Path(vocabulary)) if vocabulary not in (None, BUILTIN_NAME) else None  # before any work
    retag = options.tags and (vocabulary is not None or not library.store.tags_enabled)
    if not paths and not options.reembed:  # `index --ocr` / `--tags` on a library: only what is not done yet
        report = IndexReport()
        if options.ocr:
            read = read_text_in_images(library, progress)
            report.failed, report.interrupted = read.failed, read.interrupted
            report.ocr = {"read": read.read, "with_text": read.with_text}
        if options.tags and not report.interrupted:
            if retag:
                with library.writer():
                    library.store.enable_tags(concepts)
            tag_into(report, library, options.device, progress)
        return report
    model_of = _OnDemand(
        lambda: load_model(None if options.reembed else library, options.model, options.pretrained, options.device,
                           options.precision, progress, options.export_text)
    )
    # The model is loaded only once a file needs it when the library is already bound to it; else now (a new
    # library is bound to it, a re-embed or a Ray run needs it, or a model other than the library's is refused).
    if not options.reembed and library.identity is not None and not _bound_to(library, options.model, options.pretrained):
        _refuse_other_model(library, options.model, options.pretrained)  # before preparing it: that could take minutes
    if options.reembed or options.engine != "local" or not _bound_to(library, options.model, options.pretrained):
        model_of()
        if library.identity is None or options.reembed:  # a new binding: the text tower is tried too, before any
            model_of().encode_texts(["a photo", "two photos of a dog"])  # photo is stored with this model
    report = IndexReport()
    with library.writer():
        if options.index_type is not None:
            library.set_index_preference(options.index_type)
        if options.ocr or library.store.ocr_enabled:
            require_ocr()
        if options.ocr:  # remembered first, so this run's decoding already asks the text gate
            library.store.enable_ocr()
        if retag:
            library.store.enable_tags(concepts)
        bound = library.identity
        if options.reembed and bound is not None and not bound.same_model(model_of().identity):
            from clipdex.indexer.reembed import reembed_library  # imports torch: only for a re-embed

            done = reembed_library(library, model_of(), options.batch_size, options.workers, progress=progress)
            report.reembedded = {"images": done.images, "captions": done.captions}
        if paths:
            found = index_folders(
                library, [Path(p) for p in paths], model_of.value or model_of, exclude=options.exclude,
                include_hidden=options.hidden, batch_size=options.batch_size, workers=options.workers,
                progress=progress,
                embedder=_embedder(options.engine, model_of.value, options.batch_size, options.ray_address),
            )
            found.reembedded = report.reembedded
            report = found
        if not report.interrupted:
            report.facts, report.interrupted = read_photo_facts(library, progress).summary()
        if library.store.ocr_enabled and not report.interrupted:
            read = read_text_in_images(library, progress)
            report.ocr = {"read": read.read, "with_text": read.with_text}
            report.failed += read.failed
            report.interrupted = read.interrupted
        if library.store.tags_enabled and not report.interrupted:
            tag_into(report, library, options.device, progress)
    if model_of.value is not None:
        report.notes[:0] = model_of.value.notes
    if options.export_text and not report.interrupted:
        from clipdex.retrieval.models.loading import text_model  # a folder runs text queries already

        ready = model_of.value is not None or text_model(library.require_identity()) is not None
        loaded = model_of.value if ready else model_of()
        if loaded is not None:
            report.notes += export_text_tower(loaded, progress)
    return report


class _OnDemand:
    """A model loaded on first use, at most once; `value` says whether it was."""

    def __init__(self, load: Callable[[], object]) -> None:
        self._load = load
        self.value = None

    def __call__(self):
        if self.value is None:
            self.value = self._load()
        return self.value


def _bound_to(library: Library, model: str | None, pretrained: str | None) -> bool:
    """Whether the library is bound to the model the user named (or named none), told without building it."""
    from clipdex.retrieval.models.openclip.factory import choose_model

    bound = library.identity
    if bound is None or model is None:
        return bound is not None
    choice = choose_model(model, config.pretrained_for(model, pretrained))
    return bound.same_weights(choice.identity())


def _refuse_other_model(library: Library, model: str, pretrained: str | None) -> None:
    """The library's refusal of a model other than its own, told from the model's name and weights alone."""
    from dataclasses import replace

    from clipdex.retrieval.models.openclip.factory import choose_model

    bound = library.require_identity()
    choice = choose_model(model, config.pretrained_for(model, pretrained))
    library.check_model(replace(choice.identity(), dim=bound.dim))


def _embedder(name: str, encoder, batch_size: int, ray_address: str | None):
    """None means the pipeline's default local embedder."""
    if name == "local":
        return None
    if name == "ray":
        from clipdex.indexer.ray_embedder import RayEmbedder

        return RayEmbedder(encoder, batch_size, ray_address)
    raise ClipdexError(f"unknown engine {name!r}: use local or ray")


def export_text_tower(encoder, progress: Progress | None = None) -> list[str]:
    """Prepare the fp32 folder of a model that runs through torch (bf16, CUDA), for fast, torch-free text
    queries (once per model, cached); the notes for the user, none when it was prepared or is a folder."""
    from clipdex.retrieval.models.loading import ensure_text_tower

    return ensure_text_tower(encoder, progress)


def search(
    library: Library,
    query,
    k: int = config.DEFAULT_TOP_K,
    filters=None,
    device: str = "auto",
    precision: str = "fp32",
    mode: str = "hybrid",
    sort: str = "score",
    language: str | None = None,
    literal: bool = False,
    unread: Sequence[str] = (),
) -> Hits:
    """Images for a query: a sentence ("horse + stripes" syntax), the tokens a user typed, or parsed Terms.

    mode: "hybrid" (CLIP fused with the words read in photos and their names), "clip" or "text".
    sort: "score" (best first) or "date" (the same matches, newest first).
    language: the query's language (ISO 639-1 or FLORES-200), for models that must be told it (NLLB); by
    default the locale's. literal: no place, date or camera read out of the sentence; unread: those kinds of
    phrase (config.READ_KINDS) not read (the page's chips, removed)."""
    from clipdex.retrieval.search.query import Searcher
    from clipdex.retrieval.search.terms import split_query

    searcher = Searcher(library, device, precision, language=language)
    hits = searcher.search(split_query(query) if isinstance(query, str) else query, k, filters, mode, sort, literal,
                           tuple(unread))
    return Hits(hits, searcher.notes, searcher.understood)


def nearest(library: Library, vector, k: int = config.DEFAULT_TOP_K, filters=None, device: str = "auto",
            precision: str = "fp32") -> Hits:
    """Images nearest to a vector of the library's model (an image's, or the mean of several), best first; a video
    once, at its best moment."""
    from clipdex.retrieval.search.query import Searcher

    return Hits(Searcher(library, device, precision).nearest(vector, IMAGE, k, filters))


def captions(library: Library, image, k: int = config.DEFAULT_TOP_K, device: str = "auto",
             source: str = "auto", progress: Progress | None = None) -> Hits:
    """Captions ranked by how well they describe `image` (a path, a PIL image or its vector): image→text, from the
    corpus or the vocabulary (`source`: auto, corpus, builtin or all; each hit says where it came from)."""
    from clipdex.retrieval.search.query import Searcher

    searcher = Searcher(library, device, progress=progress)
    return Hits(searcher.captions(image, k, source), searcher.notes)


def export_xmp(library: Library, paths: Sequence[Path | str] = (), dry_run: bool = False, text: bool = False,
               lightroom: bool = False, items: Sequence[int] = ()):
    """Write the tags of the library's files (under `paths`, or exactly those of the items `items`, else all) into
    their XMP sidecars, and with `text` their recognised text as a description; an XmpReport. Originals are never
    opened for writing."""
    import os

    from clipdex.retrieval.describe.sidecars import write_sidecars

    if not library.store.tags_enabled and not text:
        raise ClipdexError("the library has no tags to export: run `clipdex index --tags` first")
    tagged = library.store.tags_by_file()
    texts = library.store.texts_by_file() if text else {}
    spellings = []  # a path as given and as it really is: a library indexed through a link matches either
    for given in paths:
        path = os.path.abspath(os.path.expanduser(str(given)))
        if not os.path.lexists(path):
            raise NotFound(f"no such file or folder: {given}")
        spellings += dict.fromkeys((path, os.path.realpath(path)))
    files = library.store.files_under(spellings, items)
    chosen = sorted(key for key in files if key in tagged or key in texts)
    return write_sidecars(chosen, tagged, texts, lightroom, dry_run, files)


def tags(library: Library) -> list[tuple[str, int]]:
    """(tag, how many files hold it), the most common first; empty when the library is not tagged."""
    return library.store.tag_counts()


def add_captions(library: Library, captions: Sequence[str] | Path | str, device: str = "auto",
                 exclusive: AbstractContextManager = nullcontext()):
    """Add captions (a list, or a .txt/.csv/.jsonl file) to the corpus; a CaptionReport. `exclusive` is held around
    each write only (a server's query lock: queries never wait for a large corpus to be embedded)."""
    from clipdex.retrieval.describe.captions import CaptionReport, add_captions as add
    from clipdex.retrieval.describe.pairs import CaptionFile, read_captions

    given = read_captions(Path(captions)) if isinstance(captions, (str, Path)) else CaptionFile(list(captions), [])
    return CaptionReport(*add(library, library.encoder(device), given.captions, exclusive=exclusive), given.skipped)


def remove_captions(library: Library, captions: Sequence[str] | Path | str | None = None) -> int:
    """Remove captions (a list, or a file as add_captions reads; None: the whole corpus); returns how many."""
    from clipdex.retrieval.describe.captions import remove_captions as remove
    from clipdex.retrieval.describe.pairs import read_captions

    if isinstance(captions, (str, Path)):
        captions = read_captions(Path(captions)).captions
    return remove(library, None if captions is None else list(captions))


def duplicates(library: Library, threshold: float = config.DEFAULT_DUPLICATE_THRESHOLD) -> list[list[dict]]:
    """Groups of near-identical photos, largest first (nothing is deleted)."""
    from clipdex.retrieval.search.duplicates import duplicate_groups

    return duplicate_groups(library, threshold)


def finetune(pairs: Path | str | Sequence, options, on_event: Callable[[dict], None] | None = None):
    """Train on image–caption pairs (a pairs file, or Pairs) with `options` (FinetuneOptions): held-out recall
    before, per epoch and after; the best epoch's (or mixed) weights at options.out with a metrics log beside it.
    `on_event` sees each logged record (steps, evaluations)."""
    from clipdex.retrieval.describe.pairs import read_pairs
    from clipdex.retrieval.training.finetune import finetune as run

    return run(read_pairs(Path(pairs)) if isinstance(pairs, (str, Path)) else pairs, options, on_event=on_event)


def evaluate(
    pairs: Path | str | Sequence,
    library: Library | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
) -> dict:
    """Recall@1/5/10 both ways on a pairs file, with `model`, else the library's bound model, else the default."""
    from clipdex.retrieval.training.evaluate import evaluate_pairs
    from clipdex.retrieval.describe.pairs import read_pairs

    encoder = load_model(library, model, pretrained, device)
    loaded = read_pairs(Path(pairs)) if isinstance(pairs, (str, Path)) else pairs
    return {**evaluate_pairs(encoder, loaded), "model": encoder.identity.describe()}


def export_model(model: str, out: Path | str, pretrained: str | None = None, precision: str = "fp32",
                 fp16_weights: bool = False) -> dict:
    """Write `model` (an open_clip name or checkpoint; needs torch) as a model folder at `out`, a new folder:
    runnable with no torch by `--model OUT` (and by Immich's loader). `fp16_weights` halves the files of weights
    that are fp16 already (the bundled sample model's)."""
    from clipdex.retrieval.models.loading import export_model as export

    return export(model, Path(out).expanduser(), config.pretrained_for(model, pretrained), precision, fp16_weights)


def models(bound=None) -> list[dict]:
    """The recommended model folders (models/catalogue.py), each with whether it is cached here and whether
    `bound` (a library's identity) is it."""
    from clipdex.retrieval.models.downloads import listing

    return listing(bound)


def pull_model(name: str, progress: Progress | None = None) -> dict:
    """Fetch a catalogue model or hub ORG/NAME folder into the local cache now."""
    from clipdex.retrieval.models.downloads import pull

    return pull(name, progress)


def remove_model(name: str, bound=None, force: bool = False) -> dict:
    """Remove a cached model folder; refused for `bound` (a library's model) unless `force`."""
    from clipdex.retrieval.models.downloads import remove

    return remove(name, bound, force)


def status(library: Library, paths: bool = True, failed: bool = False) -> dict:
    """What the library holds, which model it is bound to, its index, and whether its model is prepared (runs
    without torch); `paths=False` leaves out where things are on disk (for a browser); `failed` adds the files
    that could not be indexed, with why (`"failed": [{"path", "error"}]`)."""
    from clipdex.retrieval.storage.database_url import without_password
    from clipdex.retrieval.models.loading import text_model, unprepared_because
    from clipdex.retrieval.storage.store import IMAGE

    identity = library.identity
    index = library.vector_index(IMAGE) if identity else None
    folder = text_model(identity, fetch=False) if identity else None  # (status never downloads)
    store = library.store
    info = {
        "library": str(library.root),
        "database": str(library.root / config.DATABASE_FILE) if store.is_sqlite else without_password(store.url),
        "model": identity.describe() if identity else None,
        "dim": identity.dim if identity else None,
        "counts": store.counts(),
        "index": {
            "type": index.describe() if index else None,
            "kind": index.type if index else None,
            "preference": library.index_preference,
            "gpu": bool(index and index.on_gpu),
        },
        "model_folder": str(folder.folder) if folder else None,
        "prepared": folder is not None,
        "unprepared_because": None if folder is not None or identity is None else unprepared_because(identity),
        "ocr": {"enabled": store.ocr_enabled, **store.ocr_counts()},
    } | ({"failed": [{"path": p, "error": e} for p, e in store.reads.rows("SELECT path, error FROM failures ORDER BY path")]}
         if failed else {})
    if not paths:
        for key in ("library", "database", "model_folder"):
            del info[key]
        info["model"] = identity.describe(paths=False) if identity else None
    return info
