"""The typer app. Each command parses its options, calls the library, and prints a table or --json."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperGroup

from clipdex.cli.output import console, err_console, print_json, print_table, progress_tasks, recall_rows
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError


class _Commands(TyperGroup):
    """Turns a ClipdexError from any command into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ClipdexError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    help="Search your photos by sentence: index a folder, then search it with text or an image.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
ModelOption = typer.Option(
    None, "--model", "-m", help="open_clip name, hf-hub:ID, a .safetensors checkpoint, or 'sample'."
)
PretrainedOption = typer.Option(
    None, "--pretrained", help=f"Pretrained tag or weights file (default: {config.DEFAULT_PRETRAINED} for "
    f"{config.DEFAULT_MODEL}, none otherwise)."
)
DeviceOption = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")
PrecisionOption = typer.Option(
    "fp32", "--precision", help="fp32, or bf16 (CPU/CUDA) / fp16 (CUDA): faster, used only if it matches fp32."
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
        "remembered by the library.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the libraries' own log messages."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, force=True)
    ctx.obj = {"library": library or config.default_library_dir(), "database": database}


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        err_console.print(f"note: {note}", highlight=False)


def _model_choice(model: Optional[str], pretrained: Optional[str]) -> tuple[str, Optional[str]]:
    from clipdex.retrieval.factory import default_pretrained

    name = model or config.DEFAULT_MODEL
    return name, pretrained if pretrained is not None else default_pretrained(name)


def _library(ctx: typer.Context, create: bool = False):
    from clipdex.retrieval.library import Library

    return Library(ctx.obj["library"], ctx.obj["database"], create=create)


def _print_hits(hits, as_json: bool, title: str) -> None:
    if as_json:
        print_json([hit.as_json() for hit in hits])
    elif not hits:
        err_console.print("no results")
    else:
        label = "path" if hits[0].kind == "image" else "caption"
        print_table(title, ["#", "score", label], [(n, hit.score, hit.text) for n, hit in enumerate(hits, 1)])


def _engine(name: str, encoder, batch_size: int, ray_address: Optional[str]):
    """None means the pipeline's default local engine."""
    if name == "local":
        return None
    if name == "ray":
        from clipdex.indexer.ray_engine import RayEngine

        return RayEngine(encoder, batch_size, ray_address)
    raise ClipdexError(f"unknown engine {name!r}: use local or ray")


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
        None, "--index-type", help="auto (flat, then IVF past 100k items), flat (exact) or ivf; remembered."
    ),
    engine: str = typer.Option("local", "--engine", help="local (decode workers + one encoder) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (default: start a local one)."),
    as_json: bool = JsonOption,
) -> None:
    """Embed new and changed images under PATHS; moved files keep their vectors, deleted ones leave.

    Unreadable files are skipped and reported, never fatal; Ctrl-C keeps every batch already written."""
    from clipdex.indexer.pipeline import IndexReport, index_folders
    from clipdex.indexer.reembed import reembed_library
    from clipdex.retrieval.factory import load_encoder

    if not paths and not reembed:
        raise ClipdexError("give one or more folders to index (or --reembed --model M)")
    if reembed and model is None:
        raise ClipdexError("--reembed needs --model: the model to re-embed the library with")
    library = _library(ctx, create=True)
    if index_type is not None:
        library.set_index_preference(index_type)
    if model is None and library.identity is not None:
        encoder = library.encoder(device, precision)
    else:
        encoder = load_encoder(*_model_choice(model, pretrained), device)
        encoder.set_precision(precision)
    _print_notes(encoder.notes)
    summary: dict = {}
    with library.writer(), progress_tasks(enabled=not as_json) as start:
        bound = library.identity
        if reembed and bound is not None and (bound.fingerprint, bound.dim) != (
            encoder.identity.fingerprint, encoder.identity.dim
        ):
            done = reembed_library(library, encoder, batch_size, workers, progress=start)
            summary["reembedded"] = {"images": done.images, "captions": done.captions}
            _print_notes(done.notes)
        report = (
            index_folders(
                library, paths, encoder, exclude=exclude, include_hidden=hidden, batch_size=batch_size,
                workers=workers, progress=start, engine=_engine(engine, encoder, batch_size, ray_address),
            )
            if paths
            else IndexReport()
        )
    if as_json:
        print_json({**report.as_json(), **summary})
    else:
        if summary:
            err_console.print(
                f"re-embedded {summary['reembedded']['images']} images and {summary['reembedded']['captions']} "
                f"captions with {encoder.identity.describe()}"
            )
        err_console.print(
            f"added {report.added}, updated {report.updated}, moved {report.moved}, removed {report.removed}, "
            f"unchanged {report.unchanged}, failed {len(report.failed)} in {report.seconds:.1f}s"
        )
        for failure in report.failed:
            err_console.print(f"  skipped {failure['path']}: {failure['error']}", highlight=False)
    _print_notes(report.notes)
    if report.interrupted:
        err_console.print("interrupted: every batch written before Ctrl-C is kept; run index again to finish")
        raise typer.Exit(130)
    if strict and report.failed:
        raise typer.Exit(1)


