"""The commands that report on the library as a whole: status (and its failed files), duplicates."""

from __future__ import annotations

import typer

from clipdex.cli.options import JsonOption, PreviewOption, asked, library_of
from clipdex.cli.output import console, human_size, print_json, print_table, say, shown
from clipdex.retrieval import config


def status(
    ctx: typer.Context,
    failed: bool = typer.Option(False, "--failed", help="List the files that could not be indexed, with why."),
    as_json: bool = JsonOption,
) -> None:
    """What the library holds and which model it is bound to."""
    from clipdex import api

    info = api.status(library_of(ctx), failed=failed)
    if as_json:
        print_json(info)
        return
    if failed:
        if not info["failed"]:
            say("no failed files")
        for failure in info["failed"]:
            console.print(f"{shown(failure['path'])}: {shown(failure['error'])}", soft_wrap=True)
        return
    counts = info["counts"]
    failures = counts["failed"]
    print_table("clipdex library", [], [
            ("library", info["library"]),
            ("model", info["model"] or "(none yet)"),
            ("photos", counts["image"]),
            ("videos", f"{counts['video']} ({counts['frame']} frames embedded)" if counts["video"] else 0),
            ("captions", counts["caption"]),
            ("failed files", f"{failures} (clipdex status --failed lists them)" if failures else 0),
            ("index", f"{info['index']['type']} (choice: {info['index']['preference']})"),
            ("model prepared", "yes: runs without torch" if info["prepared"] else info["unprepared_because"]),
            ("model folder", info["model_folder"] or "none yet"),
            ("text in photos (OCR)", _ocr_line(info["ocr"])),
        ])


def _ocr_line(ocr: dict) -> str:
    if not ocr["enabled"]:
        return "off (index --ocr to read it)"
    unread = f", {ocr['unread']} not read yet" if ocr["unread"] else ""
    return f"on: {ocr['with_text']} images hold text, {ocr['without_text']} none{unread}"


def duplicates(
    ctx: typer.Context,
    threshold: float = typer.Option(
        config.DEFAULT_DUPLICATE_THRESHOLD, min=0.0, max=1.0,
        help="Cosine similarity at which two photos are compared on their pixels as possible copies.",
    ),
    preview: bool = PreviewOption,
    as_json: bool = JsonOption,
) -> None:
    """Groups of near-identical photos, largest first, so you can pick which to keep (nothing is deleted).

    Photos that embed alike are copies only when their pixels agree (crops, resizes and re-encodes do; two
    screenshots of different documents do not)."""
    groups = asked(ctx, "duplicates", {"threshold": threshold}, list)
    if groups is None:
        from clipdex import api

        groups = api.duplicates(library_of(ctx), threshold)
    if as_json:
        print_json(groups)
        return
    if not groups:
        say(f"no near-duplicates at threshold {threshold}")
    for n, group in enumerate(groups, 1):
        from clipdex.cli.preview import terminal_previewer

        if preview and terminal_previewer():
            console.print(f"group {n}: {len(group)} photos")
            for member in group:
                console.print(f"  {shown(member['path'])}  {human_size(member['size'])}, {_dimensions(member)}"
                              f"  {_keep_or_similarity(member)}", soft_wrap=True)
                terminal_previewer().draw(member["path"], member.get("time"))
            continue
        print_table(
            f"group {n}: {len(group)} photos", ["path", "size", "dimensions", "suggestion"],
            [(m["path"], human_size(m["size"]), _dimensions(m), _keep_or_similarity(m)) for m in group],
        )


def _dimensions(member: dict) -> str:
    return f"{member['width']}×{member['height']}" if member["width"] and member["height"] else "unknown"


def _keep_or_similarity(member: dict) -> str:
    if member["keep"]:
        return f"keep: {member['reason']}"
    similarity = member["similarity"]
    return (f"a copy (similarity {similarity:.3f} to the one kept)" if similarity is not None
            else "a copy of another copy in this group")


def places(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Where the library's photos were taken (from their GPS positions, named offline from GeoNames), by country
    then city, with how many files each; `clipdex search "... in CITY"` finds them there."""
    held = library_of(ctx).store.places()
    if as_json:
        print_json([{"country": country, "region": region or None, "city": city, "count": count}
                    for country, region, city, count, _ in held])
    elif not held:
        say("no photo holds a GPS position yet (`clipdex index` reads them from each photo or its XMP sidecar)")
    else:
        print_table("places", ["country", "region", "city", "files"], [list(row[:4]) for row in held])


def register(app: typer.Typer) -> None:
    app.command("places")(places)
    app.command("status")(status)
    app.command("duplicates")(duplicates)
