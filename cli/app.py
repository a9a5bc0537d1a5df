"""The typer app. Each command parses its options, calls the library API (`clipdex.api`), and prints a table or
--json. Nothing here decides anything a Python user of the library would not get too."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
import warnings
from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperGroup

from clipdex.cli.options import (
    DeviceOption, JsonOption, ModelOption, PrecisionOption, PretrainedOption, PreviewOption, library_of, sigterm_stops,
)
from clipdex.cli.output import (
    console, err_console, print_error, print_json, print_notes, print_table, print_warning, progress_tasks,
    recall_rows, say, shown,
)
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError


# typer 0.12–0.15 raises click's exceptions, later ones its own (typer.exceptions); both kinds pass through.
_PASS_THROUGH = (
    typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt,
    *(t for t in (getattr(typer.exceptions, "TyperException", None),) if t is not None),
)


class _Commands(TyperGroup):
    """Any failure of a command is one line on stderr and exit status 1: a ClipdexError as it is, a database
    error with what to do, anything unexpected with its type (the traceback only with --verbose)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:  # exits, aborts and usage errors: typer (or click) reports those itself
            raise
        except ClipdexError as exc:
            print_error(str(exc))
        except Exception as exc:  # the last net: no input may end in a traceback
            if ctx.obj and ctx.obj.get("verbose"):
                err_console.print(traceback.format_exc())
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            if type(exc).__module__.startswith("sqlalchemy"):
                print_error(f"the library database failed: {first}; check it is reachable and not damaged")
            else:
                print_error(f"unexpected {type(exc).__name__}: {first} (run with --verbose to see where)")
        raise typer.Exit(1)


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
    ctx.obj = {"library": library or config.default_library_dir(), "database": database, "verbose": verbose}


@functools.lru_cache(maxsize=1)
def _previewer():
    """The terminal's previewer, or None where stdout is not a terminal (a pipe, a file): then paths alone."""
    from clipdex.cli.preview import Previewer

    return Previewer() if Previewer.available() else None


def _previewing(hits) -> bool:
    """Each hit on a line with its thumbnail below it; False (nothing printed) when there is no terminal."""
    previewer = _previewer()
    if previewer is None or not hits:
        return False
    for n, hit in enumerate(hits, 1):
        console.print(f"{n}. {hit.score:.4f}  {shown(hit.path)}" + (f"  at {hit.time:.0f} s" if hit.time else ""),
                      soft_wrap=True)
        previewer.draw(hit.path, hit.time)
    return True