def _date(value: Optional[str], option: str) -> Optional[float]:
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
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
    top_k: int = typer.Option(config.DEFAULT_TOP_K, "--top-k", "-k", help="How many results."),
    folder: Optional[Path] = typer.Option(None, "--in", help="Only images under this folder."),
    after: Optional[str] = typer.Option(None, "--after", help="Only photos taken on or after this date."),
    before: Optional[str] = typer.Option(None, "--before", help="Only photos taken before this date."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Only results scoring at least this."),
    paths_only: bool = typer.Option(False, "--paths-only", "-f", help="Print one path a line, nothing else."),
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    as_json: bool = JsonOption,
) -> None:
    """Images ranked by similarity to a sentence (text→image), an image (image→image), or a mix of both."""
    from clipdex.retrieval.query import Filters, QueryEngine
    from clipdex.retrieval.terms import Term, parse_terms

    parsed = parse_terms(terms) if terms else []
    if image is not None:
        parsed.append(Term(str(image), True, 1.0))
    if not parsed:
        raise ClipdexError("give TEXT, or --image FILE, or both")
    filters = Filters(
        str(folder) if folder else None, _date(after, "--after"), _date(before, "--before"), min_score
    )
    engine = QueryEngine(_library(ctx), device, precision)
    hits = engine.search(parsed, top_k, filters)
    _print_notes(engine.notes)
    if paths_only:
        sys.stdout.write("".join(hit.text + "\n" for hit in hits))
        return
    _print_hits(hits, as_json, "images like " + " ".join(terms or []) + (f" {image}" if image else ""))


@app.command()
def captions(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="The image to describe."),
    top_k: int = typer.Option(config.DEFAULT_TOP_K, "--top-k", "-k", help="How many captions."),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Captions from the library's corpus ranked by how well they describe IMAGE (image→text)."""
    from clipdex.retrieval.query import QueryEngine

    hits = QueryEngine(_library(ctx), device).captions(image, top_k)
    _print_hits(hits, as_json, f"captions for {image}")


@app.command("add-captions")
def add_captions_command(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help=".txt (one caption a line), or .csv/.jsonl with a `caption` field."),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Add captions to the corpus that `clipdex captions` ranks."""
    from clipdex.retrieval.captions import add_captions
    from clipdex.retrieval.pairs import read_captions

    texts = read_captions(file)
    library = _library(ctx)
    with library.writer():
        added, present = add_captions(library, library.encoder(device), texts)
    if as_json:
        print_json({"added": added, "already_present": present})
    else:
        err_console.print(f"added {added} captions ({present} already present)")


def status_info(library) -> dict:
    """What `status --json` and the HTTP API's /api/status report."""
    from clipdex.retrieval.onnx_text import export_paths
    from clipdex.retrieval.store import IMAGE

    identity = library.identity
    index = library.vector_index(IMAGE) if identity else None
    export = export_paths(identity)[0] if identity else None
    sqlite = library.store.engine.dialect.name == "sqlite"
    return {
        "library": str(library.root),
        "database": str(library.root / config.DATABASE_FILE) if sqlite else library.store.engine.url.render_as_string(),
        "model": identity.describe() if identity else None,
        "dim": identity.dim if identity else None,
        "counts": library.store.counts(),
        "index": {
            "type": index.describe() if index else None,
            "kind": index.kind if index else None,
            "preference": library.index_preference,
            "gpu": bool(index and index.on_gpu),
        },
        "text_export": str(export) if export and export.is_file() else None,
    }


