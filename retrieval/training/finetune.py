"""Fine-tune (or train from scratch) a dual encoder on image–caption pairs with the CLIP contrastive loss.

Held-out recall is measured before, after every epoch and at the end, so a run keeps its best epoch rather than
its last, can stop when it stops improving, and says so when training hurt retrieval. Every step is logged;
Ctrl-C leaves a checkpoint to resume from; the result can be mixed back towards the start weights (mixing.py).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from clipdex.retrieval.models.checkpoint import (
    CheckpointInfo, load_optimizer_state, load_weights, optimizer_path, read_checkpoint_info, save_checkpoint,
)
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.training.evaluate import PairVectors, embed_pairs
from clipdex.retrieval.describe.pairs import Pair, read_pairs
from clipdex.retrieval.training.data import PairImages, epoch_batches, split_pairs
from clipdex.retrieval.training.metrics_log import MetricsLog, metrics_path
from clipdex.retrieval.training.mixing import mix_weights
from clipdex.retrieval.training.options import KEEP_CHOICES, MIX_TABLE, FinetuneOptions
from clipdex.retrieval.training.schedule import cosine_lr, make_optimizer

LOGIT_SCALE_MAX = math.log(100)  # open_clip's clamp: temperature never below 0.01


def resume_path(checkpoint: Path) -> Path:
    """Where an interrupted run leaves the state to resume from (the checkpoint itself holds the best epoch)."""
    return checkpoint.with_name(checkpoint.stem + ".resume" + checkpoint.suffix)


def mean_r1(recall: dict) -> float:
    """The one number epochs are compared by: R@1 averaged over both directions."""
    return (recall["text_to_image"]["R@1"] + recall["image_to_text"]["R@1"]) / 2


@dataclass
class FinetuneResult:
    checkpoint: Path
    steps: int
    train_pairs: int
    val_pairs: int
    first_loss: float
    final_loss: float
    before: dict | None
    after: dict | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)  # held-out recall after each epoch
    best_epoch: int | None = None
    stopped_early: bool = False
    mix_table: list[dict] = field(default_factory=list)  # recall at each mixing weight, held-out and keep set
    metrics: Path | None = None
    report: Path | None = None
    interrupted: bool = False  # Ctrl-C: `resume` holds the last finished step
    resume: Path | None = None


class _StopRequest:
    """Ctrl-C and SIGTERM ask the loop to stop after the step in progress (handlers only while training, only
    when called from the main thread; data-loader workers forked meanwhile inherit them and keep going)."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, _signum, _frame) -> None:
        self.requested = True


def _lock(model: torch.nn.Module, image: bool, text: bool) -> None:
    for name, param in model.named_parameters():
        is_image = name.startswith("visual.")
        if (image and is_image) or (text and not is_image and name != "logit_scale"):
            param.requires_grad_(False)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _check(options: FinetuneOptions) -> None:
    if options.keep not in KEEP_CHOICES:
        raise ClipdexError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, not {options.keep!r}")
    if options.mix is not None and not 0.0 <= options.mix <= 1.0:
        raise ClipdexError(f"--mix must be between 0 and 1, not {options.mix}")
    if options.report is not None and (Path(options.report).is_dir() or Path(options.report).suffix != ".html"):
        raise ClipdexError(f"--report takes a file name ending in .html, not {options.report}")
    for name, value in (("--lr", options.lr), ("--weight-decay", options.weight_decay)):
        if not (math.isfinite(value) and value >= 0) or (name == "--lr" and value == 0):
            raise ClipdexError(f"{name} must be a finite number above 0, not {value}")
    if options.resume is not None and Path(options.resume).resolve() == Path(options.out).resolve():
        raise ClipdexError("--resume and --out name the same file; resume from the .resume checkpoint Ctrl-C wrote")


