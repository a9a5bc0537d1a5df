"""`clipdex finetune` and `clipdex eval`: training and measuring the dual encoder on image–caption pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clipdex.cli.options import DeviceOption, JsonOption, ModelOption, PretrainedOption, library_of, sigterm_stops
from clipdex.cli.output import (
    print_error, print_json, print_table, print_warning, progress_tasks, recall_rows, say,
)
from clipdex.retrieval.training.options import FinetuneOptions

DEFAULTS = FinetuneOptions()


def finetune(
    ctx: typer.Context,
    pairs: Path = typer.Argument(
        ..., help="Pairs file: CSV `image,caption[,group]` or JSONL; paths relative to it. Pairs sharing a group "
        "train in one batch.",
    ),
    out: Path = typer.Option(DEFAULTS.out, "--out", "-o", help="Checkpoint to write."),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    epochs: int = typer.Option(DEFAULTS.epochs, min=1, help="Passes over the training pairs."),
    max_steps: Optional[int] = typer.Option(DEFAULTS.max_steps, min=1, help="Stop after this many optimizer steps."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, min=2, help="Pairs per micro-batch (the contrastive negatives)."),
    accum_steps: int = typer.Option(DEFAULTS.accum_steps, min=1, help="Micro-batches accumulated per optimizer step."),
    lr: float = typer.Option(DEFAULTS.lr, help="Peak learning rate (use ~1e-3 when training from scratch)."),
    weight_decay: float = typer.Option(
        DEFAULTS.weight_decay, help="AdamW weight decay on matrices (not biases, norms, embeddings)."
    ),
    warmup: int = typer.Option(DEFAULTS.warmup, min=0, help="Linear warmup steps before the cosine decay."),
    lock_image: bool = typer.Option(DEFAULTS.lock_image, help="Freeze the image tower."),
    lock_text: bool = typer.Option(DEFAULTS.lock_text, help="Freeze the text tower."),
    val_fraction: float = typer.Option(DEFAULTS.val_fraction, min=0.0, max=0.9, help="Share of images held out for recall."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed for the split, the data order and initialisation."),
    resume: Optional[Path] = typer.Option(None, help="Continue from a checkpoint written by finetune."),
    half: bool = typer.Option(DEFAULTS.half, help="Store fp16 weights and no optimizer state (for distribution)."),
    eval_every: Optional[int] = typer.Option(
        DEFAULTS.eval_every, min=1, help="Also measure held-out recall every N steps (every epoch always is)."
    ),
    keep: str = typer.Option(
        DEFAULTS.keep, help="Which weights to write: 'best' (epoch with the highest mean held-out R@1) or 'last'."
    ),
    patience: Optional[int] = typer.Option(
        DEFAULTS.patience, min=1, help="Stop after this many epochs without a better held-out R@1."
    ),
    mix: Optional[float] = typer.Option(
        DEFAULTS.mix, min=0.0, max=1.0,
        help="Write (1-MIX)*start + MIX*fine-tuned weights (WiSE-FT): lower keeps more of what the model knew.",
    ),
    keep_pairs: Optional[Path] = typer.Option(
        DEFAULTS.keep_pairs, help="Pairs whose recall should not be lost (e.g. another domain), reported per mix."
    ),
    report: Optional[Path] = typer.Option(
        DEFAULTS.report, help="Write an HTML report: curves, recall tables, retrieval examples before/after."
    ),
    workers: int = typer.Option(DEFAULTS.workers, min=0, help="Image decoding processes (0: decode in this one)."),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Train the dual encoder on your image–caption pairs with the CLIP contrastive loss; keeps the best epoch by
    held-out recall, logs every step beside the checkpoint (.metrics.jsonl), and Ctrl-C leaves a checkpoint to
    --resume from."""
    from clipdex import api
    from clipdex.retrieval import config

    name = model or config.OPENCLIP_DEFAULT_MODEL
    options = FinetuneOptions(
        model=name, pretrained=config.pretrained_for(name, pretrained), out=out,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, accum_steps=accum_steps, lr=lr,
        weight_decay=weight_decay, warmup=warmup, lock_image=lock_image, lock_text=lock_text, seed=seed,
        val_fraction=val_fraction, resume=resume, device=device, half=half, eval_every=eval_every, keep=keep,
        patience=patience, mix=mix, keep_pairs=keep_pairs, report=report, workers=workers,
    )
    with progress_tasks(enabled=not as_json) as start:
        bar: list = []

        def on_event(event: dict) -> None:
            if event["event"] == "step":
                if not bar:
                    bar.append(start("training", event["total"]))
                    bar[0](event["step"] - 1)  # a resumed run starts where it stopped
                bar[0](1, f"loss {event['loss']:.3f}  lr {event['lr']:.2e}")
            elif not as_json:
                r1 = event["recall"]
                say(f"{'epoch' if event['event'] == 'epoch' else 'step'} {event['epoch']:g} "
                    f"(step {event['step']}): held-out R@1 text→image {r1['text_to_image']['R@1']:.3f}, "
                    f"image→text {r1['image_to_text']['R@1']:.3f}" + ("  best so far" if event.get("best") else ""))

        result = api.finetune(pairs, options, on_event=on_event)
    if result.interrupted:
        print_error(
            f"interrupted after step {result.steps}; resume with: clipdex finetune {pairs} --resume {result.resume} "
            f"--out {result.checkpoint} (and the same options)"
        )
        raise typer.Exit(130)
    if as_json:
        print_json({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()})
        return
    kept = f"best epoch {result.best_epoch:g}" if result.best_epoch is not None else "last step"
    say(f"{result.steps} steps on {result.train_pairs} pairs in {result.seconds:.0f}s"
        f"{' (stopped early)' if result.stopped_early else ''}; loss {result.first_loss:.3f} → "
        f"{result.final_loss:.3f}; wrote {result.checkpoint} ({kept}"
        f"{f', mixed {mix:g}' if mix is not None else ''}); log {result.metrics}")
    if result.before and result.after:
        print_table(
            f"held-out recall ({result.val_pairs} pairs)",
            ["", "R@1", "R@5", "R@10"],
            recall_rows(result.before, "before: ") + recall_rows(result.after, "after:  "),
        )
    if result.mix_table:
        print_table(
            "mean R@1 by mixing weight (1-a)*start + a*fine-tuned",
            ["a", "held-out", "keep set"],
            [[f"{row['alpha']:g}", *(_mean_r1(row[part]) for part in ("held_out", "keep"))] for row in result.mix_table],
        )
    for warning in result.warnings:
        print_warning(warning)
    if result.report:
        say(f"report: {result.report.resolve().as_uri()}")