def _print_hits(hits, as_json: bool, title: str) -> None:
    if as_json:
        print_json([hit.as_json() for hit in hits])
    elif not hits:
        say("no results")
    else:
        label = "path" if hits[0].kind == "image" else "caption"
        rows = [[n, hit.score, hit.label] for n, hit in enumerate(hits, 1)]
        if hits[0].kind != "image" and any(hit.source != "corpus" for hit in hits):  # where each caption came from
            print_table(title, ["#", "score", label, "from"], [[*row, hit.source] for row, hit in zip(rows, hits)])
            return
        if any(hit.ocr for hit in hits):  # the words found in the photo, beside it
            print_table(title, ["#", "score", label, "text"], [[*row, hit.ocr or ""] for row, hit in zip(rows, hits)])
        else:
            print_table(title, ["#", "score", label], rows)


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

    Unreadable files are skipped and reported, never fatal; Ctrl-C keeps every batch already written."""
    from clipdex import api

    library = library_of(ctx, create=True)
    with progress_tasks(enabled=not as_json) as start, sigterm_stops():
        report = api.index(
            library, paths or [], model=model, pretrained=pretrained, reembed=reembed, device=device,
            precision=precision, batch_size=batch_size, workers=workers, exclude=exclude, hidden=hidden,
            index_type=index_type, engine=engine, ray_address=ray_address, export_text=export, ocr=ocr,
            tags=tags, vocabulary=vocabulary, progress=start,
        )
    if as_json:
        print_json({k: v for k, v in report.as_json().items() if k != "notes"})
    else:
        if report.reembedded:
            say(f"re-embedded {report.reembedded['images']} images and {report.reembedded['captions']} captions "
                f"with {library.require_identity().describe()}")
        if paths or reembed:
            say(f"added {report.added}, updated {report.updated}, moved {report.moved}, removed {report.removed}, "
                f"unchanged {report.unchanged}, failed {len(report.failed)} in {report.seconds:.1f}s")
        if report.ocr:
            say(f"read text in {report.ocr['read']} images; {report.ocr['with_text']} hold some")
        if report.tags:
            say(f"tagged {report.tags['tagged']} images; {report.tags['with_tags']} have tags")
        for failure in report.failed:
            say(f"  skipped {failure['path']}: {failure['error']}")
    print_notes(report.notes)
    if report.interrupted:
        say("interrupted: every batch written before Ctrl-C is kept; run index again to finish")
        raise typer.Exit(130)
    if strict and report.failed:
        raise typer.Exit(1)


def _date(value: Optional[str], option: str) -> Optional[float]:
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
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
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    as_json: bool = JsonOption,
) -> None:
    """Images ranked by similarity to a sentence (text→image), an image (image→image), or a mix of both."""
    from clipdex import api
    from clipdex.retrieval.query import Filters
    from clipdex.retrieval.terms import Term, command_line_tokens, parse_terms

    parsed = parse_terms(command_line_tokens(terms)) if terms else []
    if image is not None:
        parsed.append(Term(str(image), True, 1.0))
    if not parsed:
        raise ClipdexError("give TEXT, or --image FILE, or both")
    filters = Filters(
        str(folder) if folder else None, _date(after, "--after"), _date(before, "--before"), min_score, tuple(tag)
    )
    hits = api.search(library_of(ctx), parsed, top_k, filters, device, precision, mode, sort)
    print_notes(hits.notes)
    if paths_only or null:
        end = "\0" if null else "\n"
        sys.stdout.write("".join(hit.path + end for hit in hits))
        return
    if preview and not as_json and _previewing(hits):
        return
    _print_hits(hits, as_json, "images like " + " ".join(terms or []) + (f" {image}" if image else ""))


@app.command()
def captions(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="The image to describe."),
    top_k: int = typer.Option(config.DEFAULT_TOP_K, "--top-k", "-k", min=1, help="How many captions."),
    source: str = typer.Option(
        "auto", "--from", help="corpus (captions added with add-captions), builtin (the vocabulary of photo "
        "concepts, or the library's own from index --tags --vocabulary), all, or auto: the corpus when there is one.",
    ),
    preview: bool = PreviewOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Captions that describe IMAGE best (image→text): from the library's corpus, or the built-in vocabulary."""
    from clipdex import api

    with progress_tasks(enabled=not as_json) as start:
        hits = api.captions(library_of(ctx), image, top_k, device, source, start)
    print_notes(hits.notes)
    if preview and not as_json and _previewer():
        from clipdex.retrieval.video import is_video

        _previewer().draw(image, 0.0 if is_video(image.name) else None)
    _print_hits(hits, as_json, f"captions for {image}")