def finetune(
    pairs: Sequence[Pair],
    options: FinetuneOptions,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Train on `pairs` and write the best (or last, or mixed) weights to options.out, with a metrics log beside
    it. `on_event` sees each record as it is logged (event "step", "eval" or "epoch")."""
    import open_clip

    from clipdex.retrieval.models.openclip.factory import load_encoder

    _check(options)
    started = time.perf_counter()
    torch.manual_seed(options.seed)
    resumed = read_checkpoint_info(Path(options.resume)).training if options.resume else {}
    start = resumed.get("start") or {"model": options.model, "pretrained": options.pretrained}
    if options.resume:
        encoder = load_encoder(str(options.resume), None, options.device)
        start_weights = _cpu_state(load_encoder(start["model"], start["pretrained"], "cpu").model)
    else:
        encoder = load_encoder(options.model, options.pretrained, options.device)
        start_weights = _cpu_state(encoder.model)
    model, device = encoder.model, encoder.device
    train, val = split_pairs(pairs, options.val_fraction, options.seed)
    if len(train) < 2:
        raise ClipdexError(f"need at least 2 training pairs after the held-out split, have {len(train)}")
    keep_pairs = read_pairs(options.keep_pairs) if options.keep_pairs else []

    def embed(which: Sequence[Pair]) -> PairVectors | None:
        if not which:
            return None
        model.eval()
        vectors = embed_pairs(encoder, which)
        model.train()
        return vectors

    start_vectors = embed(val) if not options.resume else None
    before = resumed.get("before") or (start_vectors.recall() if start_vectors else None)
    _lock(model, options.lock_image, options.lock_text)
    optimizer = make_optimizer(model, options.lr, options.weight_decay)
    step, best, stale = 0, resumed.get("best"), int(resumed.get("stale", 0))
    if options.resume:
        state = load_optimizer_state(Path(options.resume))
        if state is None:
            raise ClipdexError(f"{options.resume} has no optimizer state beside it; resume needs a full checkpoint")
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    log = MetricsLog(metrics_path(options.out), resume_after_step=step if options.resume else None)

    tokens = encoder.tokenizer([p.caption for p in train])
    dataset = PairImages(train, tokens, encoder.transform, encoder.image_size)
    keys = [p.batch_key for p in train]
    steps_per_epoch = max(1, len(epoch_batches(keys, options.batch_size, options.seed, 0)) // options.accum_steps)
    total = options.max_steps or options.epochs * steps_per_epoch
    warmup = min(options.warmup, max(1, total // 10))
    loss_fn = open_clip.ClipLoss()
    use_amp = device == "cuda"
    losses: list[float] = [r["loss"] for r in log.records if r.get("event") == "step"]
    epochs = [r for r in log.records if r.get("event") == "epoch"]
    stop, stopped_early = _StopRequest(), False

    def record(event: str, **fields: Any) -> dict:
        entry = {"event": event, "step": step, "epoch": fields.pop("epoch", step / steps_per_epoch), **fields,
                 "seconds": round(time.perf_counter() - started, 3)}
        log.write(entry)
        if on_event:
            on_event({**entry, "total": total})
        return entry

    def info(training: dict) -> CheckpointInfo:
        return CheckpointInfo(encoder.arch, open_clip.get_model_config(encoder.arch) or {}, {
            "step": step, "start": start, "train_pairs": len(train), "val_pairs": len(val), "before": before,
            "best": best, "stale": stale, "metrics": str(metrics_path(options.out)),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}, **training,
        })

    def optimizer_state() -> dict:
        return {"optimizer": optimizer.state_dict(), "step": step}

    model.train()
    with stop.installed():
        while step < total and not stop.requested and not stopped_early:
            epoch, done = divmod(step, steps_per_epoch)
            batches = epoch_batches(keys, options.batch_size, options.seed, epoch)
            batches = batches[done * options.accum_steps : steps_per_epoch * options.accum_steps]
            loader = DataLoader(dataset, batch_sampler=batches, num_workers=options.workers, persistent_workers=False)
            micro, running, tick, seen = 0, 0.0, time.perf_counter(), 0
            for pixels, text in loader:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    image_features = model.encode_image(pixels.to(device), normalize=True)
                    text_features = model.encode_text(text.to(device), normalize=True)
                    loss = loss_fn(image_features, text_features, model.logit_scale.exp())
                (loss / options.accum_steps).backward()
                running += loss.item() / options.accum_steps
                micro, seen = micro + 1, seen + len(pixels)
                if micro % options.accum_steps:
                    continue
                lr = cosine_lr(step, options.lr, warmup, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
                if not math.isfinite(running):  # nothing worth keeping comes after this
                    raise ClipdexError(
                        f"the loss became {running} at step {step + 1}: the learning rate is too high for this model "
                        f"(or the data is broken); nothing more was written"
                    )
                step += 1
                losses.append(running)
                now = time.perf_counter()
                record("step", loss=running, lr=lr, logit_scale=float(model.logit_scale.detach().exp()),
                       images_per_s=round(seen / max(now - tick, 1e-9), 2))
                running, tick, seen = 0.0, now, 0
                if options.eval_every and step % options.eval_every == 0 and step % steps_per_epoch and val:
                    record("eval", recall=embed(val).recall())
                if stop.requested or step >= total:
                    break
            if stop.requested:
                break
            if step % steps_per_epoch == 0 or step >= total:  # an epoch (or the run) ended: is it the best yet?
                if not val:
                    continue
                recall = embed(val).recall()
                score = mean_r1(recall)
                better = best is None or score > best["mean_r1"]
                if better:
                    best, stale = {"epoch": step / steps_per_epoch, "step": step, "mean_r1": score}, 0
                    if options.keep == "best":  # on disk at once: a crash later still leaves the best epoch
                        save_checkpoint(options.out, model, info({"after": recall}), optimizer_state=optimizer_state())
                else:
                    stale += 1
                epochs.append(record("epoch", epoch=step / steps_per_epoch, recall=recall, mean_r1=score,
                                     best=better))
                stopped_early = bool(options.patience and stale >= options.patience and step < total)

    result = FinetuneResult(
        checkpoint=options.out, steps=step, train_pairs=len(train), val_pairs=len(val),
        first_loss=losses[0] if losses else float("nan"), final_loss=losses[-1] if losses else float("nan"),
        before=before, after=None, seconds=time.perf_counter() - started, epochs=epochs,
        best_epoch=None, stopped_early=stopped_early, metrics=log.path,
    )
    if stop.requested:
        result.interrupted, result.resume = True, resume_path(options.out)
        save_checkpoint(result.resume, model, info({"interrupted": True}), optimizer_state=optimizer_state())
        log.close()
        return result

    if val and options.keep == "best" and best is not None:
        if not Path(options.out).is_file():
            raise ClipdexError(f"the best epoch's weights should be at {options.out}; resume with the same --out")
        model.load_state_dict(load_weights(Path(options.out)))
        result.best_epoch = best["epoch"]
    chosen = _cpu_state(model)
    alphas = sorted({*MIX_TABLE, *([options.mix] if options.mix is not None else [])})
    for alpha in alphas if (val or keep_pairs) else ():
        model.load_state_dict(mix_weights(start_weights, chosen, alpha))
        held, kept = embed(val), embed(keep_pairs)
        start_vectors = held if alpha == 0.0 and start_vectors is None else start_vectors  # (resumed runs)
        result.mix_table.append({"alpha": alpha, "held_out": held.recall() if held else None,
                                 "keep": kept.recall() if kept else None})
        log.write({"event": "mix", "step": step, "alpha": alpha, **{k: v for k, v in result.mix_table[-1].items()
                                                                   if k != "alpha"}})
    alpha = options.mix if options.mix is not None else 1.0
    model.load_state_dict(mix_weights(start_weights, chosen, alpha))
    final_vectors = embed(val)
    result.after = final_vectors.recall() if final_vectors else None
    if before and result.after:
        worse = [
            f"{d} R@1 {before[d]['R@1']:.3f} → {result.after[d]['R@1']:.3f}"
            for d in ("text_to_image", "image_to_text") if result.after[d]["R@1"] < before[d]["R@1"]
        ]
        if worse:
            result.warnings.append("held-out recall got WORSE: " + "; ".join(worse))
    keep_optimizer = not options.half and alpha == 1.0  # mixed weights are no optimizer's state
    save_checkpoint(
        options.out, model,
        info({"after": result.after, "mix": alpha, "best_epoch": result.best_epoch, "final_loss": result.final_loss,
              "report": str(Path(options.report).resolve()) if options.report else None}),
        half=options.half, optimizer_state=optimizer_state() if keep_optimizer else None,
    )
    log.close()
    resume_path(options.out).unlink(missing_ok=True)  # finished: nothing left to resume
    optimizer_path(resume_path(options.out)).unlink(missing_ok=True)
    result.seconds = time.perf_counter() - started
    if options.report:
        from clipdex.retrieval.training.report import write_report

        write_report(options.report, result, log.records, start_vectors, final_vectors, val)
        result.report = options.report
    return result
