"""The typer app. Each command parses its options, calls the library API (`clipdex.api`), and prints a table or
--json. Nothing here decides anything a Python user of the library would not get too."""

from __future__ import annotations

import logging
import re
import os
import sys
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperGroup

from clipdex.cli import standard_output
from clipdex.cli.options import (
    DeviceOption, JsonOption, LangOption, ModelOption, PrecisionOption, PretrainedOption, PreviewOption, asked,
    library_of, sigterm_stops,
)
from clipdex.cli.output import (
    console, err_console, print_error, print_hits, print_json, print_notes, print_table, progress_tasks, recall_rows,
    say, shown,
)
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError, first_line


# typer 0.12–0.15 raises click's exceptions, later ones its own (typer.exceptions); both kinds pass through.
_PASS_THROUGH = (
    typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt,
    *(t for t in (getattr(typer.exceptions, "TyperException", None),) if t is not None),
)


class _Commands(TyperGroup):
    """Any failure of a command is one line on stderr: a ClipdexError as it is, with its kind's exit status
    (retrieval/errors.py); a database error with what to do, and anything unexpected with its type (the traceback
    only with --verbose), with status 1."""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            ctx.obj["only_read"] = ctx.invoked_subcommand in _ONLY_READ
            return result
        except _PASS_THROUGH:  # exits, aborts and usage errors: typer (or click) reports those itself
            raise
        except ClipdexError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:  # the reader closed the pipe (`| true`): quietly, status 1, as rich's tables end
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's exit flushes it once more)
            raise typer.Exit(1) from None
        except Exception as exc:  # the last net: no input may end in a traceback
            if ctx.obj and ctx.obj.get("verbose"):
                err_console.print(traceback.format_exc())
            if type(exc).__module__.startswith(("sqlalchemy", "sqlite3")):
                print_error(f"the library database failed: {first_line(exc)}; check it is reachable and not damaged")
            else:
                print_error(f"unexpected {type(exc).__name__}: {first_line(exc)} (run with --verbose to see where)")
        raise typer.Exit(1)


_ONLY_READ = ("search", "captions", "duplicates", "status", "tags")  # commands whose process may end at once (entry)

app = typer.Typer(
    cls=_Commands,
    help="Search your photos by sentence: index a folder, then search it with text or an image.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    library: Optional[Path] = typer.Option(
        None, "--library", "-L", envvar=config.LIBRARY_ENV, help="Library folder (default: user data folder)."
    ),
    database: Optional[str] = typer.Option(
        None, "--database", envvar=config.DATABASE_ENV,
        help="Keep the metadata in this database (e.g. postgresql+psycopg://user@host/db) instead of SQLite; "
        "remembered by the library (never its password).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the libraries' own log messages."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, force=True)
    ctx.ensure_object(dict).update(library=library or config.default_library_dir(), database=database, verbose=verbose)