@app.command("tags")
def tags_command(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """The tags of the library's images (index --tags), the most common first, with how many files hold each."""
    from clipdex import api

    counted = api.tags(library_of(ctx))
    if as_json:
        print_json([{"tag": tag, "count": count} for tag, count in counted])
    elif not counted:
        say("no tags: run `clipdex index --tags` to tag the library's images")
    else:
        print_table("tags", ["tag", "files"], [[tag, count] for tag, count in counted])


@app.command("export-xmp")
def export_xmp_command(
    ctx: typer.Context,
    paths: Optional[list[Path]] = typer.Argument(None, help="Only files and folders under these (default: all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; write nothing."),
    text: bool = typer.Option(False, "--text", help="Also write recognised text (index --ocr) as the description."),
    lightroom: bool = typer.Option(
        False, "--lightroom", help="Name RAW files' sidecars photo.xmp, as Lightroom does (else photo.cr2.xmp)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write tags as keywords into XMP sidecars (photo.jpg.xmp), for digiKam, darktable or Lightroom.

    Existing sidecars are merged into (everything in them is kept, keywords are added once); photos are never
    touched; running it again changes nothing."""
    from clipdex import api

    report = api.export_xmp(library_of(ctx), paths or [], dry_run, text, lightroom)
    if as_json:
        print_json(report.as_json())
    else:
        verb = "would update" if dry_run else "updated"
        for change in report.changed:
            added = ", ".join(change.keywords) + (" + description" if change.description else "")
            say(f"{'create' if change.created else 'update'} {change.sidecar}: {added}")
        say(f"{verb} {len(report.changed)} sidecars; {report.unchanged} already had everything; "
            f"{len(report.failed)} failed")
        for failure in report.failed:
            print_warning(f"{failure['path']}: {failure['error']}")
    if report.failed:
        raise typer.Exit(1)


@app.command("add-captions")
def add_captions_command(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help=".txt (one caption a line), or .csv/.jsonl with a `caption` field."),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Add captions to the corpus that `clipdex captions` ranks."""
    from clipdex import api

    report = api.add_captions(library_of(ctx), file, device)
    if as_json:
        print_json(report.as_json())
        return
    say(f"added {report.added} captions ({report.already_present} already present"
        + (f", {len(report.skipped)} skipped)" if report.skipped else ")"))
    for reason in report.skipped[:5]:
        print_warning(f"skipped {reason}")
    if len(report.skipped) > 5:
        print_warning(f"… and {len(report.skipped) - 5} more skipped")


@app.command("remove-captions")
def remove_captions_command(
    ctx: typer.Context,
    file: Optional[Path] = typer.Argument(None, help="The captions to remove, in a file as add-captions reads."),
    remove_all: bool = typer.Option(False, "--all", help="Remove the whole caption corpus."),
    as_json: bool = JsonOption,
) -> None:
    """Remove captions from the corpus: those listed in FILE, or --all."""
    from clipdex import api

    if (file is None) == (not remove_all):
        raise ClipdexError("give a FILE of captions to remove, or --all")
    removed = api.remove_captions(library_of(ctx), None if remove_all else file)
    if as_json:
        print_json({"removed": removed})
    else:
        say(f"removed {removed} captions")


@app.command()
def status(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """What the library holds and which model it is bound to."""
    from clipdex import api

    info = api.status(library_of(ctx))
    if as_json:
        print_json(info)
        return
    counts = info["counts"]
    print_table(
        "clipdex library",
        ["", ""],
        [
            ("library", info["library"]),
            ("model", info["model"] or "(none yet)"),
            ("photos", counts["image"]),
            ("videos", f"{counts['video']} ({counts['frame']} frames embedded)" if counts["video"] else 0),
            ("captions", counts["caption"]),
            ("failed files", counts["failed"]),
            ("index", f"{info['index']['type']} (choice: {info['index']['preference']})"),
            ("model prepared", "yes: runs without torch" if info["prepared"] else "no: the next index prepares it"),
            ("fast text queries", "yes (exported text tower)" if info["text_export"] else "no: loads torch"),
            ("text in photos (OCR)", _ocr_line(info["ocr"])),
        ],
    )


def _ocr_line(ocr: dict) -> str:
    if not ocr["enabled"]:
        return "off (index --ocr to read it)"
    unread = f", {ocr['unread']} not read yet" if ocr["unread"] else ""
    return f"on: {ocr['with_text']} images hold text, {ocr['without_text']} none{unread}"


@app.command()
def duplicates(
    ctx: typer.Context,
    threshold: float = typer.Option(
        config.DEFAULT_DUPLICATE_THRESHOLD, min=0.0, max=1.0, help="Cosine similarity at which two photos count as copies."
    ),
    preview: bool = PreviewOption,
    as_json: bool = JsonOption,
) -> None:
    """Groups of near-identical photos, largest first, so you can pick which to keep (nothing is deleted)."""
    from clipdex import api

    groups = api.duplicates(library_of(ctx), threshold)
    if as_json:
        print_json(groups)
        return
    if not groups:
        say(f"no near-duplicates at threshold {threshold}")
    for n, group in enumerate(groups, 1):
        if preview and _previewer():
            console.print(f"group {n}: {len(group)} photos")
            for member in group:
                console.print(f"  {shown(member['path'])}  {member['size']} bytes, {member['width']}×{member['height']}",
                              soft_wrap=True)
                _previewer().draw(member["path"], member.get("time"))
            continue
        print_table(
            f"group {n}: {len(group)} photos", ["path", "size", "dimensions"],
            [(m["path"], m["size"], f"{m['width']}×{m['height']}") for m in group],
        )


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
    say(f"indexed {indexed['added']} sample photos into {result['library']} in {indexed['seconds']:.1f}s\n")
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


from clipdex.cli import live_commands, training_commands  # noqa: E402  (register their commands on `app`)

training_commands.register(app)
live_commands.register(app)


def main() -> None:
    """Console-script entry: a Ctrl-C ends with status 130 and no traceback."""
    # Pillow warns about images over ~89 MP; clipdex has already checked each one against its own cap.
    warnings.filterwarnings("ignore", message="Image size .* could be decompression bomb")
    try:
        app()
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