def _mean_r1(recall: dict | None) -> str:
    if not recall:
        return "-"
    return f"{(recall['text_to_image']['R@1'] + recall['image_to_text']['R@1']) / 2:.3f}"


def eval_command(
    ctx: typer.Context,
    pairs: Path = typer.Argument(..., help="Pairs file: CSV `image,caption` or JSONL; several captions per image."),
    model: Optional[str] = ModelOption,
    pretrained: Optional[str] = PretrainedOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Recall@1/5/10 in both directions, as the CLIP retrieval benchmarks compute it (with --model, else the
    library's model, else the default)."""
    from clipdex import api
    from clipdex.retrieval.errors import ClipdexError

    try:
        library = library_of(ctx) if model is None else None
    except ClipdexError:  # no library yet: the default model
        library = None
    result = api.evaluate(pairs, library, model, pretrained, device)
    if as_json:
        print_json(result)
        return
    print_table(
        f"{result['model']}: {result['texts']} captions, {result['images']} images",
        ["", "R@1", "R@5", "R@10"],
        recall_rows(result),
    )


def export_model(
    model: str = typer.Argument(..., help="open_clip name, a .safetensors checkpoint, or 'sample'."),
    out: Path = typer.Argument(..., help="The model folder to write (must not exist yet)."),
    pretrained: Optional[str] = PretrainedOption,
    precision: str = typer.Option("fp32", help="fp32, or int8 weights for the image tower."),
    fp16_weights: bool = typer.Option(False, help="Store weights as fp16 (for weights that are fp16 already)."),
    as_json: bool = JsonOption,
) -> None:
    """Write a model as a self-describing ONNX folder (Immich's layout), to run anywhere with no torch:
    `clipdex index --model OUT`. Needs the torch extra."""
    from clipdex import api

    with sigterm_stops():  # (a SIGTERM half-way leaves no partial OUT: nothing is renamed into place)
        result = api.export_model(model, out, pretrained, precision, fp16_weights)
    if as_json:
        print_json(result)
        return
    say(f"wrote {result['folder']} from {result['model']} ({'; '.join(result['kept'])})")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.command("eval")(eval_command)
    app.command("export-model")(export_model)
