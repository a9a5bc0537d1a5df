"""The commands that keep running: `clipdex serve` (the web page and HTTP API) and `clipdex watch`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import typer

from clipdex.cli.options import (
    DeviceOption, JsonOption, ModelOption, PrecisionOption, PretrainedOption, library_of, sigterm_stops,
)
from clipdex.cli.output import print_error, print_json, print_notes, print_warning, say
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError


def watch(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Folders to keep indexed."),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    settle: float = typer.Option(
        config.WATCH_SETTLE_SECONDS, min=0.05, max=3600,
        help="Index a batch once the folders were quiet this many seconds.",
    ),
    ocr: bool = typer.Option(False, "--ocr", help="Also read the text in images (remembered, as with index)."),
    export: bool = typer.Option(True, "--export/--no-export", help="Export the text tower when catching up."),
    keep_alive: float = typer.Option(
        config.KEEP_ALIVE_SECONDS, "--keep-alive", min=0, envvar=config.KEEP_ALIVE_ENV,
        help="Seconds the text model and index stay loaded after a query it answered for the CLI.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Catch up with PATHS (an incremental index), then keep the library in sync as files appear, change, move
    or disappear, until Ctrl-C or SIGTERM; every batch committed before stopping is kept. While watching it also
    answers the CLI's search, captions and duplicates for this library (no model to load in each)."""
    from clipdex import live
    from clipdex.indexer.options import IndexOptions

    library = library_of(ctx, create=True)
    answering = []

    def on_watching() -> None:  # (the library is bound by now: a new one by the catch-up)
        answering.append(_answer_queries(library_of(ctx), device, "fp32", None, keep_alive))
        say("watching")

    def on_batch(folders: list[str], report) -> None:
        if not as_json:
            say(f"{', '.join(folders)}: added {report.added}, updated {report.updated}, moved {report.moved}, "
                f"removed {report.removed}, failed {len(report.failed)}")
            for failure in report.failed:
                say(f"  skipped {failure['path']}: {failure['error']}")

    with sigterm_stops():
        say(f"catching up with {', '.join(map(str, paths))} (Ctrl-C stops)")
        try:
            options = IndexOptions(model=model, pretrained=pretrained, device=device, precision=precision, ocr=ocr,
                                   export_text=export)
            totals = live.watch(library, paths, on_batch=on_batch, on_watching=on_watching, settle=settle,
                                options=options)
        finally:
            for server in answering:
                server.close()
    if as_json:
        print_json(totals)
    if totals["interrupted"]:
        say("stopped: every batch written before is kept; run watch or index again to go on")
        raise typer.Exit(130)


def _answer_queries(library, device: str, precision: str, lock, keep_alive: float | None):
    """A QueryServer over `library`, listening (or, when it cannot, saying why: queries then run on their own)."""
    from clipdex.answering import QueryServer

    server = QueryServer(library, device, precision, lock, keep_alive)
    refused = server.start()
    if refused:
        say(refused)
    return server


def _watch_in_background(ctx: typer.Context, paths: list[Path], device: str, stop: threading.Event) -> None:
    """`serve --watch`: the watcher writes through its own handle on the library (its own writer lock, its own
    model, loaded while a batch needs it); the server's queries notice each commit by its generation."""
    from clipdex import live
    from clipdex.indexer.options import IndexOptions

    writer = library_of(ctx)  # loads the model when a batch needs it, and drops it after

    def run() -> None:
        try:
            live.watch(writer, paths, stop=stop, options=IndexOptions(device=device, export_text=False))
        except Exception as exc:  # the server goes on answering; the watcher says why it stopped
            print_error(f"watching stopped: {exc}")

    threading.Thread(target=run, name="clipdex-watch", daemon=True).start()
    say(f"watching {', '.join(map(str, paths))}")


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; keep the default unless you mean to share."),
    port: int = typer.Option(8765, help="Port to listen on."),
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    token: Optional[str] = typer.Option(
        None, "--token", envvar=config.WEB_TOKEN_ENV, show_default=False,
        help="Access token every request must carry (a bearer header, or the cookie the printed sign-in link "
        "sets); when none is given, the library's own, kept in its folder (web-token, readable by you alone).",
    ),
    rotate_token: bool = typer.Option(
        False, "--new-token", help="Make the library a new kept token: every browser signed in must sign in again.",
    ),
    no_token: bool = typer.Option(
        False, "--no-token", help="Serve without a token: only on loopback, and then every local user of this "
        "machine can see the photos.",
    ),
    allow_host: Optional[list[str]] = typer.Option(
        None, "--allow-host", help="Another host name browsers use to reach this server (repeatable)."
    ),
    max_upload_pixels: int = typer.Option(
        config.WEB_MAX_UPLOAD_PIXELS, "--max-upload-pixels", min=1,
        help="Uploaded images declaring more pixels are refused before decoding.",
    ),
    watch_paths: Optional[list[Path]] = typer.Option(
        None, "--watch", help="Also keep these folders indexed while serving, as `clipdex watch` does (repeatable).",
    ),
) -> None:
    """A local web page and HTTP JSON API over the library (OpenAPI schema at /openapi.json)."""
    from clipdex.cli import web_server
    from clipdex.cli.web import create_app
    from clipdex.cli.web_security import base_url, is_loopback, kept_token, names_for, sign_in_url

    if no_token and not is_loopback(host):
        raise ClipdexError(f"--no-token is for loopback only: listening on {host} needs a token")
    library = library_of(ctx)
    if token is None and not no_token:
        token = kept_token(library.root, rotate=rotate_token)
    web_app = create_app(
        library, device, precision, allowed_hosts=names_for(host, allow_host or ()), token=token,
        max_upload_pixels=max_upload_pixels,
    )
    print_notes(library.text_encoder(device, precision).notes)  # load now: the first query is as fast as the rest
    url = base_url(host, port)
    say(f"clipdex serving {library.root} on {url}")
    if not is_loopback(host):
        print_warning(f"listening on {host}: anyone with the sign-in link or token sees your photos")
    if token is None:
        print_warning("serving without a token: every local user of this machine can see your photos")
    else:
        say(f"sign in (once per browser; `--new-token` makes a new one): {sign_in_url(url, token)}")
    stop = threading.Event()
    if watch_paths:
        _watch_in_background(ctx, watch_paths, device, stop)
    answering = _answer_queries(library, device, precision, web_app.state.served.lock, None)
    try:
        web_server.run(web_app, host, port)
    finally:
        stop.set()
        answering.close()




def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(watch)
