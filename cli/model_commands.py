"""`clipdex models`: the model folders clipdex recommends, fetching one ahead of time, freeing one's space."""

from __future__ import annotations

import typer

from clipdex.cli.options import JsonOption, library_of
from clipdex.cli.output import print_json, print_table, progress_tasks, say
from clipdex.retrieval.errors import ClipdexError

models_app = typer.Typer(
    help="The recommended model folders: size, languages, quality, speed here, whether cached and in use.",
    invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None,
)


def _bound(ctx: typer.Context):
    """The current library's model, when there is a library (this command never makes one)."""
    try:
        return library_of(ctx).identity
    except ClipdexError:
        return None


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


@models_app.callback()
def models_list(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List the catalogue (`clipdex models pull NAME` fetches one; `--model NAME` indexes with it)."""
    if ctx.invoked_subcommand is not None:
        return
    from clipdex import api

    rows = api.models(_bound(ctx))
    if as_json:
        print_json(rows)
        return
    print_table(
        "model folders (recall@1 in %, as published; speed on this project's 2-core CPU, fp32)",
        ["name", "MB", "languages", "COCO", "XM3600 en", "images/s", "query ms", "here"],
        [[("* " if row["default"] else "") + row["name"], str(row["size_mb"]),
          "en" if row["languages"] == ["en"] else f"{len(row['languages'])}+", _figure(row["quality"].get("COCO T→I R@1")),
          _figure(row["quality"].get("XM3600 en")), _figure(row["images_per_second"]), _figure(row["query_ms"]),
          ", ".join(w for w, on in (("in use", row["in_use"]), ("cached", row["cached"])) if on) or "–"]
         for row in rows],
    )
    say("* the default (--model default). Sources: open_clip's result tables, Immich's XM3600 table, the SigLIP 2 "
        "README; speed from bench/model_speed.py; hub ids and every figure: --json. Any other hub folder works too: "
        "--model ORG/NAME")


@models_app.command("pull")
def pull(name: str = typer.Argument(..., help="A name from `clipdex models`, or a hub ORG/NAME."),
         as_json: bool = JsonOption) -> None:
    """Fetch a model folder now (to copy it to a machine without network, or to index later offline)."""
    from clipdex import api

    with progress_tasks(enabled=not as_json) as start:
        done = api.pull_model(name, start)
    if as_json:
        print_json(done)
    else:
        say(f"{done['hub_id']} at {done['revision'][:12]} is in {done['folder']}")


@models_app.command("rm")
def remove(ctx: typer.Context, name: str = typer.Argument(..., help="A name from `clipdex models`, or a hub ORG/NAME."),
           force: bool = typer.Option(False, "--force", help="Remove it even when the library is bound to it."),
           as_json: bool = JsonOption) -> None:
    """Free the space of a cached model folder (refused for the library's own model unless --force)."""
    from clipdex import api

    done = api.remove_model(name, _bound(ctx), force)
    if as_json:
        print_json(done)
    else:
        say(f"removed {done['hub_id']}: {done['freed_mb']:g} MB freed")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