@app.command()
def status(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """What the library holds and which model it is bound to."""
    library = _library(ctx)
    info = status_info(library)
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
            ("images", counts["image"]),
            ("captions", counts["caption"]),
            ("failed files", counts["failed"]),
            ("index", f"{info['index']['type']} (choice: {info['index']['preference']})"),
            ("fast text queries", "yes (exported text tower)" if info["text_export"] else "no: loads torch"),
        ],
    )


@app.command()
def duplicates(
    ctx: typer.Context,
    threshold: float = typer.Option(0.95, min=0.0, max=1.0, help="Cosine similarity at which two photos count as copies."),
    as_json: bool = JsonOption,
) -> None:
    """Groups of near-identical photos, largest first, so you can pick which to keep (nothing is deleted)."""
    from clipdex.retrieval.duplicates import duplicate_groups

    groups = duplicate_groups(_library(ctx), threshold)
    if as_json:
        print_json(groups)
        return
    if not groups:
        err_console.print(f"no near-duplicates at threshold {threshold}")
    for n, group in enumerate(groups, 1):
        print_table(
            f"group {n}: {len(group)} photos", ["path", "size", "dimensions"],
            [(m["path"], m["size"], f"{m['width']}×{m['height']}") for m in group],
        )


@app.command()
def finetune(
    pairs: Path = typer.Argument(
        ..., help="Pairs file: CSV `image,caption[,group]` or JSONL; paths relative to it. Pairs sharing a group "
        "train in one batch.",
    ),
    out: Path = typer.Option(Path("finetuned.safetensors"), "--out", "-o", help="Checkpoint to write."),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    epochs: int = typer.Option(1, min=1, help="Passes over the training pairs."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after this many optimizer steps."),
    batch_size: int = typer.Option(64, min=2, help="Pairs per micro-batch (the contrastive negatives)."),
    accum_steps: int = typer.Option(1, min=1, help="Micro-batches accumulated per optimizer step."),
    lr: float = typer.Option(1e-5, help="Peak learning rate (use ~1e-3 when training from scratch)."),
    weight_decay: float = typer.Option(0.2, help="AdamW weight decay on matrices (not biases, norms, embeddings)."),
    warmup: int = typer.Option(100, min=0, help="Linear warmup steps before the cosine decay."),
    lock_image: bool = typer.Option(False, help="Freeze the image tower."),
    lock_text: bool = typer.Option(False, help="Freeze the text tower."),
    val_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="Share of images held out for recall."),
    seed: int = typer.Option(0, help="Seed for the split, the data order and initialisation."),
    resume: Optional[Path] = typer.Option(None, help="Continue from a checkpoint written by finetune."),
    half: bool = typer.Option(False, help="Store fp16 weights and no optimizer state (for distribution)."),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Train the dual encoder on your image–caption pairs with the CLIP contrastive loss."""
    from clipdex.retrieval.pairs import read_pairs
    from clipdex.retrieval.training.finetune import FinetuneOptions, finetune as run_finetune

    name, tag = _model_choice(model, pretrained)
    options = FinetuneOptions(
        model=name, pretrained=tag, out=out, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        accum_steps=accum_steps, lr=lr, weight_decay=weight_decay, warmup=warmup, lock_image=lock_image,
        lock_text=lock_text, seed=seed, val_fraction=val_fraction, resume=resume, device=device, half=half,
    )
    loaded = read_pairs(pairs)
    with progress_tasks(enabled=not as_json) as start:
        bar: list = []

        def on_step(step: int, total: int, loss: float) -> None:
            if not bar:
                bar.append(start("training", total))
            bar[0](1, f"loss {loss:.3f}")

        result = run_finetune(loaded, options, on_step=on_step)
    if as_json:
        print_json({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()})
        return
    err_console.print(
        f"{result.steps} steps on {result.train_pairs} pairs in {result.seconds:.0f}s; "
        f"loss {result.first_loss:.3f} → {result.final_loss:.3f}; wrote {result.checkpoint}"
    )
    if result.before and result.after:
        print_table(
            f"held-out recall ({result.val_pairs} pairs)",
            ["", "R@1", "R@5", "R@10"],
            recall_rows(result.before, "before: ") + recall_rows(result.after, "after:  "),
        )
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


@app.command("eval")
def eval_command(
    pairs: Path = typer.Argument(..., help="Pairs file: CSV `image,caption` or JSONL; several captions per image."),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Recall@1/5/10 in both directions, as the CLIP retrieval benchmarks compute it."""
    from clipdex.retrieval.evaluate import evaluate_pairs
    from clipdex.retrieval.factory import load_encoder
    from clipdex.retrieval.pairs import read_pairs

    loaded = read_pairs(pairs)
    encoder = load_encoder(*_model_choice(model, pretrained), device)
    result = evaluate_pairs(encoder, loaded)
    if as_json:
        print_json({**result, "model": encoder.identity.describe()})
        return
    print_table(
        f"{encoder.identity.describe()}: {result['texts']} captions, {result['images']} images",
        ["", "R@1", "R@5", "R@10"],
        recall_rows(result),
    )


@app.command()
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; keep the default unless you mean to share."),
    port: int = typer.Option(8765, help="Port to listen on."),
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    token: Optional[str] = typer.Option(
        None, "--token", envvar=config.WEB_TOKEN_ENV, show_default=False,
        help="Access token every request must carry. Needed to listen beyond loopback: a new one is made at each "
        "start when none is given.",
    ),
    allow_host: Optional[list[str]] = typer.Option(
        None, "--allow-host", help="Another host name browsers use to reach this server (repeatable)."
    ),
    max_upload_pixels: int = typer.Option(
        config.WEB_MAX_UPLOAD_PIXELS, "--max-upload-pixels", min=1,
        help="Uploaded images declaring more pixels are refused before decoding.",
    ),
) -> None:
    """A local web page and HTTP JSON API over the library (OpenAPI schema at /openapi.json)."""
    import uvicorn
    from rich.markup import escape

    from clipdex.cli.web import create_app
    from clipdex.cli.web_security import base_url, is_loopback, names_for, new_token, sign_in_url

    if token is None and not is_loopback(host):
        token = new_token()
    library = _library(ctx)
    web_app = create_app(
        library, device, precision, allowed_hosts=names_for(host, allow_host or ()), token=token,
        max_upload_pixels=max_upload_pixels,
    )
    _print_notes(library.encoder(device, precision).notes)  # load now: the first query is as fast as the rest
    url = base_url(host, port)
    err_console.print(f"clipdex serving {library.root} on {url}", markup=False, highlight=False)
    if not is_loopback(host):
        err_console.print(
            f"[yellow]warning:[/yellow] listening on {escape(host)}: anyone with the sign-in link or token sees "
            "your photos"
        )
    if token is not None:
        err_console.print(f"sign in (once per browser): {sign_in_url(url, token)}", markup=False, highlight=False,
                          soft_wrap=True)
    uvicorn.run(web_app, host=host, port=port, log_level="warning")


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the demo library (default: user cache)."),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Offline tour on the bundled sample model: index sample_data/, search, describe, measure recall."""
    from clipdex.cli.demo import default_demo_dir, run_demo

    folder = out or default_demo_dir()
    with progress_tasks(enabled=not as_json) as start:
        result = run_demo(folder, device, start)
    if as_json:
        print_json(result)
        return
    indexed = result["indexed"]
    console.print(
        f"[bold]clipdex demo[/bold] — model {result['model']}\n"
        f"indexed {indexed['added']} sample photos into {result['library']} in {indexed['seconds']:.1f}s\n"
    )
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


def main() -> None:
    """Console-script entry: a Ctrl-C ends with status 130 and no traceback."""
    # Pillow warns about images over ~89 MP; clipdex has already checked each one against its own cap.
    warnings.filterwarnings("ignore", message="Image size .* could be decompression bomb")
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
