"""The commands that describe photos and keep what describes them: captions (image → text), the caption corpus,
tags, XMP sidecars."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from clipdex.cli.options import DeviceOption, JsonOption, PreviewOption, asked, library_of
from clipdex.cli.output import (
    print_hits, print_json, print_notes, print_table, print_warning, progress_tasks, say,
)
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError


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
    from clipdex.retrieval.search.hits import Hits

    if source not in config.CAPTION_SOURCES:
        raise typer.BadParameter(f"one of {', '.join(config.CAPTION_SOURCES)}", param_hint="--from")
    hits = None
    if image.is_file():  # (else this process says what is wrong)
        request = {"image": os.path.abspath(image), "k": top_k, "source": source, "device": device}
        hits = asked(ctx, "captions", request, Hits.from_wire)
    if hits is None:
        from clipdex import api

        with progress_tasks(enabled=not as_json) as start:
            hits = api.captions(library_of(ctx), image, top_k, device, source, start)
    print_notes(hits.notes)
    if preview and not as_json:
        from clipdex.cli.preview import terminal_previewer
        from clipdex.retrieval.media.video import is_video

        if terminal_previewer():
            terminal_previewer().draw(image, 0.0 if is_video(image.name) else None)
    print_hits(hits, as_json, f"captions for {image}")


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
        for change in report.changed:
            added = ", ".join(change.keywords) + (" + description" if change.description else "")
            say(f"{'create' if change.created else 'update'} {change.sidecar}: {added}")
        created = sum(change.created for change in report.changed)
        updated = len(report.changed) - created
        counts = f"{created} sidecar{'' if created == 1 else 's'}, updated {updated}"
        say(f"{'would create' if dry_run else 'created'} {counts if not dry_run else counts.replace('updated', 'update')}"
            f"; {report.unchanged} already had everything; {len(report.failed)} failed")
        for failure in report.failed:
            print_warning(f"{failure['path']}: {failure['error']}")
    if report.failed:
        raise typer.Exit(1)


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


def register(app: typer.Typer) -> None:
    app.command("captions")(captions)
    app.command("tags")(tags_command)
    app.command("export-xmp")(export_xmp_command)
    app.command("add-captions")(add_captions_command)
    app.command("remove-captions")(remove_captions_command)