@app.command()
def index(
    ctx: typer.Context,
    paths: Optional[list[Path]] = typer.Argument(None, help="Folders (or image files) to index."),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    reembed: bool = typer.Option(
        False, "--reembed", help="Re-embed the whole library with --model; it switches models only when done."
    ),
    device: str = DeviceOption,
    batch_size: int = typer.Option(config.DEFAULT_BATCH_SIZE, min=1, help="Images per encoder batch."),
    workers: int = typer.Option(config.DEFAULT_DECODE_WORKERS, min=0, help="Decode worker processes."),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of files or folders to skip (repeatable)."),
    hidden: bool = typer.Option(False, "--hidden", help="Also index hidden files and folders."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 when any file was skipped."),
    precision: str = PrecisionOption,
    index_type: Optional[str] = typer.Option(
        None, "--index-type", help="auto (flat, IVF past 100k items, IVF-PQ with exact re-ranking past 1M), flat "
        "(exact), ivf or ivfpq; remembered."
    ),
    engine: str = typer.Option("local", "--engine", help="Embedding engine: local (decode workers + one encoder) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (default: start a local one)."),
    export: bool = typer.Option(
        True, "--export/--no-export", help="Export the text tower for fast torch-free text queries (once per model)."
    ),
    ocr: bool = typer.Option(
        False, "--ocr", help="Also read the text in images (OCR) for full-text search; remembered by the library, "
        "and on an existing library it reads the images not read yet.",
    ),
    tags: bool = typer.Option(
        False, "--tags", help="Also tag images with concepts of a vocabulary (search --tag, clipdex tags); remembered "
        "by the library, and on an existing library it tags the images not tagged yet.",
    ),
    vocabulary: Optional[str] = typer.Option(
        None, "--vocabulary", help="With --tags: a file of concepts to tag with, one a line ('#' comments), or "
        "'builtin'; remembered (default: the library's list, else the built-in list of photo concepts).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Embed new and changed images under PATHS; moved files keep their vectors, deleted ones leave.

    A new library's first run fetches the default model folder once (clipdex models lists the others). Unreadable
    files are skipped and reported, never fatal; Ctrl-C keeps every batch already written."""
    from clipdex import api
    from clipdex.indexer.options import IndexOptions

    options = IndexOptions(
        model=model, pretrained=pretrained, reembed=reembed, device=device, precision=precision,
        batch_size=batch_size, workers=workers, exclude=tuple(exclude), hidden=hidden, index_type=index_type,
        engine=engine, ray_address=ray_address, export_text=export, ocr=ocr, tags=tags, vocabulary=vocabulary,
    )
    options.check(bool(paths))  # (before a new library folder is made for nothing)
    library = library_of(ctx, create=True)
    with progress_tasks(enabled=not as_json) as start, sigterm_stops():
        report = api.index(library, paths or [], options, start)
    if as_json:
        print_json({k: v for k, v in report.as_json().items() if k != "notes"})
    else:
        if report.reembedded:
            say(f"re-embedded {report.reembedded['images']} images and {report.reembedded['captions']} captions "
                f"with {library.require_identity().describe()}")
        if paths or reembed:
            say(f"added {report.added}, updated {report.updated}, moved {report.moved}, removed {report.removed}, "
                f"unchanged {report.unchanged}, failed {len(report.failed)} in {report.seconds:.1f}s")
        if report.facts and report.facts["placed"]:
            say(f"placed {report.facts['placed']} of {report.facts['read']} photos read (`clipdex places` lists where)")
        if report.ocr:
            say(f"read text in {report.ocr['read']} images; {report.ocr['with_text']} hold some")
        if report.tags:
            say(f"tagged {report.tags['tagged']} images; {report.tags['with_tags']} have tags" if report.tags["tagged"]
                else "every image was tagged already")
        for failure in report.failed:
            say(f"  skipped {failure['path']}: {failure['error']}")
    print_notes(report.notes)
    if report.interrupted:
        say("interrupted: every batch written before Ctrl-C is kept; run index again to finish")
        raise typer.Exit(130)
    if strict and report.failed:
        raise typer.Exit(1)


def _date(value: Optional[str], option: str) -> Optional[float]:
    from clipdex.retrieval.search.hits import iso_seconds

    if value is None:
        return None
    try:
        return iso_seconds(value)
    except ValueError:
        raise ClipdexError(f"{option} takes a date like 2024-06-30 or 2024-06-30T18:00, not {value!r}") from None


@app.command(context_settings={"allow_interspersed_args": True})
def search(
    ctx: typer.Context,
    terms: Optional[list[str]] = typer.Argument(
        None, help='Words and images joined by + or -, e.g. "horse" + "stripes", ./night.jpg + snow, '
        '"2:golden retriever" (weight 2).', show_default=False,
    ),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="Search with an image (added as a term)."),
    top_k: int = typer.Option(config.DEFAULT_TOP_K, "--top-k", "-k", min=1, help="How many results."),
    folder: Optional[Path] = typer.Option(None, "--in", help="Only images under this folder."),
    tag: list[str] = typer.Option([], "--tag", help="Only images with this tag (index --tags; repeatable: all of them)."),
    after: Optional[str] = typer.Option(None, "--after", help="Only photos taken on or after this date."),
    before: Optional[str] = typer.Option(None, "--before", help="Only photos taken before this date."),
    min_score: Optional[float] = typer.Option(
        None, "--min-score", help="Only results with at least this cosine (in hybrid mode, or holding the words)."
    ),
    mode: str = typer.Option(
        "hybrid", "--mode", help="hybrid: CLIP fused with words read in photos (index --ocr) and file/folder names; "
        "clip: CLIP alone; text: the words alone.",
    ),
    sort: str = typer.Option("score", "--sort", help="score (best first) or date (the same matches, newest first)."),
    paths_only: bool = typer.Option(False, "--paths-only", "-f", help="Print one path a line, nothing else."),
    preview: bool = PreviewOption,
    null: bool = typer.Option(
        False, "--null", "-0", help="With -f: end each path with a NUL byte instead of a newline (for xargs -0)."
    ),
    near: Optional[str] = typer.Option(None, "--near", help='Only photos taken near a place ("Kyoto", "Paris, '
                                       'Texas") or a position ("35.01,135.77").'),
    km: float = typer.Option(config.NEAR_KM, "--km", min=0.001, max=20000, help="With --near: how near."),
    literal: bool = typer.Option(False, "--literal", help="Search the words as typed: no place, date or camera "
                                 'read out of them ("in Lisbon", "in 2024", "taken with a Fuji").'),
    lang: Optional[str] = LangOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    as_json: bool = JsonOption,
) -> None:
    """Images ranked by similarity to a sentence (text→image), an image (image→image), or a mix of both."""
    from clipdex.retrieval.search.hits import Filters, Hits
    from clipdex.retrieval.search.terms import Term, command_line_tokens, parse_terms

    parsed = parse_terms(command_line_tokens(terms)) if terms else []
    if image is not None:
        parsed.append(Term(str(image), True, 1.0))
    if not parsed:
        raise ClipdexError("give TEXT, or --image FILE, or both")
    if any(not t.strip() for t in tag):
        raise typer.BadParameter("a tag is a concept of the vocabulary, not empty (`clipdex tags` lists them)",
                                 param_hint="--tag")
    filters = Filters(str(folder) if folder else None, _date(after, "--after"), _date(before, "--before"),
                      min_score, tuple(tag), near=_near(near, km) if near is not None else None)
    request = {"terms": [(os.path.abspath(t.value) if t.is_image else t.value, t.is_image, t.weight) for t in parsed],
               "k": top_k, "filters": asdict(filters), "mode": mode, "sort": sort, "device": device,
               "precision": precision, "literal": literal}
    hits = None
    if lang is None and all(os.path.isfile(t.value) for t in parsed if t.is_image):  # (else this process says
        hits = asked(ctx, "search", request, Hits.from_wire)  # what is wrong; a --lang is read here)
    if hits is None:
        from clipdex import api

        hits = api.search(library_of(ctx), parsed, top_k, filters, device, precision, mode, sort, language=lang,
                          literal=literal)
    print_notes(hits.notes)
    if paths_only or null:
        end = "\0" if null else "\n"
        terminal = sys.stdout.isatty()  # byte-exact for a pipe; on a screen, names cannot drive the terminal
        sys.stdout.write("".join((shown(hit.path) if terminal else hit.path) + end for hit in hits))
        return
    if preview and not as_json:
        from clipdex.cli.preview import print_previews

        if print_previews(hits):
            return
    if not hits and tag and not as_json:
        _no_such_tag(ctx, tag)
    print_hits(hits, as_json, "images like " + " ".join(terms or []) + (f" {image}" if image else ""), sort == "date")


def _near(place: str, km: float) -> tuple[float, float, float]:
    """--near's place as (latitude, longitude, km): a position as written, else the largest place so called."""
    from clipdex.retrieval.places.gazetteer import GAZETTEER

    position = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*,\s*([-+]?\d+(?:\.\d+)?)\s*", place)
    if position:
        latitude, longitude = float(position.group(1)), float(position.group(2))
        if abs(latitude) > 90 or abs(longitude) > 180:
            raise typer.BadParameter(f"{place!r} is no position (latitude -90..90, longitude -180..180)",
                                     param_hint="--near")
        return latitude, longitude, km
    found = GAZETTEER.called(place)
    if found is None:
        raise typer.BadParameter(f"no place called {place!r} is known (towns of 15,000 people or more; or give a "
                                 "position: 35.01,135.77)", param_hint="--near")
    return found.latitude, found.longitude, km


def _no_such_tag(ctx: typer.Context, wanted: list[str]) -> None:
    """No results under --tag: a tag no photo holds is a mistake, said with the tags there are."""
    from clipdex import api

    held = dict(api.tags(library_of(ctx)))
    missing = [name for name in wanted if name not in held]
    if missing:
        known = ", ".join(sorted(held, key=lambda name: -held[name])[:8])
        raise ClipdexError(f"no photo has the tag {missing[0]!r}; " + (
            f"`clipdex tags` lists the {len(held)} tags there are (the most held: {known})" if held
            else "no photo is tagged yet: `clipdex index --tags` tags them"))


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the demo library (default: user cache)."),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Offline tour on the bundled sample model: index sample_data/, search, describe, measure recall."""
    from clipdex.demo import default_demo_dir, run_demo

    folder = out or default_demo_dir()
    with progress_tasks(enabled=not as_json) as start:
        result = run_demo(folder, device, start)
    if as_json:
        print_json(result)
        return
    indexed = result["indexed"]
    say(f"clipdex demo — model {result['model']}")
    say(f"indexed {indexed['added']} sample photos into {result['library']} in {indexed['seconds']:.1f}s")
    err_console.print()
    for search in result["searches"]:
        print_table(
            f"search {search['query']!r}", ["#", "score", "path"],
            [(n, hit["score"], hit["path"]) for n, hit in enumerate(search["results"], 1)],
        )
    described = result["captions"]
    print_table(
        f"captions for {described['image']} (true: {described['true_caption']!r})", ["#", "score", "caption"],
        [(n, hit["score"], hit["caption"]) for n, hit in enumerate(described["results"], 1)],
    )
    heldout = result["heldout_recall"]
    print_table(
        f"sample model recall on {heldout['texts']} held-out photos it never saw", ["", "R@1", "R@5", "R@10"],
        recall_rows(heldout),
    )
    console.print(f"\ntry: clipdex --library {result['library']} search \"a green triangle\"")


from clipdex.cli import (  # noqa: E402
    describe_commands, library_commands, live_commands, model_commands, training_commands,
)

library_commands.register(app)
describe_commands.register(app)
model_commands.register(app)
training_commands.register(app)
live_commands.register(app)


def main(state: dict | None = None) -> None:
    """Run the CLI: a Ctrl-C ends with status 130 and no traceback. `state` receives what the command left for its
    caller (whether it only read)."""
    # Pillow warns about images over ~89 MP; clipdex has already checked each one against its own cap.
    warnings.filterwarnings("ignore", message="Image size .* could be decompression bomb")
    try:
        app(obj=state if state is not None else {})
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)


def entry() -> None:
    """The console script and `python -m clipdex`. A command that only read ends its process once its output is out
    (tearing down ONNX Runtime, FAISS and every module cost a query 0.05–0.08 s); any other, or a failure, as usual.
    Standard output closed or failing is said in one line, status 1 (standard_output.py)."""
    state: dict = {}
    standard_output.guard()
    try:
        main(state)
    except SystemExit as done:
        if done.code in (0, None):
            if (status := standard_output.flush()) or not state.get("only_read"):
                raise SystemExit(status) from None
            os._exit(0)
        raise
