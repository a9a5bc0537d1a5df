"""The fine-tuning report: one self-contained HTML file (plots as inline SVG, thumbnails as data URIs, no script)
that shows how training went and what it changed, so a user can decide whether to use the result.

matplotlib is used through `Figure` directly, never pyplot: no backend is chosen and no global state is touched.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clipdex.retrieval.models.checkpoint import REPORT_HEAD
from clipdex.retrieval.training.evaluate import PairVectors
from clipdex.retrieval.media.images import open_image

THUMB = 112  # pixels, the longer side of an example image
EXAMPLES = 8  # captions shown, those whose answer changed most first
TOP = 5  # images shown per caption, before and after

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:1rem}
.plots img{max-width:540px;width:100%}.row{display:flex;gap:.35rem;align-items:flex-start;margin:.2rem 0}
.row span{width:4rem;font-size:.8rem;color:#666}.row figure{margin:0;text-align:center;font-size:.75rem}
.row img{border:3px solid transparent;display:block}.row .true img{border-color:#1a7f37}
.caption{margin-top:1rem;font-weight:600}.muted{color:#666}.better{color:#1a7f37}.worse{color:#b42318}
"""


def write_report(path: Path, result, records: Sequence[dict], before: PairVectors | None,
                 after: PairVectors | None, held_out: Sequence) -> None:
    """Write the report for a finished run (`result` is its FinetuneResult, `records` its metrics log)."""
    parts = [
        f"{REPORT_HEAD}<style>{_STYLE}</style><h1>Fine-tuning report: {_e(result.checkpoint.name)}</h1>",
        f"<p class=muted>{result.steps} steps on {result.train_pairs} pairs, {result.val_pairs} held out, "
        f"{result.seconds:.0f} s; checkpoint {_e(result.checkpoint)}; log {_e(result.metrics)}"
        + (f"; best epoch {result.best_epoch:g}" if result.best_epoch is not None else "")
        + ("; stopped early" if result.stopped_early else "") + "</p>",
        "<h2>Training</h2><div class=plots>", _loss_plot(records), _recall_plot(records, result.before), "</div>",
        "<h2>Recall</h2>", _recall_table(result),
    ]
    if before is not None and after is not None:
        parts += ["<h2>Retrieval examples (held-out)</h2><p class=muted>For each caption, the top images before "
                  "and after fine-tuning; the true image is framed in green.</p>", _examples(before, after, held_out)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(parts) + "</html>\n", encoding="utf-8")
    tmp.replace(path)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    return f"<img alt='' src='data:image/svg+xml;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _loss_plot(records: Sequence[dict]) -> str:
    from matplotlib.figure import Figure

    steps = [r for r in records if r.get("event") == "step"]
    figure = Figure(figsize=(5.4, 3.2))
    axis = figure.subplots()
    x = [r["step"] for r in steps]
    loss = np.array([r["loss"] for r in steps], dtype=float)
    axis.plot(x, loss, color="#9db4d6", linewidth=1, label="loss")
    if len(loss) >= 5:
        window = max(2, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        axis.plot(x[window - 1:], smooth, color="#1f4e96", linewidth=2, label=f"loss (mean of {window})")
    axis.set_xlabel("step")
    axis.set_ylabel("contrastive loss")
    rate = axis.twinx()
    rate.plot(x, [r["lr"] for r in steps], color="#d08c2c", linewidth=1, linestyle="--", label="learning rate")
    rate.set_ylabel("learning rate")
    lines = axis.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    axis.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper right")
    axis.set_title("loss and learning rate")
    return _svg(figure)


def _recall_plot(records: Sequence[dict], before: dict | None) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.4, 3.2))
    axis = figure.subplots()
    evaluated = [r for r in records if r.get("event") in ("eval", "epoch")]
    for direction, colour in (("text_to_image", "#1f4e96"), ("image_to_text", "#b4561f")):
        axis.plot([r["epoch"] for r in evaluated], [r["recall"][direction]["R@1"] for r in evaluated],
                  marker="o", color=colour, label=direction.replace("_", " ") + " R@1")
        if before:
            axis.axhline(before[direction]["R@1"], color=colour, linestyle=":", linewidth=1)
    best = [r for r in evaluated if r.get("best")]
    if best:
        axis.scatter([best[-1]["epoch"]], [best[-1]["mean_r1"]], marker="*", s=160, color="#1a7f37", zorder=3,
                     label="kept (best mean R@1)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("held-out R@1")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("held-out recall per epoch (dotted: before)")
    return _svg(figure)


def _cells(recall: dict | None) -> str:
    if not recall:
        return "<td class=muted colspan=6>—</td>"
    return "".join(f"<td>{recall[d][f'R@{k}']:.3f}</td>"
                   for d in ("text_to_image", "image_to_text") for k in (1, 5, 10))


def _recall_table(result) -> str:
    head = ("<table><tr><th>weights</th><th colspan=3>text→image R@1/5/10</th>"
            "<th colspan=3>image→text R@1/5/10</th><th>keep set mean R@1</th></tr>")
    rows = [f"<tr><td>before</td>{_cells(result.before)}<td></td></tr>"]
    for entry in result.mix_table:
        keep = entry["keep"]
        keep_cell = f"{(keep['text_to_image']['R@1'] + keep['image_to_text']['R@1']) / 2:.3f}" if keep else "—"
        label = "start" if entry["alpha"] == 0 else "fine-tuned" if entry["alpha"] == 1 else "mixed"
        rows.append(f"<tr><td>α = {entry['alpha']:g} ({label})</td>{_cells(entry['held_out'])}"
                    f"<td>{keep_cell}</td></tr>")
    rows.append(f"<tr><th>written</th>{_cells(result.after)}<td></td></tr>")
    note = ("<p class=muted>α mixes the weights: (1 − α)·start + α·fine-tuned (WiSE-FT). A lower α keeps more of "
            "what the start model knew (the keep set, given with --keep-pairs); choose it with --mix.</p>")
    return head + "".join(rows) + "</table>" + note


def _thumbnail(path: Path) -> str:
    try:
        image = open_image(path, THUMB)
    except Exception:  # a file gone since training: show its name only
        return ""
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=80)
    return f"<img alt='' src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _ranking(vectors: PairVectors) -> tuple[np.ndarray, np.ndarray]:
    """Per caption: the rank of its true image (0 = first) and the indices of its top images."""
    scores = vectors.texts @ vectors.images.T
    own = scores[np.arange(len(vectors.text_image)), vectors.text_image]
    return (scores > own[:, None]).sum(axis=1), np.argsort(-scores, axis=1, kind="stable")[:, :TOP]


def _examples(before: PairVectors, after: PairVectors, held_out: Sequence) -> str:
    rank_before, top_before = _ranking(before)
    rank_after, top_after = _ranking(after)
    change = rank_before - rank_after
    order = sorted(range(len(change)), key=lambda t: (-abs(int(change[t])), t))[:EXAMPLES]
    thumbs: dict[int, str] = {}
    out = []
    for t in order:
        truth = int(before.text_image[t])
        delta = int(change[t])
        verdict = (f"<span class=better>true image up {delta}</span>" if delta > 0 else
                   f"<span class=worse>true image down {-delta}</span>" if delta < 0 else "<span>unchanged</span>")
        out.append(f"<div class=caption>“{_e(held_out[t].caption)}” — rank {rank_before[t] + 1} → "
                   f"{rank_after[t] + 1}, {verdict}</div>")
        for label, top in (("before", top_before[t]), ("after", top_after[t])):
            figures = []
            for i in top:
                i = int(i)
                if i not in thumbs:
                    thumbs[i] = _thumbnail(before.paths[i])
                mark = " class=true" if i == truth else ""
                figures.append(f"<figure{mark} title='{_e(before.paths[i])}'>{thumbs[i]}"
                               f"<figcaption>{_e(Path(before.paths[i]).name[:18])}</figcaption></figure>")
            out.append(f"<div class=row><span>{label}</span>{''.join(figures)}</div>")
    return "".join(out)
